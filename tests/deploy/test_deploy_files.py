"""docker/ and docker/k8s/ against the code: the manifests are schema-valid Kubernetes (checked
offline with the schemas kubernetes-validate bundles), and every command, option, setting, port,
probe path and metric name they use exists in the gateway. A renamed setting or sub-command
fails here instead of in a cluster."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway import cli
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
KUBERNETES_VERSION = "1.30"  # the oldest minor release still maintained upstream when this was written
# DUI_GATEWAY_* variables that are not Settings fields
NOT_SETTINGS = {"DUI_GATEWAY_ENV_FILE", "DUI_GATEWAY_SANDBOX_WEBHOOK_SECRETS"}
# variables the routing and credentials files refer to (env:NAME), not read by Settings
REFERENCED = {"DUI_VENDOR_WEBHOOK_SECRET"}


def manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("kind") != "Kustomization":
                out.append((path.name, doc))
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def deployment(component: str) -> dict[str, Any]:
    (found,) = [d for d in by_kind("Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    return found


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    return data


def setting_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.add(alias if isinstance(alias, str) else f"DUI_GATEWAY_{name.upper()}")
    return names


def check_command(argv: list[str]) -> None:
    """``argv`` is a ``dui-gateway`` command line the CLI accepts (sub-command and options parsed)."""
    assert argv[0] == "dui-gateway", argv
    entry = next((e for e in cli.SUBCOMMANDS if e.name == argv[1]), None)
    assert entry is not None, f"no sub-command {argv[1]!r}"
    command = cli.load(entry)
    assert command is not None
    rest = argv[2:]
    sub = getattr(command, "commands", {}).get(rest[0]) if rest else None
    if sub is not None:
        command, rest = sub, rest[1:]
    command.make_context(argv[1], list(rest))  # raises on an unknown option or a bad value


# --- schema ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "doc"), manifests(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_every_manifest_is_schema_valid(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_catches_mistakes() -> None:
    doc = deployment("api")
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    doc = deployment("api")
    container(doc)["livenessprobe"] = container(doc).pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_templates() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    templates = {n for n in present if n.endswith(".template.yaml")}
    assert templates == {"secret-keys.template.yaml", "secret-certificates.template.yaml"}
    assert listed == present - templates


# --- the manifests against the code ----------------------------------------------------------------


def workloads() -> list[dict[str, Any]]:
    return [*by_kind("Deployment"), *by_kind("Job")]


def test_commands_and_options_exist() -> None:
    for workload in workloads():
        check_command(container(workload)["args"])
    for name, service in compose()["services"].items():
        if name != "db":
            check_command(service["command"])
    with pytest.raises(Exception, match=r"(?i)no such option"):
        check_command(["dui-gateway", "worker", "--no-such-option"])


def test_environment_names_are_settings() -> None:
    known = setting_names()
    used: set[str] = set()
    for doc in [*by_kind("ConfigMap"), *by_kind("Secret")]:
        if doc["metadata"]["name"] in ("dui-gateway-settings", "dui-gateway-keys"):
            used |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
    for service in compose()["services"].values():
        used |= {k for k in service.get("environment", {}) if k.startswith(("DUI_", "CISIS_"))}
    for line in (DOCKER / "env.example").read_text(encoding="utf-8").splitlines():
        if re.match(r"^(DUI_|CISIS_)\w+=", line):
            used.add(line.split("=", 1)[0])
    dockerfile = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    used |= set(re.findall(r"\b(DUI_GATEWAY_\w+|CISIS_KIT_DIR)=", dockerfile))
    unknown = sorted(used - known - NOT_SETTINGS - REFERENCED)
    assert unknown == [], f"not settings of gateway/settings.py: {unknown}"
    assert {"DUI_GATEWAY_DATABASE_URL", "DUI_GATEWAY_MASTER_KEYS", "DUI_GATEWAY_AUDIT_KEYS"} <= used


def test_the_kubernetes_settings_start_a_prod_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap plus the Secret template with its placeholders filled in are accepted by
    Settings with profile=prod, and the placeholders alone are refused (a forgotten copy fails)."""
    (config,) = [d for d in by_kind("ConfigMap") if d["metadata"]["name"] == "dui-gateway-settings"]
    (secret,) = [d for d in by_kind("Secret") if d["metadata"]["name"] == "dui-gateway-keys"]
    for key in list(os.environ):
        if key.startswith("DUI_GATEWAY_") or key == "CISIS_KIT_DIR":
            monkeypatch.delenv(key)
    for key, value in {**config["data"], **secret["stringData"]}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=r"(?i)key"):
        Settings()
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("DUI_GATEWAY_MASTER_KEYS", f"k1:{key}")
    monkeypatch.setenv("DUI_GATEWAY_AUDIT_KEYS", f"a1:{key}")
    settings = Settings()
    assert settings.profile == "prod" and not settings.embedded_worker
    assert str(settings.routing_file) == "/config/routing.yaml"


