"""Audit events exported as FHIR R4 AuditEvent: valid against the R4B models, codes as documented."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit import ACTIONS, AuditSealer, append, to_fhir_audit_event
from gateway.storage.db import session_scope

AT = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


@pytest.mark.parametrize("outcome,code", [("success", "0"), ("failure", "4"), ("error", "8")])
def test_every_action_exports_as_valid_r4_audit_event(
    session_factory: sessionmaker[Session], outcome: str, code: str
) -> None:
    with session_scope(session_factory) as s:
        events = [
            append(s, actor="client:c1", action=action, entity_type="submission", entity_id="s-1", outcome=outcome,
                   tenant_id="t-1", person_ref="ipp-42", detail={"error": "timeout"}, at=AT, sealer=AuditSealer())
            for action in ACTIONS
        ]  # fmt: skip
        exported = [to_fhir_audit_event(e) for e in events]
    for ev, doc in zip(events, exported, strict=True):
        parsed = FhirAuditEvent.model_validate(json.loads(json.dumps(doc)))
        assert parsed.id == ev.id
        assert parsed.outcome == code
        assert doc["recorded"] == "2026-03-04T05:06:07.890Z"
        assert doc["subtype"] == [{"system": "urn:dui-gateway:audit-action", "code": ev.action}]
        assert doc["agent"][0]["who"]["identifier"]["value"] == "client:c1"
        assert doc["agent"][0]["requestor"] is True
        person = [e for e in doc["entity"] if e.get("role", {}).get("code") == "1"]
        assert person[0]["what"]["identifier"]["value"] == "ipp-42"
        details = {d["type"]: d["valueString"] for d in doc["entity"][0]["detail"]}
        assert details == {
            "seq": str(ev.seq),
            "chain": str(ev.chain),
            "chain_seq": str(ev.chain_seq),
            "hash": ev.hash,
            "prev_hash": ev.prev_hash,
            "key_id": "sha256",
        }
        assert ("outcomeDesc" in doc) == (outcome != "success")
    actions = {e.action: d["action"] for e, d in zip(events, exported, strict=True)}
    assert actions["received"] == "C" and actions["read"] == "R" and actions["delivered"] == "E"
    assert actions["cancelled"] == "U"
    types = {e.action: d["type"]["code"] for e, d in zip(events, exported, strict=True)}
    assert types["received"] == "110107" and types["delivered"] == "110106" and types["read"] == "110110"
    assert types["searched"] == "110112" and actions["exported"] == "R"


def test_event_without_person_or_tenant(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        ev = append(s, actor="worker:w", action="custom-step", entity_type="delivery", entity_id="d-1",
                    sealer=AuditSealer())  # fmt: skip
        doc = to_fhir_audit_event(ev)
    FhirAuditEvent.model_validate(doc)
    assert len(doc["entity"]) == 1
    assert doc["source"]["site"] == "dui-gateway"
    assert doc["type"]["code"] == "110100" and doc["action"] == "E"
    assert doc["agent"][0]["requestor"] is False
