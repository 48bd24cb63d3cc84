"""Audit events as FHIR R4 ``AuditEvent`` resources (JSON dicts, valid against R4 4.0.1)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from gateway.storage.models import AuditEvent

__all__ = ["ACTION_SYSTEM", "ENTITY_SYSTEM_PREFIX", "to_fhir_audit_event"]

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ACTION_SYSTEM = "urn:dui-gateway:audit-action"
ACTOR_SYSTEM = "urn:dui-gateway:actor"
PERSON_SYSTEM = "urn:dui-gateway:person-ref"
ENTITY_SYSTEM_PREFIX = "urn:dui-gateway:"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

# action -> (DICOM event type code, display, FHIR AuditEvent.action C/R/U/D/E)
_TYPES: dict[str, tuple[str, str, str]] = {
    "received": ("110107", "Import", "C"),
    "mapped": ("110110", "Patient Record", "C"),
    "rejected": ("110110", "Patient Record", "E"),
    "routed": ("110110", "Patient Record", "C"),
    "attempt": ("110106", "Export", "E"),
    "delivered": ("110106", "Export", "E"),
    "dead_lettered": ("110106", "Export", "E"),
    "retried": ("110106", "Export", "E"),
    "replayed": ("110106", "Export", "E"),
    "cancelled": ("110110", "Patient Record", "U"),
    "read": ("110110", "Patient Record", "R"),
    "searched": ("110112", "Query", "E"),
    "exported": ("110106", "Export", "R"),
    "held": ("110110", "Patient Record", "E"),
    # a disclosure starts / its outcome arrives later (delivery core v2)
    "send_started": ("110106", "Export", "E"),
    "sent": ("110106", "Export", "E"),
    "receipt": ("110106", "Export", "E"),
    "receipt_failed": ("110106", "Export", "E"),
    "receipt_overdue": ("110106", "Export", "E"),
    "lease_lost": ("110106", "Export", "E"),
    "attempt_abandoned": ("110106", "Export", "E"),
    "inbound_received": ("110107", "Import", "C"),
    "inbound_processed": ("110107", "Import", "E"),
    "credentials_set": ("110100", "Application Activity", "U"),
    "credentials_deleted": ("110100", "Application Activity", "D"),
}
_DEFAULT_TYPE = ("110100", "Application Activity", "E")
# FHIR AuditEvent.outcome: 0 success, 4 minor failure, 8 serious failure
_OUTCOMES = {"success": "0", "failure": "4", "error": "8"}


def _recorded(event: AuditEvent) -> str:
    at = event.recorded_at
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_fhir_audit_event(event: AuditEvent) -> dict[str, Any]:
    """One audit event as a FHIR R4 AuditEvent (seq, chain, position and hashes in ``entity.detail``)."""
    code, display, action = _TYPES.get(event.action, _DEFAULT_TYPE)
    kind, _, _ = event.actor.partition(":")
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": _PARTICIPATION, "code": "AUT" if kind != "worker" else "PRF"}]},
        "who": {"identifier": {"system": ACTOR_SYSTEM, "value": event.actor}, "display": event.actor},
        # a DUI client or a user asked for it; workers act on the gateway's own behalf
        "requestor": kind in ("client", "user"),
    }
    entity_details: list[dict[str, Any]] = [
        {"type": "seq", "valueString": str(event.seq)},
        {"type": "chain", "valueString": str(event.chain)},
        {"type": "chain_seq", "valueString": str(event.chain_seq)},
        {"type": "hash", "valueString": event.hash},
        {"type": "prev_hash", "valueString": event.prev_hash},
        {"type": "key_id", "valueString": event.key_id},
    ]
    entities: list[dict[str, Any]] = [
        {
            "what": {
                "identifier": {"system": f"{ENTITY_SYSTEM_PREFIX}{event.entity_type}", "value": event.entity_id},
                "display": f"{event.entity_type} {event.entity_id}",
            },
            "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
            "detail": entity_details,
        }
    ]
    if event.person_ref:
        entities.append(
            {
                "what": {"identifier": {"system": PERSON_SYSTEM, "value": event.person_ref}},
                "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event.id,
        "type": {"system": DCM, "code": code, "display": display},
        "subtype": [{"system": ACTION_SYSTEM, "code": event.action}],
        "action": action,
        "recorded": _recorded(event),
        "outcome": _OUTCOMES.get(event.outcome, "8"),
        "agent": [agent],
        "source": {
            "site": f"tenant:{event.tenant_id}" if event.tenant_id else "dui-gateway",
            "observer": {"display": "dui-gateway"},
            "type": [{"system": _SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": entities,
    }
    if event.outcome != "success" and event.detail:
        reason = event.detail.get("error") or event.detail.get("reason")
        if isinstance(reason, str) and reason:
            resource["outcomeDesc"] = reason[:1000]
    return resource
