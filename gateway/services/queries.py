"""Read side of the API: submissions with their renditions and deliveries, decrypted documents,
audit events. Every query is scoped to one tenant: another tenant's rows do not exist here
(``NotFound``, never ``Forbidden``, so ids cannot be probed).

Reads of a person's data append a ``read`` audit event (who, which submission or rendition);
a listing appends one ``searched`` event naming the submissions it returned.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from gateway import audit
from gateway.audit.horizon import settled_seq_of
from gateway.errors import FieldError, NotFound, ValidationFailed
from gateway.security.crypto import KeyRing, decrypt
from gateway.storage.models import AuditEvent, Delivery, Rendition, Submission

__all__ = [
    "MAX_PAGE_SIZE",
    "Page",
    "SubmissionFilter",
    "as_utc",
    "check_delivery_visible",
    "check_submission_visible",
    "decode_cursor",
    "encode_cursor",
    "get_submission",
    "list_audit_events",
    "list_submissions",
    "read_record",
    "read_rendition",
]

MAX_PAGE_SIZE = 200


def as_utc(value: datetime) -> datetime:
    """Datetimes come back naive from SQLite (stored in UTC): make them aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class SubmissionFilter:
    """Listing filters; ``created_from`` is inclusive, ``created_to`` exclusive."""

    status: Sequence[str] = ()
    document_type: str | None = None
    essms: str | None = None
    person_ref: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    destination: str | None = None  # submissions with at least one delivery to this destination
    essms_any: Sequence[str] = ()  # limited to these ESSMS (a user whose role is per ESSMS)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.status:
            out["status"] = list(self.status)
        if self.essms_any:
            out["essms_any"] = list(self.essms_any)
        for name in ("document_type", "essms", "person_ref", "destination"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.created_from is not None:
            out["created_from"] = as_utc(self.created_from).isoformat()
        if self.created_to is not None:
            out["created_to"] = as_utc(self.created_to).isoformat()
        return out


@dataclass(frozen=True)
class Page:
    items: list[Submission]
    next_cursor: str | None = None
    filters: dict[str, Any] = field(default_factory=dict)


def encode_cursor(created_at: datetime, submission_id: str) -> str:
    """Opaque cursor: the (created_at, id) of the last row of a page, base64url JSON."""
    raw = json.dumps([as_utc(created_at).isoformat(), submission_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, sid = json.loads(raw)
        if not isinstance(created, str) or not isinstance(sid, str):
            raise ValueError("cursor parts")
        return as_utc(datetime.fromisoformat(created)), sid
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError, RecursionError) as exc:
        raise ValidationFailed(
            "the cursor is not one this API issued", [FieldError("query:cursor", "malformed cursor", "cursor_invalid")]
        ) from exc


def list_submissions(
    session: Session,
    *,
    tenant_id: str,
    actor: str,
    filters: SubmissionFilter,
    cursor: str | None = None,
    limit: int = 50,
    essms: frozenset[str] | None = None,
) -> Page:
    """Newest first, keyset-paginated on (created_at, id); audited as one ``searched`` event."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationFailed(
            f"limit must be between 1 and {MAX_PAGE_SIZE}",
            [FieldError("query:limit", f"must be between 1 and {MAX_PAGE_SIZE}", "out_of_range")],
        )
    stmt = select(Submission).where(Submission.tenant_id == tenant_id)
    if essms is not None:  # a client restricted to some ESSMS sees only theirs
        stmt = stmt.where(Submission.essms_finess.in_(sorted(essms)))
    if filters.status:
        stmt = stmt.where(Submission.status.in_(list(filters.status)))
    if filters.document_type is not None:
        stmt = stmt.where(Submission.document_type == filters.document_type)
    if filters.essms is not None:
        stmt = stmt.where(Submission.essms_finess == filters.essms)
    if filters.essms_any:
        stmt = stmt.where(Submission.essms_finess.in_(list(filters.essms_any)))
    if filters.person_ref is not None:
        stmt = stmt.where(Submission.person_ref == filters.person_ref)
    if filters.destination is not None:
        stmt = stmt.where(
            select(Delivery.id)
            .where(Delivery.submission_id == Submission.id, Delivery.destination == filters.destination)
            .exists()
        )
    if filters.created_from is not None:
        stmt = stmt.where(Submission.created_at >= as_utc(filters.created_from))
    if filters.created_to is not None:
        stmt = stmt.where(Submission.created_at < as_utc(filters.created_to))
    if cursor:
        after_created, after_id = decode_cursor(cursor)
        stmt = stmt.where(
            or_(
                Submission.created_at < after_created,
                and_(Submission.created_at == after_created, Submission.id < after_id),
            )
        )
    stmt = stmt.order_by(Submission.created_at.desc(), Submission.id.desc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    items = rows[:limit]
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    if items or filters.person_ref is not None:  # searching for a person is a read, even when empty
        audit.append(
            session,
            actor=actor,
            action="searched",
            entity_type="tenant",
            entity_id=tenant_id,
            tenant_id=tenant_id,
            person_ref=audit.safe_person_ref(filters.person_ref),
            # the person is in person_ref (withheld when NIR-shaped), not repeated in the filters
            detail={
                "filters": {k: v for k, v in filters.as_json().items() if k != "person_ref"},
                "submission_ids": [s.id for s in items],
            },
        )
    return Page(items=items, next_cursor=next_cursor, filters=filters.as_json())


def get_submission(
    session: Session, *, tenant_id: str, submission_id: str, essms: frozenset[str] | None = None
) -> Submission:
    """The submission with renditions and deliveries (and their attempts) loaded; another tenant's
    (or, for a client restricted to some ESSMS, another ESSMS's) is not found."""
    stmt = (
        select(Submission)
        .where(
            Submission.id == submission_id,
            Submission.tenant_id == tenant_id,
            *([Submission.essms_finess.in_(sorted(essms))] if essms is not None else []),
        )
        .options(
            selectinload(Submission.renditions),
            selectinload(Submission.deliveries).selectinload(Delivery.attempts),
        )
    )
    submission = session.scalars(stmt).first()
    if submission is None:
        raise NotFound(f"no submission {submission_id}")
    return submission


def view_submission(
    session: Session, *, tenant_id: str, submission_id: str, actor: str, essms: frozenset[str] | None = None
) -> Submission:
    """The submission detail, audited as a ``read`` of its status view."""
    submission = get_submission(session, tenant_id=tenant_id, submission_id=submission_id, essms=essms)
    _audit_read(
        session,
        actor=actor,
        submission=submission,
        entity_type="submission",
        entity_id=submission.id,
        detail={"view": "status"},
    )
    return submission


def _audit_read(
    session: Session, *, actor: str, submission: Submission, entity_type: str, entity_id: str, detail: dict[str, Any]
) -> None:
    audit.append(
        session,
        actor=actor,
        action="read",
        entity_type=entity_type,
        entity_id=entity_id,
        tenant_id=submission.tenant_id,
        person_ref=submission.person_ref,
        detail={"submission_id": submission.id, **detail},
    )


def read_record(
    session: Session,
    *,
    tenant_id: str,
    submission_id: str,
    keyring: KeyRing,
    actor: str,
    essms: frozenset[str] | None = None,
) -> tuple[Submission, bytes]:
    """The record as submitted (decrypted JSON bytes); audited as a ``read``."""
    submission = get_submission(session, tenant_id=tenant_id, submission_id=submission_id, essms=essms)
    plaintext = decrypt(
        session,
        data_key_id=submission.data_key_id,
        ciphertext=submission.payload_ct,
        keyring=keyring,
        aad=submission.id.encode(),
    )
    _audit_read(
        session,
        actor=actor,
        submission=submission,
        entity_type="submission",
        entity_id=submission.id,
        detail={"view": "record"},
    )
    return submission, plaintext


def read_rendition(
    session: Session,
    *,
    tenant_id: str,
    submission_id: str,
    kind: str,
    keyring: KeyRing,
    actor: str,
    essms: frozenset[str] | None = None,
) -> tuple[Rendition, bytes]:
    """One produced document (decrypted bytes); audited as a ``read`` of the rendition."""
    submission = get_submission(session, tenant_id=tenant_id, submission_id=submission_id, essms=essms)
    rendition = next((r for r in submission.renditions if r.kind == kind), None)
    if rendition is None:
        raise NotFound(f"submission {submission_id} has no {kind!r} rendition")
    content = decrypt(
        session,
        data_key_id=rendition.data_key_id,
        ciphertext=rendition.content_ct,
        keyring=keyring,
        aad=rendition.id.encode(),
    )
    _audit_read(
        session,
        actor=actor,
        submission=submission,
        entity_type="rendition",
        entity_id=rendition.id,
        detail={"view": "rendition", "kind": kind, "document_id": rendition.document_id},
    )
    return rendition, content


def check_delivery_visible(session: Session, *, tenant_id: str, delivery_id: str, essms: frozenset[str] | None) -> None:
    """``NotFound`` unless the delivery's submission is one the caller may see (ESSMS restriction)."""
    if essms is None:
        return
    finess = session.scalar(
        select(Submission.essms_finess)
        .join(Delivery, Delivery.submission_id == Submission.id)
        .where(Delivery.id == delivery_id, Submission.tenant_id == tenant_id)
    )
    if finess is None or finess not in essms:
        raise NotFound(f"delivery {delivery_id} not found")  # the outbox's words: indistinguishable


def check_submission_visible(
    session: Session, *, tenant_id: str, submission_id: str, essms: frozenset[str] | None
) -> None:
    """``NotFound`` unless the submission's ESSMS is one the caller may act on."""
    if essms is None:
        return
    finess = session.scalar(
        select(Submission.essms_finess).where(Submission.id == submission_id, Submission.tenant_id == tenant_id)
    )
    if finess is None or finess not in essms:
        raise NotFound(f"submission {submission_id} not found")  # the outbox's words: indistinguishable


def list_audit_events(
    session: Session,
    *,
    tenant_id: str | None,
    actor: str,
    since: datetime | None = None,
    until: datetime | None = None,
    entity_id: str | None = None,
    after_seq: int | None = None,
    limit: int = 100,
) -> tuple[list[AuditEvent], int | None]:
    """Audit events in chain order (tenant's only, or all for an administrator), and the next seq.

    The export itself is audited (``exported``), after the query, so it is in the next page.

    Only settled events are returned (``seq`` up to :func:`gateway.audit.horizon.settled_seq`):
    an event still being appended with a lower ``seq`` than one already committed would otherwise
    appear behind the reader's cursor and be skipped by its next page. Raises
    :class:`~gateway.audit.horizon.AuditNotSettled` when an append in flight does not end in time.
    """
    horizon = settled_seq_of(session)
    stmt = select(AuditEvent)
    if horizon is not None:
        stmt = stmt.where(AuditEvent.seq <= horizon)
    if tenant_id is not None:
        stmt = stmt.where(AuditEvent.tenant_id == tenant_id)
    if since is not None:
        stmt = stmt.where(AuditEvent.recorded_at >= as_utc(since))
    if until is not None:
        stmt = stmt.where(AuditEvent.recorded_at < as_utc(until))
    if entity_id is not None:
        stmt = stmt.where(AuditEvent.entity_id == entity_id)
    if after_seq is not None:
        stmt = stmt.where(AuditEvent.seq > after_seq)
    rows = list(session.scalars(stmt.order_by(AuditEvent.seq).limit(limit + 1)))
    events = rows[:limit]
    next_seq = events[-1].seq if len(rows) > limit else None
    audit.append(
        session,
        actor=actor,
        action="exported",
        entity_type="audit",
        entity_id=tenant_id or "all",
        tenant_id=tenant_id,
        detail={"count": len(events), "first_seq": events[0].seq if events else None},
    )
    return events, next_seq
