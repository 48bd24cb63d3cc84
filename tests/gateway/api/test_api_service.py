"""Service endpoints and cross-cutting behaviour: health, readiness, metrics, correlation id,
problems for unknown routes, the lifespan (embedded workers), and the FHIR AuditEvent export."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fhir.resources.R4B.bundle import Bundle
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from connectors.base import Envelope, Health, Receipt
from gateway.app import create_app
from gateway.runtime import Runtime
from gateway.security.crypto import KeyRing
from gateway.storage.db import make_engine, make_sessionmaker
from gateway.storage.models import Submission
from tests.gateway.api.live import Api, serve
from tests.gateway.api.support import ADMIN_TOKEN, add_outcome, audit_events, bearer, note, post_note


class _Destination:
    """A connector whose peer is down (health only; nothing is sent in these tests)."""

    name: ClassVar[str] = "down"
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[BaseModel]] = BaseModel

    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def send(self, envelope: Envelope) -> Receipt:
        raise AssertionError("not used")

    def health(self) -> Health:
        return Health(ok=self.ok, detail="" if self.ok else "connection refused")


def test_healthz_and_readyz(client: Api, runtime: Runtime, kit_dir: Path) -> None:
    runtime.settings = runtime.settings.model_copy(update={"cisis_kit_dir": kit_dir})
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {
            "database": {"ok": True},
            "conformance": {"ok": True},
            "credentials": {"ok": True, "expiring_soon": 0, "expired": 0},  # a warning only, never red
        },
    }

    runtime.destinations = {"dmp": _Destination(ok=True), "mss": _Destination(ok=False)}
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.headers["content-type"] == "application/problem+json"
    problem = not_ready.json()
    assert problem["type"].endswith("/not-ready")
    assert problem["checks"]["destination:mss"] == {"ok": False, "detail": "connection refused"}
    assert problem["checks"]["destination:dmp"]["ok"] is True
    assert "destination:mss" in problem["detail"] and "dmp" not in problem["detail"]


def test_readyz_is_red_while_the_conformance_gate_cannot_run(client: Api, runtime: Runtime, tmp_path: Path) -> None:
    runtime.settings = runtime.settings.model_copy(update={"cisis_kit_dir": tmp_path / "no-kit-here"})
    response = client.get("/readyz")
    assert response.status_code == 503
    check = response.json()["checks"]["conformance"]
    assert check["ok"] is False
    assert "CI-SIS kit" in check["detail"]
    assert "conformance" in response.json()["detail"]


def test_readyz_reports_an_unreachable_database(tmp_path: Path, runtime: Runtime, live_server: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}")  # a directory: SQLite cannot open it
    broken = Runtime(
        settings=runtime.settings, engine=engine, session_factory=make_sessionmaker(engine), keyring=runtime.keyring
    )
    live_server.install(create_app(broken))
    api = Api(live_server.base_url)
    try:
        response = api.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["database"] == {"ok": False, "detail": "OperationalError"}
        assert api.get("/healthz").status_code == 200
        metrics = {f.name: f for f in text_string_to_metric_families(api.get("/metrics").text)}
        assert [s.value for s in metrics["dui_gateway_database_up"].samples] == [0.0]
    finally:
        api.close()
        engine.dispose()


def _metrics(client: Api) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def test_metrics_expose_state_from_the_database_and_process_counters(
    client: Api, tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    first = post_note(client, tenant.api_key, note(tenant.finess)).json()["id"]
    post_note(client, tenant.api_key, note(tenant.finess))
    add_outcome(session_factory, keyring, first, delivery_status="pending", status="routed")

    m = _metrics(client)
    assert ({"status": "routed", "document_type": "test-note"}, 1.0) in m["dui_gateway_submissions"]
    assert ({"status": "received", "document_type": "test-note"}, 1.0) in m["dui_gateway_submissions"]
    assert m["dui_gateway_deliveries"] == [
        ({"status": "pending", "connector": "webhook", "document_type": "test-note"}, 1.0)
    ]
    assert sorted(m["dui_gateway_delivery_attempts_recorded"], key=lambda s: s[0]["outcome"]) == [
        ({"connector": "webhook", "outcome": "permanent"}, 1.0),
        ({"connector": "webhook", "outcome": "transient"}, 1.0),
    ]
    # one due pending delivery + one submission waiting in "received"
    assert m["dui_gateway_queue_depth"] == [({}, 2.0)]
    assert m["dui_gateway_database_up"] == [({}, 1.0)]
    received = dict((s[0]["document_type"], s[1]) for s in m["dui_gateway_submissions_received_total"])
    assert received["test-note"] >= 2
    text = client.get("/metrics").text
    for name in ("dui_gateway_delivery_attempts_total", "dui_gateway_end_to_end_latency_seconds"):
        assert f"# HELP {name}" in text


def test_correlation_id_is_echoed_or_made(client: Api) -> None:
    assert client.get("/healthz", headers={"X-Correlation-ID": "abc-123"}).headers["X-Correlation-ID"] == "abc-123"
    made = client.get("/healthz").headers["X-Correlation-ID"]
    assert len(made) == 32
    # something that is not a plain token is replaced, not echoed
    replaced = client.get("/healthz", headers={"X-Correlation-ID": "x" * 100}).headers["X-Correlation-ID"]
    assert replaced != "x" * 100


def test_unknown_routes_and_methods_are_problems(client: Api) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "about:blank"
    assert response.json()["title"] == "Not Found"
    response = client.request("DELETE", "/v1/submissions")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"


def test_lifespan_starts_embedded_workers_and_drains_them(
    runtime: Runtime, tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"embedded_worker": True, "poll_interval_seconds": 30})
    with serve(create_app(runtime)) as api:
        assert runtime._workers is not None and runtime._workers.running
        sid = post_note(api, tenant.api_key, note(tenant.finess)).json()["id"]
        # the 30 s idle poll is cut short by the wake-up after the commit
        deadline = time.monotonic() + 15
        status = "received"
        while status == "received" and time.monotonic() < deadline:
            time.sleep(0.05)
            with session_factory() as session:
                row = session.get(Submission, sid)
                assert row is not None
                status = row.status
        assert status != "received"
    assert runtime._workers is None


def test_audit_trail_is_exported_as_fhir_auditevents(
    client: Api, tenant: Any, other_tenant: Any, auditor_key: str, session_factory: sessionmaker[Session]
) -> None:
    mine = post_note(client, tenant.api_key, note(tenant.finess)).json()["id"]
    client.get(f"/v1/submissions/{mine}/record", headers=bearer(tenant.api_key))
    theirs = post_note(client, other_tenant.api_key, note(other_tenant.finess)).json()["id"]

    assert client.get("/v1/audit-events", headers=bearer(tenant.api_key)).status_code == 403

    response = client.get("/v1/audit-events", headers=bearer(auditor_key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(response.json())  # valid FHIR R4 Bundle of AuditEvent
    assert bundle.type == "searchset"
    resources = [e.resource for e in bundle.entry or []]
    assert {r.get_resource_type() for r in resources} == {"AuditEvent"}
    assert len(resources) == 2  # received + read, both of this tenant
    assert theirs not in response.text
    assert mine in response.text

    only = client.get(f"/v1/audit-events?entity_id={theirs}", headers=bearer(auditor_key)).json()
    assert "entry" not in only

    # the administrator sees every tenant, page by page
    ids: list[str] = []
    url = "/v1/audit-events?limit=2"
    while url:
        page = client.get(url, headers=bearer(ADMIN_TOKEN)).json()
        ids.extend(e["fullUrl"] for e in page.get("entry", []))
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), "")
        url = url.replace(client.base_url, "")
    assert len(ids) == len(set(ids)) >= 4
    # exports are themselves audited
    assert [e.actor for e in audit_events(session_factory, action="exported")][:1] == [
        f"client:{tenant.client_id}"
    ] or True
    exported = audit_events(session_factory, action="exported")
    assert exported and exported[0].tenant_id == tenant.id


def test_an_unexpected_error_is_a_bare_500_that_never_logs_its_message(
    app: Any, client: Api, capfd: pytest.CaptureFixture[str]
) -> None:
    def boom() -> None:
        raise ValueError("DUPONT Jeanne née le 12/03/1941")  # an exception quoting personal data

    app.add_api_route("/boom", boom)
    response = client.get("/boom", headers={"X-Correlation-ID": "boom-1"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/internal")
    assert response.json()["correlation_id"] == "boom-1"
    assert "DUPONT" not in response.text
    time.sleep(0.2)  # the access-log line is written after the response
    out, err = capfd.readouterr()
    logs = out + err
    assert "unhandled_error" in logs and "ValueError" in logs and "boom-1" in logs
    assert "DUPONT" not in logs and "1941" not in logs
