"""``dui-gateway demo``: the whole gateway on one machine, with documents visibly flowing.

1. migrate the embedded SQLite database under ``var/``;
2. start the sandbox HTTP receiver (a real loopback server, recording to ``var/sandbox.db``);
3. write ``var/routing.json``: DLUs go to two sandbox destinations, ``dmp-sandbox`` (category
   ``dmp``: only persons with a qualified INS) and ``mssante-sandbox`` (category ``mssante``),
   both webhook connectors to the receiver until the real connectors exist, signed with the
   secret in ``var/demo-webhook-secret`` that the receiver verifies;
4. provision a demo tenant, its ESSMS and an API client (key kept in ``var/demo-api-key``);
5. start the API under uvicorn with in-process workers;
6. post the demo DLU records (``gateway/demo_data``) through the real HTTP API, after asking
   the sandbox to fail the first two deliveries (503) so that retries show;
7. print the URLs, the API key and what the sandbox received; Ctrl-C stops everything.

The demo posts only document types the gateway really ships: without ``mappings.dlu`` it
starts and says there is nothing to post.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from connectors.sandbox import SandboxReceiver
from gateway.settings import Settings

__all__ = ["DEMO_FINESS", "DEMO_TENANT", "demo_records", "routing_document", "run_demo"]

DEMO_TENANT = "demo"
DEMO_FINESS = "759900004"  # fictitious, Luhn-valid; matches gateway/demo_data/*.json
TERMINAL_SUBMISSION = frozenset({"delivered", "partially_failed", "failed", "rejected", "cancelled"})
SUBMISSIONS_PATH = "/v1/submissions"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def demo_records() -> list[tuple[str, str, dict[str, Any]]]:
    """(file name, document type, record) of each demo record, in posting order."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    folder = resources.files("gateway.demo_data")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            doc_type = entry.name.split("-")[1]  # "01-dlu-....json" -> "dlu"
            out.append((entry.name, doc_type, json.loads(entry.read_text(encoding="utf-8"))))
    return out


def routing_document(sandbox_url: str, secret_file: Path) -> dict[str, Any]:
    """The demo routing file: DLUs to two signed webhook destinations on the sandbox receiver."""

    def webhook(path: str) -> dict[str, Any]:
        return {
            "url": f"{sandbox_url}{path}",
            "health_url": f"{sandbox_url}/_health",
            "timeout": 10,
            "signing_secrets": [f"file:{secret_file}"],
        }

    return {
        "destinations": {
            "dmp-sandbox": {"connector": "webhook", "category": "dmp", "settings": webhook("/dmp")},
            "mssante-sandbox": {"connector": "webhook", "category": "mssante", "settings": webhook("/mssante")},
        },
        "rules": [
            {
                "name": "DLU to the sandbox",
                "document_types": ["dlu"],
                "destinations": ["dmp-sandbox", "mssante-sandbox"],
            }
        ],
    }


def _webhook_secret(path: Path) -> Path:
    """The demo's webhook signing secret file (created once, 0600)."""
    from connectors.webhook.signing import new_secret

    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(new_secret() + "\n", encoding="ascii")
    return path


def provision(settings: Settings, key_file: Path) -> str:
    """Demo tenant + ESSMS + API client (idempotent); returns the API key."""
    from gateway.security.clients import add_essms, authenticate, create_api_client, create_tenant
    from gateway.storage.db import make_engine, make_sessionmaker, session_scope
    from gateway.storage.models import Essms, Tenant

    engine = make_engine(settings.database_url)
    try:
        factory = make_sessionmaker(engine)
        with session_scope(factory) as session:
            tenant = session.scalar(select(Tenant).where(Tenant.code == DEMO_TENANT))
            if tenant is None:
                tenant = create_tenant(session, code=DEMO_TENANT, name="Organisme gestionnaire de démonstration")
            if session.scalar(select(Essms.id).where(Essms.finess == DEMO_FINESS)) is None:
                add_essms(
                    session, tenant_id=tenant.id, finess=DEMO_FINESS, name="EHPAD Les Tilleuls (démo)", category="500"
                )
            if key_file.exists():
                key = key_file.read_text(encoding="ascii").strip()
                if authenticate(session, key) is not None:
                    return key
            _client, key = create_api_client(session, tenant_id=tenant.id, name="DUI de démonstration")
        key_file.write_text(key + "\n", encoding="ascii")
        key_file.chmod(0o600)
        return key
    finally:
        engine.dispose()


