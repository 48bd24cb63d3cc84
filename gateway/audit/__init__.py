"""Audit trail: append-only hash-chained events, verification, FHIR AuditEvent export."""

from gateway.audit.chain import (
    ACTIONS,
    OUTCOMES,
    AuditSealer,
    Entry,
    VerifyResult,
    append,
    append_many,
    iter_events,
    safe_person_ref,
    verify,
)
from gateway.audit.fhir import to_fhir_audit_event

__all__ = [
    "ACTIONS",
    "OUTCOMES",
    "AuditSealer",
    "Entry",
    "VerifyResult",
    "append",
    "append_many",
    "iter_events",
    "safe_person_ref",
    "to_fhir_audit_event",
    "verify",
]