def mount_path(workload: dict[str, Any], volume_kind: str, name: str) -> str:
    spec = workload["spec"]["template"]["spec"]
    (volume,) = [
        v
        for v in spec["volumes"]
        if volume_kind in v and (v[volume_kind].get("name") == name or v[volume_kind].get("secretName") == name)
    ]
    (mount,) = [m for m in container(workload)["volumeMounts"] if m["name"] == volume["name"]]
    return str(mount["mountPath"])


def test_files_the_settings_name_are_mounted() -> None:
    (config,) = [d for d in by_kind("ConfigMap") if d["metadata"]["name"] == "dui-gateway-settings"]
    (routing,) = [d for d in by_kind("ConfigMap") if d["metadata"]["name"] == "dui-gateway-routing"]
    routing_file = Path(config["data"]["DUI_GATEWAY_ROUTING_FILE"])
    credentials_file = Path(config["data"]["DUI_GATEWAY_CREDENTIALS_FILE"])
    assert routing_file.name in routing["data"]
    for workload in workloads():
        assert mount_path(workload, "configMap", "dui-gateway-routing") == str(routing_file.parent)
        assert mount_path(workload, "secret", "dui-gateway-certificates") == str(credentials_file.parent)
        assert container(workload)["securityContext"]["readOnlyRootFilesystem"] is True
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    from gateway.routing import parse_config

    parse_config(yaml.safe_load(routing["data"]["routing.yaml"]), source="configmap-routing.yaml")
    for path in sorted((DOCKER / "config").glob("*.yaml")):  # compose mounts them at /config
        parse_config(yaml.safe_load(path.read_text(encoding="utf-8")), source=path.name)
    files = {p.name for p in (DOCKER / "config").glob("*.yaml")}
    for service in ("api", "worker"):
        routing_env = compose()["services"][service]["environment"]["DUI_GATEWAY_ROUTING_FILE"]
        default = re.fullmatch(r"/config/\$\{ROUTING_FILE:-(.+)\}", routing_env)
        assert default is not None and default.group(1) in files