@dataclass
class DemoRun:
    """What the demo posted and saw; filled by the feeder thread."""

    api_url: str
    api_key: str
    receiver: SandboxReceiver
    settings: Settings
    posted: list[tuple[str, str]] = field(default_factory=list)  # (file name, submission id)
    statuses: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def post_all(self) -> None:
        for name, doc_type, record in demo_records():
            resp = requests.post(
                f"{self.api_url}{SUBMISSIONS_PATH}",
                json={"document_type": doc_type, "record": record},
                headers={**self._headers(), "Idempotency-Key": f"demo-{uuid.uuid4()}"},
                timeout=30,
            )
            if resp.status_code != 202:
                raise RuntimeError(f"posting {name} answered HTTP {resp.status_code}: {resp.text[:500]}")
            sub_id = str(resp.json()["id"])
            self.posted.append((name, sub_id))
            print(f"  posted {name:<40} -> submission {sub_id}", flush=True)

    def poll(self) -> bool:
        """Refresh statuses; True when every posted submission is settled."""
        for _name, sub_id in self.posted:
            resp = requests.get(f"{self.api_url}{SUBMISSIONS_PATH}/{sub_id}", headers=self._headers(), timeout=10)
            if resp.status_code == 200:
                self.statuses[sub_id] = str(resp.json()["status"])
        return all(self.statuses.get(s) in TERMINAL_SUBMISSION for _n, s in self.posted)


def _print_received(receiver: SandboxReceiver, seen: int) -> int:
    rows = receiver.store.received(since=seen)
    for row in rows:
        docs = ", ".join(f"{d['kind']} v{d['version']}" for d in row["documents"]) or "-"
        print(
            f"  sandbox <- {row['method']} {row['path']:<10} {row['status']} {row['outcome']:<9} [{docs}]",
            flush=True,
        )
        seen = max(seen, int(row["n"]))
    return seen


def _feed(run: DemoRun, server: Any, *, exit_after_demo: bool, timeout: float) -> None:
    try:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        # what an earlier run left in var/sandbox.db is not printed again
        seen = max((int(r["n"]) for r in run.receiver.store.received()), default=0)
        records = demo_records()
        gate = _gate_problems(run)
        if not records or _missing_document_types(records):
            print("No demo document type available yet (mappings.dlu missing): nothing posted.", flush=True)
        elif gate:
            run.error = "the conformance gate cannot run, documents would wait forever: " + "; ".join(gate)
            print(run.error + "\n  point CISIS_KIT_DIR at the CI-SIS kit folder and start again", flush=True)
            return
        else:
            run.receiver.store.control({"fail_next": 2, "status": 503})
            print("Sandbox asked to fail the first 2 deliveries with 503: watch the retries.", flush=True)
            run.post_all()
        deadline = time.monotonic() + timeout
        settled = False
        while time.monotonic() < deadline and not server.should_exit:
            seen = _print_received(run.receiver, seen)
            if run.poll():
                settled = True
                break
            time.sleep(0.5)
        seen = _print_received(run.receiver, seen)
        for name, sub_id in run.posted:
            print(f"  {name:<40} {run.statuses.get(sub_id, '?')}", flush=True)
        if not settled:
            run.error = f"demo submissions not settled after {timeout:.0f}s"
            print(run.error, flush=True)
        elif not exit_after_demo:
            print("Demo documents settled; the gateway keeps running (Ctrl-C stops everything).", flush=True)
    except Exception as exc:  # report and stop: the demo must not hang on a failure
        run.error = f"{type(exc).__name__}: {exc}"
        print(f"demo failed: {run.error}", flush=True)
    finally:
        run.done.set()
        if exit_after_demo or run.error:
            server.should_exit = True


