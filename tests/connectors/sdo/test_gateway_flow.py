# ruff: noqa: F811 - the gateway test fixtures are imported by name and used as parameters
"""The issue's demo path in one process, with the real gateway pieces: a decision appears at the
SI-SdO simulator, the ``sdo`` source stores it (DatabaseSink), a worker interprets it into an
``inbound-event`` routed to the DUI vendor's webhook (the sandbox receiver), the DUI answers
"admitted" (``POST /v1/submissions`` of an ``sdo-status``), and the Task lands at the simulator,
authenticated with the ESSMS's credentials from the gateway's credentials store."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.sandbox import SandboxReceiver
from connectors.sandbox.sdo import SdoSandbox, start_sdo_sandbox
from connectors.sdo import SdoConnector, SdoConnectorSettings, SdoSource, SdoSourceSettings
from connectors.webhook import WebhookConnector, WebhookSettings
from gateway import inbound, pipeline
from gateway.credentials import CredentialMaterial, set_credentials
from gateway.delivery import deliver_next
from gateway.routing import ConfiguredSource, RoutingTable, parse_config
from gateway.storage.db import session_scope
from tests.gateway.api.conftest import app, client, live_server, runtime  # noqa: F401 - fixtures
from tests.gateway.api.support import bearer
from tests.gateway.conftest import (  # noqa: F401 - fixtures
    _pg_schemas,
    _sqlite_template,
    db_url,
    keyring,
    master_keys_spec,
    pg_url_test,
    session_factory,
    sqlite_url,
    tenant,
)


@pytest.fixture
def sdo_box(tenant: Any) -> Iterator[SdoSandbox]:
    box = start_sdo_sandbox([tenant.finess])
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture
def dui() -> Iterator[SandboxReceiver]:
    with SandboxReceiver() as receiver:
        yield receiver


@pytest.fixture
def wired(runtime: Any, tenant: Any, sdo_box: SdoSandbox, dui: SandboxReceiver, tmp_path: Path) -> Any:
    essms = sdo_box.essms[tenant.finess]
    source = SdoSource(
        SdoSourceSettings(
            base_url=sdo_box.base_url,
            token_url=sdo_box.token_url,
            ca_file=str(sdo_box.ca_file),
            essms_finess=tenant.finess,
            client_id=essms.client_id,
            client_secret=SecretStr(essms.client_secret),
            state_file=str(tmp_path / "sdo-state.json"),
        )
    )
    runtime.sources = {"viatrajectoire-in": ConfiguredSource("viatrajectoire-in", source, tenant.code, None)}
    runtime.destinations = {
        "dui": WebhookConnector(WebhookSettings(url=f"{dui.url}/events", signing=False)),
        "viatrajectoire": SdoConnector(
            SdoConnectorSettings(
                base_url=sdo_box.base_url, token_url=sdo_box.token_url, ca_file=str(sdo_box.ca_file), auth="oauth+mtls"
            )
        ),
    }
    runtime.routing = RoutingTable(
        config=parse_config(
            {
                "destinations": {
                    "dui": {"connector": "webhook", "category": "webhook"},
                    "viatrajectoire": {"connector": "sdo", "category": "viatrajectoire"},
                },
                "rules": [
                    {"document_types": ["inbound-event"], "destinations": ["dui"]},
                    {"document_types": ["sdo-status", "sdo-consent"], "destinations": ["viatrajectoire"]},
                ],
            }
        )
    )
    runtime._bulkheads = None
    with session_scope(runtime.session_factory) as session:
        set_credentials(
            session,
            keyring=runtime.keyring,
            tenant_id=tenant.id,
            essms_finess=tenant.finess,
            purpose="sdo",
            material=CredentialMaterial(
                certificate_pem=essms.certificate.certificate_pem,
                private_key_pem=essms.certificate.private_key_pem,
                username=essms.client_id,
                password=essms.client_secret,
            ),
            actor="test",
        )
    return runtime


def _drain(runtime: Any) -> None:
    for _ in range(20):
        busy = inbound.process_next_inbound(runtime, worker_id="w-in")
        busy = pipeline.process_next(runtime, worker_id="w-pipe") or busy
        busy = (deliver_next(runtime, worker_id="w-out") is not None) or busy
        if not busy:
            return


def test_decision_reaches_the_dui_and_its_answer_reaches_the_si_sdo(
    wired: Any, tenant: Any, sdo_box: SdoSandbox, dui: SandboxReceiver, client: Any
) -> None:
    decision = sdo_box.simulator.publish_decision(finess=tenant.finess, id_decision="MDPH-75-2026-001")
    source: SdoSource = wired.sources["viatrajectoire-in"].source
    sink = inbound.DatabaseSink(wired, wired.sources["viatrajectoire-in"])
    assert source.poll_once(sink) == 1
    assert source.poll_once(sink) == 0
    _drain(wired)

    received = [r for r in dui.store.received() if r["outcome"] == "accepted"]
    assert len(received) == 1
    found = dui.store.body(received[0]["n"])
    assert found is not None
    body = json.loads(found[0])
    event = json.loads(base64.b64decode(body["renditions"][0]["content_base64"]))
    assert event["event_type"] == "sdo.decision" and event["series"] == decision["idNat_Decision"]
    assert event["payload"]["idDecision"] == "MDPH-75-2026-001" and event["essms_finess"] == tenant.finess

    answer = {
        "document_type": "sdo-status",
        "record": {
            "essms_finess": tenant.finess,
            "person_ref": "P-42",
            "decision": {"id_decision": "MDPH-75-2026-001", "id_nat_decision": decision["idNat_Decision"]},
            "essms_name": "EHPAD de test",
            "statut_esms": "47",
            "date_statut": "2026-11-30",
        },
    }
    posted = client.post(
        "/v1/submissions",
        data=json.dumps(answer).encode(),
        headers={**bearer(tenant.api_key), "Content-Type": "application/json"},
    )
    assert posted.status_code == 202, posted.text
    _drain(wired)
    [task] = sdo_box.simulator.received("Task")
    assert task["owner"] == tenant.finess
    inputs = {i["type"]["text"]: i for i in task["resource"]["input"]}
    assert inputs["statutESMS"]["valueCodeableConcept"]["coding"][0]["code"] == "47"
    detail = client.get(f"/v1/submissions/{posted.json()['id']}", headers=bearer(tenant.api_key)).json()
    assert detail["status"] == "delivered", detail