def test_ports_and_probe_paths_are_the_ones_served() -> None:
    from gateway.api import ROUTERS

    # the worker serves the same three paths (gateway/worker_health.py, tests/gateway/test_worker_health.py)
    api_paths = {getattr(route, "path", None) for router in ROUTERS for route in router.routes}
    assert {"/healthz", "/readyz", "/metrics"} <= api_paths
    for component, port_option in (("api", "--port"), ("worker", "--health-port")):
        workload = deployment(component)
        box = container(workload)
        args = box["args"]
        port = int(args[args.index(port_option) + 1])
        ports = {p["name"]: p["containerPort"] for p in box["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = box[probe]["httpGet"]
            assert ports[get["port"]] == port, (component, probe)
            assert get["path"] in {"/healthz", "/readyz"} and get["path"] in api_paths
        assert box["readinessProbe"]["httpGet"]["path"] == "/readyz"
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == port and annotations["prometheus.io/path"] == "/metrics"
    (service,) = [s for s in by_kind("Service") if s["metadata"]["name"] == "dui-gateway-api"]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container(deployment("api"))["ports"]}
    assert service["spec"]["selector"] == deployment("api")["spec"]["selector"]["matchLabels"]
    services = compose()["services"]
    assert services["api"]["ports"] == ["127.0.0.1:8000-8001:8000"]
    assert services["api"]["deploy"]["replicas"] == 2 and services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"][services["worker"]["command"].index("--health-port") + 1] == "8000"


def test_the_hpa_scales_workers_on_the_queue_depth_metric_the_api_exports(tmp_path: Path) -> None:
    from gateway.api.metrics import DatabaseCollector
    from gateway.storage.db import make_engine, make_sessionmaker
    from gateway.storage.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        exported = {family.name for family in DatabaseCollector(make_sessionmaker(engine)).collect()}
    finally:
        engine.dispose()
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    assert "replicas" not in deployment("worker")["spec"], "the HPA owns the workers' replica count"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    name = metric["external"]["metric"]["name"]
    assert name in exported, (name, exported)
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment("worker")["metadata"]["name"]
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text(encoding="utf-8"))
    (rule,) = adapter["rules"]["external"]
    assert rule["name"]["as"] == name and name in rule["seriesQuery"]
    for pdb in by_kind("PodDisruptionBudget"):
        labels = pdb["spec"]["selector"]["matchLabels"]
        assert any(d["spec"]["selector"]["matchLabels"] == labels for d in by_kind("Deployment"))


def test_worker_grace_period_covers_its_drain() -> None:
    drain = Settings.model_fields["max_send_seconds"].default + Settings.model_fields["lease_seconds"].default
    assert deployment("worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= drain
    assert compose()["services"]["worker"]["stop_grace_period"] == f"{int(drain) + 15}s"


# --- the image ---------------------------------------------------------------------------------------


def test_the_dockerfile_builds_what_the_tests_run() -> None:
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    stages = re.split(r"(?m)^FROM ", text)[1:]
    assert len(stages) == 2, "a build stage and a runtime stage"
    runtime = stages[-1]
    # every package the project ships is copied into the build stage
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages == set(re.findall(r"(?m)^COPY (\w+) \./\1$", stages[0]))
    # the runtime stage installs nothing and runs as a numeric non-root user
    assert not re.search(r"apt-get|pip install|gcc|build-essential", runtime)
    (user,) = re.findall(r"(?m)^USER (\S+)", runtime)
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"
    # the verified kit is baked in where CISIS_KIT_DIR points
    (dest,) = re.findall(r"kit install [^\n]*--dest (\S+)", stages[0])
    assert f"CISIS_KIT_DIR={dest}" in runtime and f"COPY --from=build {dest} {dest}" in runtime
    # the default command and the healthcheck use the one exposed port
    (exposed,) = re.findall(r"(?m)^EXPOSE (\d+)$", runtime)
    assert f"127.0.0.1:{exposed}/healthz" in runtime
    cmd = re.search(r"(?m)^CMD (\[.*\])$", runtime)
    assert cmd is not None
    argv = yaml.safe_load(cmd.group(1))
    check_command(argv)
    assert argv[argv.index("--port") + 1] == exposed


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text((DOCKER / "env.example").read_text(encoding="utf-8"), encoding="utf-8")
    project = tmp_path / "docker"
    shutil.copytree(DOCKER, project, ignore=shutil.ignore_patterns("k8s", ".env"))
    shutil.copy(env, project / ".env")
    done = subprocess.run(
        ["docker-compose", "-f", str(project / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"]},
    )
    assert done.returncode == 0, done.stderr
