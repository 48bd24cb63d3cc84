"""Operator actions on submissions and deliveries: retry, replay, cancel. Each one is audited.

The caller (an API route or the CLI) owns the session and its transaction. ``tenant_id`` limits
the action to one tenant's data (a row of another tenant is reported as not found); ``None``
means an operator acting across tenants.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import audit
from gateway.delivery.engine import (
    TERMINAL,
    advisory_series_lock,
    audit_delivery,
    refresh_submission_status,
    release,
)
from gateway.errors import Conflict, NotFound
from gateway.storage.models import Delivery, Submission

__all__ = ["cancel_submission", "replay_submission", "retry_delivery"]


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _submission(session: Session, submission_id: str, tenant_id: str | None) -> Submission:
    query = select(Submission).where(Submission.id == submission_id)
    if _is_postgres(session):
        query = query.with_for_update()
    sub = session.scalars(query).first()
    if sub is None or (tenant_id is not None and sub.tenant_id != tenant_id):
        raise NotFound(f"submission {submission_id} not found")
    return sub


def retry_delivery(
    session: Session, *, delivery_id: str, actor: str, tenant_id: str | None, now: datetime | None = None
) -> Delivery:
    """A dead-lettered delivery goes back to ``pending``, due now; its past attempts are kept."""
    now = _now(now)
    found = session.get(Delivery, delivery_id)
    if found is None or (tenant_id is not None and found.tenant_id != tenant_id):
        raise NotFound(f"delivery {delivery_id} not found")
    sub = _submission(session, found.submission_id, None)  # lock order: submission, then delivery
    query = select(Delivery).where(Delivery.id == delivery_id)
    if _is_postgres(session):
        query = query.with_for_update()
    row = session.scalars(query).one()
    session.refresh(row)
    if row.status != "dead":
        raise Conflict(f"only a dead-lettered delivery can be retried (this one is {row.status})")
    if sub.status == "cancelled":
        raise Conflict("the submission was cancelled")
    newer_delivered = session.scalars(
        select(Delivery.id)
        .where(
            Delivery.destination == row.destination,
            Delivery.series_key == row.series_key,
            Delivery.seq > row.seq,
            Delivery.status == "delivered",
            Delivery.submission_id != row.submission_id,  # a replay of the same document is no newer version
        )
        .limit(1)
    ).first()
    if newer_delivered is not None:
        # The destination already holds a newer version: sending this one now would put an older
        # version after it (ARCHITECTURE "Delivery semantics"). Submit a new version instead.
        raise Conflict(
            "a newer version of this document was already delivered to this destination; "
            "retrying this older one would deliver it after the newer one"
        )
    release(row, "pending", now=now)
    row.next_attempt_at = now
    session.flush()
    audit_delivery(
        session,
        row,
        actor=actor,
        action="retried",
        outcome="success",
        person_ref=sub.person_ref,
        detail={"destination": row.destination, "attempts_so_far": row.attempt_count, "last_error": row.last_error},
        at=now,
    )
    refresh_submission_status(session, sub, now=now)
    return row


def replay_submission(
    session: Session, *, submission_id: str, actor: str, tenant_id: str | None, now: datetime | None = None
) -> Submission:
    """Send again: new deliveries of the same renditions to the same destinations.

    A rejected submission (or one cancelled before it was processed) is instead run through the
    pipeline again, from its stored payload. Refused while anything is still pending or in flight.
    """
    now = _now(now)
    sub = _submission(session, submission_id, tenant_id)
    if sub.status in ("received", "processing"):
        raise Conflict(f"the submission is still being processed ({sub.status})")
    deliveries = session.scalars(
        select(Delivery).where(Delivery.submission_id == sub.id).order_by(Delivery.created_at)
    ).all()
    if any(d.status not in TERMINAL for d in deliveries):
        raise Conflict("some deliveries are still pending or in flight; cancel them or wait")
    detail: dict[str, object]
    if sub.status == "rejected" or (sub.status == "cancelled" and not sub.renditions):
        sub.status = "received"
        sub.report = None
        sub.lease_owner = None
        sub.lease_until = None
        sub.updated_at = now
        detail = {"mode": "pipeline"}
    else:
        destinations = list(dict.fromkeys(d.destination for d in deliveries))
        if not destinations:
            raise Conflict("the submission was routed to no destination; nothing to replay")
        key = deliveries[0].series_key
        advisory_series_lock(session, key)
        last = max(
            (s for (s,) in session.execute(select(Delivery.seq).where(Delivery.series_key == key)).all()), default=0
        )
        connectors = {d.destination: d.connector for d in deliveries}
        new_ids: list[dict[str, str]] = []
        for name in destinations:
            row = Delivery(
                id=str(uuid.uuid4()),
                submission_id=sub.id,
                tenant_id=sub.tenant_id,
                destination=name,
                connector=connectors[name],
                series_key=key,
                seq=last + 1,
                status="pending",
                next_attempt_at=now,
                attempt_count=0,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            new_ids.append({"destination": name, "id": row.id})
        sub.status = "routed"
        sub.updated_at = now
        detail = {"mode": "deliveries", "deliveries": new_ids}
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="replayed",
        entity_type="submission",
        entity_id=sub.id,
        outcome="success",
        tenant_id=sub.tenant_id,
        person_ref=sub.person_ref,
        detail=detail,
        at=now,
    )
    return sub


def cancel_submission(
    session: Session, *, submission_id: str, actor: str, tenant_id: str | None, now: datetime | None = None
) -> Submission:
    """Cancel what has not been sent: pending deliveries (in-flight ones finish), or the processing itself."""
    now = _now(now)
    sub = _submission(session, submission_id, tenant_id)
    if sub.status in ("cancelled", "rejected"):
        raise Conflict(f"the submission is already {sub.status}")
    if sub.status == "processing":
        raise Conflict("the submission is being processed right now; try again in a moment")
    query = select(Delivery).where(Delivery.submission_id == sub.id, Delivery.status == "pending")
    if _is_postgres(session):
        query = query.with_for_update()
    cancelled = []
    for row in session.scalars(query).all():
        row.status = "cancelled"
        row.lease_owner = None
        row.lease_until = None
        row.updated_at = now
        cancelled.append(row.id)
    in_flight = [
        d
        for (d,) in session.execute(
            select(Delivery.id).where(Delivery.submission_id == sub.id, Delivery.status == "in_flight")
        ).all()
    ]
    if sub.status != "received" and not cancelled:
        raise Conflict("nothing left to cancel: every delivery is finished or in flight")
    sub.status = "cancelled"
    sub.lease_owner = None
    sub.lease_until = None
    sub.updated_at = now
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="cancelled",
        entity_type="submission",
        entity_id=sub.id,
        outcome="success",
        tenant_id=sub.tenant_id,
        person_ref=sub.person_ref,
        detail={"cancelled_deliveries": cancelled, "left_in_flight": in_flight},
        at=now,
    )
    return sub
