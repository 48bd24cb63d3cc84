"""The generic ``fhir`` connector against the simulator's generic FHIR part (no real FHIR server can
be installed here from the package registries: see docs/viatrajectoire.md)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.base import Envelope, PermanentError, TransientError
from connectors.fhir import FhirConnector, FhirSettings
from connectors.fhir._http import answer_error, parse_json, parse_outcome
from connectors.sandbox.sdo import SdoSandbox, start_sdo_sandbox
from mappings.base import RecordFacts, Rendition
from tests.connectors.contract import ConnectorContract
from tests.peers import free_port

FINESS = "759900004"


@pytest.fixture
def server() -> Iterator[SdoSandbox]:
    box = start_sdo_sandbox([FINESS])
    try:
        yield box
    finally:
        box.stop()


def _connector(box: SdoSandbox, **extra: Any) -> FhirConnector:
    essms = box.essms[FINESS]
    settings = FhirSettings.model_validate(
        {
            "base_url": box.base_url,
            "ca_file": str(box.ca_file),
            "timeout": 5.0,
            "oauth": {
                "token_url": box.token_url,
                "client_id": essms.client_id,
                "client_secret": SecretStr(essms.client_secret),
            },
            **extra,
        }
    )
    return FhirConnector(settings)


def _envelope(resource: dict[str, Any], document_id: str | None = None) -> Envelope:
    doc = document_id or f"urn:uuid:{uuid.uuid4()}"
    rendition = Rendition(
        kind="fhir",
        media_type="application/fhir+json",
        content=json.dumps(resource).encode(),
        document_id=doc,
        set_id=doc,
        version=1,
    )
    return Envelope(
        delivery_id=str(uuid.uuid4()),
        submission_id=str(uuid.uuid4()),
        idempotency_key=f"delivery-{uuid.uuid4()}",
        tenant="demo",
        destination="fhir-partner",
        document_type="tddui-export",
        renditions=(rendition,),
        facts=RecordFacts(person_ref="P-1", essms_finess=FINESS),
    )


def _transaction(tag: str) -> dict[str, Any]:
    patient = f"urn:uuid:{uuid.uuid4()}"
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:oid:1.2.250.1.999", "value": f"P-{tag}"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Organization",
                    "identifier": [{"system": "https://finess.esante.gouv.fr", "value": FINESS}],
                    "name": "IME",
                },
                "request": {"method": "POST", "url": "Organization"},
            },
        ],
    }


def _count(box: SdoSandbox, rtype: str, value: str) -> int:
    return sum(
        1
        for r in box.simulator.received(rtype)
        if any(i.get("value") == value for i in r["resource"].get("identifier", []))
    )


class TestFhirContract(ConnectorContract):
    @pytest.fixture
    def peer(self, server: SdoSandbox) -> SdoSandbox:
        return server

    def envelope(self) -> Envelope:
        tag = uuid.uuid4().hex[:8]
        return _envelope(_transaction(tag))

    def connector(self, peer: SdoSandbox) -> FhirConnector:
        return _connector(peer)

    def down_connector(self) -> FhirConnector:
        return FhirConnector(FhirSettings(base_url=f"https://127.0.0.1:{free_port()}/fhir", timeout=2.0))

    def reject_next(self, peer: SdoSandbox) -> None:
        peer.simulator.set_faults(reject_next=1)

    def fail_next(self, peer: SdoSandbox) -> None:
        peer.simulator.set_faults(fail_next=1)

    def slow_next(self, peer: SdoSandbox, seconds: float) -> None:
        peer.simulator.set_faults(slow_next=seconds)

    def accepted_count(self, peer: SdoSandbox, envelope: Envelope) -> int:
        bundle = json.loads(envelope.renditions[0].content)
        value = bundle["entry"][0]["resource"]["identifier"][0]["value"]
        return _count(peer, "Patient", value)


def test_transaction_gets_conditional_creates_and_references_resolved(server: SdoSandbox) -> None:
    receipt = _connector(server).send(_envelope(_transaction("T1")))
    assert receipt.detail["entries"] == 2 and receipt.remote_id and receipt.remote_id.startswith("Patient/")


def test_resource_without_identifier_is_put_with_a_stable_id(server: SdoSandbox) -> None:
    env = _envelope({"resourceType": "Organization", "name": "Sans identifiant"}, "urn:uuid:fixed-doc")
    conn = _connector(server)
    first = conn.send(env)
    second = conn.send(env)
    assert first.detail["interaction"] == "update-as-create" and first.remote_id == second.remote_id
    assert len(server.simulator.received("Organization")) == 1


def test_collection_bundle_is_created_once(server: SdoSandbox) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "entry": [{"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient"}}],
    }
    conn = _connector(server)
    a = conn.send(_envelope(bundle))
    b = conn.send(_envelope(bundle))
    assert a.remote_id == b.remote_id and b.detail["existing"] is True


def test_invalid_resource_rejected_with_operation_outcome_is_permanent(server: SdoSandbox) -> None:
    with pytest.raises(PermanentError, match="422"):
        _connector(server).send(_envelope({"resourceType": "Patient", "gender": "robot"}))


def test_batch_with_a_failed_entry_is_an_error(server: SdoSandbox) -> None:
    batch = _transaction("B1")
    batch["type"] = "batch"
    batch["entry"][1]["resource"]["unknownElement"] = 1  # not an R4 element: this entry fails
    with pytest.raises(PermanentError, match="1 of the bundle's entries failed"):
        _connector(server).send(_envelope(batch))


def test_health_checks_the_capability_statement(server: SdoSandbox) -> None:
    health = _connector(server).health()
    assert health.ok and "4.0.1" in health.detail


def test_static_token_refused_is_permanent(server: SdoSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_TEST_TOKEN", "not-a-token")
    conn = FhirConnector(
        FhirSettings.model_validate(
            {"base_url": server.base_url, "ca_file": str(server.ca_file), "token": "env:FHIR_TEST_TOKEN"}
        )
    )
    with pytest.raises(PermanentError, match="401"):
        conn.send(_envelope(_transaction("X")))


@pytest.mark.parametrize(
    ("status", "outcome", "kind"),
    [
        (
            400,
            {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid"}]},
            PermanentError,
        ),
        (
            422,
            {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "business-rule"}]},
            PermanentError,
        ),
        (
            400,
            {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "transient"}]},
            TransientError,
        ),
        (409, None, TransientError),
        (412, None, TransientError),
        (429, None, TransientError),
        (
            500,
            {"resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "code": "exception"}]},
            TransientError,
        ),
        (404, "<html>not json</html>", PermanentError),
    ],
)
def test_operation_outcome_mapping(status: int, outcome: Any, kind: type[Exception]) -> None:
    body = outcome.encode() if isinstance(outcome, str) else json.dumps(outcome).encode() if outcome else b""
    error = answer_error("peer", status, body)
    assert type(error) is kind and str(status) in str(error)


def test_outcome_messages_never_quote_diagnostics() -> None:
    body = json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": "Dupont Jean né le 01/02/1950"}],
        }
    ).encode()
    assert "Dupont" not in str(answer_error("peer", 400, body))


def test_outcome_parser_survives_hostile_shapes() -> None:
    assert parse_outcome({"resourceType": "OperationOutcome", "issue": "x"}).issues == ()
    assert parse_outcome([1, 2]).issues == ()
    with pytest.raises(ValueError):
        parse_json(b"[" * 1000 + b"]" * 1000)