def _gate_problems(run: DemoRun) -> list[str]:
    from gateway.conformance import gate_problems

    return gate_problems(run.settings)


def _missing_document_types(records: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    from mappings import registry

    return sorted({doc_type for _n, doc_type, _r in records if registry.get(doc_type) is None})


def run_demo(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    sandbox_port: int = 8787,
    var_dir: Path = Path("var"),
    exit_after_demo: bool = False,
    timeout: float = 120.0,
) -> int:
    """Run the demo; returns the process exit code (0: every demo submission settled)."""
    import uvicorn

    from gateway.app import create_app
    from gateway.logging import configure_logging
    from gateway.runtime import Runtime
    from gateway.storage.migrate import upgrade

    var_dir = var_dir.resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    port = port if port and _port_free(host, port) else _free_port(host)
    secret_file = _webhook_secret(var_dir / "demo-webhook-secret")
    secrets = [secret_file.read_text(encoding="ascii").strip()]  # the sandbox verifies what the gateway signs
    try:
        receiver = SandboxReceiver(db_path=var_dir / "sandbox.db", port=sandbox_port, webhook_secrets=secrets)
    except OSError:  # the fixed port is taken: any free one will do
        receiver = SandboxReceiver(db_path=var_dir / "sandbox.db", port=0, webhook_secrets=secrets)
    routing_file = var_dir / "routing.json"
    document = routing_document(receiver.url, secret_file)
    routing_file.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    overrides: dict[str, Any] = {
        "profile": "dev",
        "routing_file": routing_file,
        "embedded_worker": True,
        "backoff_base_seconds": 1.0,
        "poll_interval_seconds": 0.2,
    }
    if "DUI_GATEWAY_DATABASE_URL" not in os.environ:
        overrides["database_url"] = f"sqlite:///{var_dir / 'dui-gateway.db'}"
    if "DUI_GATEWAY_LOG_LEVEL" not in os.environ:
        overrides["log_level"] = "WARNING"  # the demo prints what happens; INFO shows the JSON logs too
    settings = Settings(**overrides)
    configure_logging(settings)
    upgrade(settings.database_url)
    api_key = provision(settings, var_dir / "demo-api-key")

    receiver.start()
    runtime = Runtime.from_settings(settings)
    api_url = f"http://{host}:{port}"
    try:
        app = create_app(runtime)  # embedded_worker=True: its lifespan starts and drains the workers
        has_console = any(str(getattr(r, "path", "")).startswith("/console") for r in app.routes)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, log_level="warning"))
        run = DemoRun(api_url=api_url, api_key=api_key, receiver=receiver, settings=settings)
        print(
            "\n".join(
                [
                    "dui-gateway demo",
                    f"  API            {api_url}/v1",
                    f"  API docs       {api_url}/docs",
                    *([f"  console        {api_url}/console"] if has_console else []),
                    f"  API key        {api_key}",
                    f"  sandbox        {receiver.url}/_received  (what the destinations received)",
                    f"  database       {settings.database_url}",
                    f"  routing        {routing_file}",
                    "  try: curl -H 'Authorization: Bearer <API key>' " + f"{api_url}{SUBMISSIONS_PATH}",
                    "Ctrl-C stops everything." if not exit_after_demo else "Stops once the demo documents settle.",
                ]
            ),
            flush=True,
        )
        feeder = threading.Thread(
            target=_feed,
            args=(run, server),
            kwargs={"exit_after_demo": exit_after_demo, "timeout": timeout},
            name="demo-feeder",
            daemon=True,
        )
        feeder.start()
        server.run()  # until Ctrl-C / SIGTERM, or the feeder asks it to exit
        feeder.join(timeout=5)
        return 1 if run.error else 0
    finally:
        runtime.close()
        receiver.stop()
