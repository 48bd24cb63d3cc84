"""The delivery engine: claim a due delivery, send it outside any transaction, record the outcome.

Life of a delivery row (docs/delivery.md)::

    pending --claim--> in_flight --send ok--------------------> delivered
       ^                   |------TransientError, attempts left--> pending (next_attempt_at = backoff)
       |                   |------PermanentError / attempts used-> dead
       |                   '------lease expired (worker died)----> claimable again
       '----- retry (operator) ------ dead ;  pending --cancel--> cancelled

Ordering: a delivery is claimable only when every delivery of the same series
(``series_key``) to the same destination with a smaller ``seq`` is terminal
(delivered, dead or cancelled), so a newer version never overtakes an older one.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import and_, exists, select, text, update
from sqlalchemy.orm import Session, aliased

from connectors.base import Connector, Envelope, PermanentError, Receipt, TransientError
from gateway import audit
from gateway.delivery.renditions import facts_from_json, load_rendition
from gateway.metrics import ATTEMPTS, DELIVERY_LATENCY
from gateway.security.crypto import KeyRing
from gateway.settings import Settings
from gateway.storage.models import Attempt, Delivery, Rendition, Submission, Tenant

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = [
    "TERMINAL",
    "Backoff",
    "DeliveryOutcome",
    "advisory_series_lock",
    "as_utc",
    "backoff_from",
    "deliver_next",
    "refresh_submission_status",
]

TERMINAL: tuple[str, ...] = ("delivered", "dead", "cancelled")

_log = structlog.get_logger(__name__)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything the gateway stores is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``min(max, base * 2**(n-1)) * U(low, 1)`` after the n-th try."""

    base_seconds: float = 2.0
    max_seconds: float = 3600.0
    jitter_low: float = 0.5
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def ceiling(self, attempts_made: int) -> float:
        exponent = max(0, attempts_made - 1)
        return float(min(self.max_seconds, self.base_seconds * (2.0 ** min(exponent, 62))))

    def delay(self, attempts_made: int) -> float:
        factor = self.jitter_low + (1.0 - self.jitter_low) * self.rng()
        return self.ceiling(attempts_made) * factor


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one :func:`deliver_next` call did (for logs, the worker loop and tests)."""

    delivery_id: str
    status: str  # delivered | pending | dead | lease_lost
    attempt: int
    error: str | None = None
    next_attempt_at: datetime | None = None
    remote_id: str | None = None


@dataclass(frozen=True)
class _Claim:
    delivery_id: str
    attempt_id: str
    attempt_number: int
    envelope: Envelope
    connector: Connector
    connector_name: str
    document_type: str
    submission_created_at: datetime


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _due_queries(now: datetime, destinations: list[str]) -> list[Any]:
    """Expired leases first (work of a dead worker), then pending deliveries that are due.

    Two queries, each with an equality on ``status`` and a range on a time column, so that both
    databases walk ``ix_deliveries_due`` instead of a destination's whole history.
    """
    earlier = aliased(Delivery)
    blocked = exists().where(
        and_(
            earlier.destination == Delivery.destination,
            earlier.series_key == Delivery.series_key,
            earlier.seq < Delivery.seq,
            earlier.status.not_in(TERMINAL),
        )
    )
    expired = (
        select(Delivery.id, Delivery.status)
        .where(Delivery.status == "in_flight", Delivery.lease_until <= now, Delivery.destination.in_(destinations))
        .where(~blocked)
        .order_by(Delivery.lease_until)
    )
    due = (
        select(Delivery.id, Delivery.status)
        .where(Delivery.status == "pending", Delivery.next_attempt_at <= now, Delivery.destination.in_(destinations))
        .where(~blocked)
        .order_by(Delivery.next_attempt_at, Delivery.seq)
    )
    return [expired, due]


def _claim(
    session: Session,
    *,
    worker_id: str,
    now: datetime,
    lease_seconds: float,
    max_attempts: int,
    destinations: Mapping[str, Connector],
    options: Mapping[str, Mapping[str, Any]],
    keyring: KeyRing,
) -> _Claim | None:
    """Inside one transaction: pick a due delivery, lease it, open an Attempt, build its envelope."""
    names = sorted(destinations)
    if not names:
        return None
    postgres = _is_postgres(session)
    for query in _due_queries(now, names):
        # PostgreSQL: lock one row, skipping rows other workers hold. SQLite: the transaction
        # holds the database write lock (BEGIN IMMEDIATE); read a few candidates.
        query = query.limit(1).with_for_update(skip_locked=True, of=Delivery) if postgres else query.limit(4)
        for delivery_id, status in session.execute(query).all():
            claim = _try_claim(
                session,
                str(delivery_id),
                str(status),
                worker_id=worker_id,
                now=now,
                lease_seconds=lease_seconds,
                max_attempts=max_attempts,
            )
            if claim is not None:
                row, attempt = claim
                try:
                    return _build_claim(
                        session, row, attempt, destinations=destinations, options=options, keyring=keyring
                    )
                except Exception as exc:
                    # Its renditions cannot be read back (key gone, tampered row, stored metadata
                    # this version cannot load): rolling back would leave it due, to be claimed
                    # again first on every iteration while every other delivery waits. It can
                    # never succeed as is: dead-letter it (type only: messages may quote data).
                    reason = f"cannot prepare the delivery: {type(exc).__name__}"
                    _log.error("delivery_unpreparable", delivery_id=row.id, error_type=type(exc).__name__)
                    attempt.outcome = "permanent"
                    attempt.finished_at = now
                    attempt.error = reason
                    _dead_letter(session, row, now=now, actor=f"worker:{worker_id}", reason=reason)
    return None


def _try_claim(
    session: Session,
    delivery_id: str,
    status: str,
    *,
    worker_id: str,
    now: datetime,
    lease_seconds: float,
    max_attempts: int,
) -> tuple[Delivery, Attempt] | None:
    """Lease one candidate (conditional UPDATE); None if someone else got it or it was dead-lettered."""
    row = session.get(Delivery, delivery_id)
    if row is None:
        return None
    expired_lease = status == "in_flight"
    if expired_lease:
        # the previous holder died mid-send: its attempt is closed as lost
        for attempt in row.attempts:
            if attempt.outcome == "started":
                attempt.outcome = "lease_expired"
                attempt.finished_at = now
                attempt.error = "lease expired before the outcome was recorded"
        if row.attempt_count >= max_attempts:
            _dead_letter(
                session,
                row,
                now=now,
                actor=f"worker:{worker_id}",
                reason=f"lease expired after {row.attempt_count} attempts (max {max_attempts})",
            )
            return None
    claimed = session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == status,
            Delivery.attempt_count == row.attempt_count,  # optimistic check: nobody claimed it meanwhile
        )
        .values(
            status="in_flight",
            lease_owner=worker_id,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempt_count=Delivery.attempt_count + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    session.refresh(row)
    attempt = Attempt(
        id=str(uuid.uuid4()),
        delivery_id=row.id,
        number=row.attempt_count,
        worker=worker_id,
        started_at=now,
        outcome="started",
    )
    session.add(attempt)
    session.flush()
    return row, attempt


def _build_claim(
    session: Session,
    row: Delivery,
    attempt: Attempt,
    *,
    destinations: Mapping[str, Connector],
    options: Mapping[str, Mapping[str, Any]],
    keyring: KeyRing,
) -> _Claim:
    sub = row.submission
    tenant = session.get(Tenant, sub.tenant_id)
    renditions = session.scalars(
        select(Rendition).where(Rendition.submission_id == sub.id).order_by(Rendition.kind)
    ).all()
    envelope = Envelope(
        delivery_id=row.id,
        submission_id=sub.id,
        idempotency_key=row.id,
        tenant=tenant.code if tenant is not None else sub.tenant_id,
        destination=row.destination,
        document_type=sub.document_type,
        renditions=tuple(load_rendition(session, r, keyring=keyring) for r in renditions),
        facts=facts_from_json(sub.facts, person_ref=sub.person_ref, essms_finess=sub.essms_finess),
        options=dict(options.get(row.destination, {})),
    )
    return _Claim(
        delivery_id=row.id,
        attempt_id=attempt.id,
        attempt_number=attempt.number,
        envelope=envelope,
        connector=destinations[row.destination],
        connector_name=row.connector,
        document_type=sub.document_type,
        submission_created_at=as_utc(sub.created_at),
    )


def _lock_submission(session: Session, submission_id: str) -> Submission | None:
    query = select(Submission).where(Submission.id == submission_id)
    if _is_postgres(session):
        query = query.with_for_update()
    return session.scalars(query).first()


def refresh_submission_status(session: Session, submission: Submission, *, now: datetime) -> str:
    """Derive a routed submission's status from its deliveries (call with the submission locked).

    Cancelled deliveries do not count. Any pending or in flight: ``routed``. All terminal: each
    destination's latest delivery decides (a replay supersedes the earlier ones): ``delivered``
    when none is dead, ``failed`` when none was delivered, else ``partially_failed``. Cancelled
    and rejected submissions keep their status; one without deliveries stays ``routed``.
    """
    if submission.status not in ("routed", "delivered", "partially_failed", "failed"):
        return submission.status
    rows = session.execute(
        select(Delivery.destination, Delivery.seq, Delivery.status).where(
            Delivery.submission_id == submission.id, Delivery.status != "cancelled"
        )
    ).all()
    latest: dict[str, tuple[int, str]] = {}
    for destination, seq, status in rows:
        if destination not in latest or seq > latest[destination][0]:
            latest[destination] = (seq, status)
    counted = [status for _, status in latest.values()]
    if not counted or any(status not in TERMINAL for _, _, status in rows):
        new = "routed"
    elif all(s == "delivered" for s in counted):
        new = "delivered"
    elif not any(s == "delivered" for s in counted):
        new = "failed"
    else:
        new = "partially_failed"
    if new != submission.status:
        submission.status = new
        submission.updated_at = now
    return new


def release(row: Delivery, status: str, *, now: datetime) -> None:
    """Move a delivery to ``status`` and drop any worker's lease on it."""
    row.status = status
    row.lease_owner = None
    row.lease_until = None
    row.updated_at = now


def audit_delivery(
    session: Session,
    row: Delivery,
    *,
    actor: str,
    action: str,
    outcome: str,
    person_ref: str | None,
    detail: dict[str, Any],
    at: datetime,
) -> None:
    """Append the audit event of one step of a delivery (its tenant, the person concerned)."""
    audit.append(
        session,
        actor=actor,
        action=action,
        entity_type="delivery",
        entity_id=row.id,
        outcome=outcome,
        tenant_id=row.tenant_id,
        person_ref=person_ref,
        detail=detail,
        at=at,
    )


def _dead_letter(session: Session, row: Delivery, *, now: datetime, actor: str, reason: str) -> None:
    sub = _lock_submission(session, row.submission_id)
    release(row, "dead", now=now)
    row.last_error = reason
    session.flush()
    audit_delivery(
        session,
        row,
        actor=actor,
        action="dead_lettered",
        outcome="failure",
        person_ref=sub.person_ref if sub is not None else None,
        detail={"destination": row.destination, "attempts": row.attempt_count, "reason": reason},
        at=now,
    )
    if sub is not None:
        refresh_submission_status(session, sub, now=now)


def _send(claim: _Claim) -> tuple[str, Receipt | None, str | None]:
    """Call the connector; returns (outcome, receipt, error text). Never raises."""
    try:
        receipt = claim.connector.send(claim.envelope)
    except PermanentError as exc:
        return "permanent", None, f"PermanentError: {exc}"[:2000]
    except TransientError as exc:
        return "transient", None, f"TransientError: {exc}"[:2000]
    except Exception as exc:
        # A connector bug or an unwrapped library error: retried like a transient failure; only
        # the type is kept, since the message of an arbitrary exception may quote the content.
        _log.warning(
            "connector_unexpected_error",
            delivery_id=claim.delivery_id,
            connector=claim.connector_name,
            error_type=type(exc).__name__,
        )
        return "transient", None, f"unexpected {type(exc).__name__} in connector"
    if not isinstance(receipt, Receipt):
        return "transient", None, f"connector returned {type(receipt).__name__}, not a Receipt"
    return "success", receipt, None


def _record(
    session: Session,
    claim: _Claim,
    *,
    worker_id: str,
    outcome: str,
    receipt: Receipt | None,
    error: str | None,
    now: datetime,
    max_attempts: int,
    backoff: Backoff,
) -> DeliveryOutcome:
    actor = f"worker:{worker_id}"
    attempt = session.get(Attempt, claim.attempt_id)
    row = session.get(Delivery, claim.delivery_id)
    if attempt is None or row is None:  # deleted under us: nothing sensible to record
        return DeliveryOutcome(claim.delivery_id, "lease_lost", claim.attempt_number, error)
    sub = _lock_submission(session, row.submission_id)
    session.refresh(row)
    attempt.finished_at = now
    attempt.outcome = outcome
    attempt.error = error
    attempt.remote_id = receipt.remote_id if receipt is not None else None
    if row.status != "in_flight" or row.lease_owner != worker_id:
        # Our lease expired and another worker took the delivery over (or an operator changed it):
        # the newer state wins; our attempt stays on record.
        attempt.error = ((error or "") + " [lease lost before the outcome was recorded]").strip()
        _log.warning("delivery_lease_lost", delivery_id=row.id, worker=worker_id, outcome=outcome)
        return DeliveryOutcome(row.id, "lease_lost", claim.attempt_number, error)
    person_ref = sub.person_ref if sub is not None else None
    common: dict[str, Any] = {"destination": row.destination, "attempt": claim.attempt_number}
    if outcome == "success":
        assert receipt is not None
        release(row, "delivered", now=now)
        row.remote_id = receipt.remote_id
        row.delivered_at = now
        row.last_error = None
        session.flush()
        audit_delivery(
            session, row, actor=actor, action="attempt", outcome="success", person_ref=person_ref, detail=common, at=now
        )
        audit_delivery(
            session,
            row,
            actor=actor,
            action="delivered",
            outcome="success",
            person_ref=person_ref,
            detail={**common, "remote_id": receipt.remote_id},
            at=now,
        )
        DELIVERY_LATENCY.labels(claim.document_type, claim.connector_name).observe(
            max(0.0, (now - claim.submission_created_at).total_seconds())
        )
        result = DeliveryOutcome(row.id, "delivered", claim.attempt_number, remote_id=receipt.remote_id)
    else:
        audit_delivery(
            session,
            row,
            actor=actor,
            action="attempt",
            outcome="failure",
            person_ref=person_ref,
            detail={**common, "kind": outcome, "error": error},
            at=now,
        )
        if outcome == "permanent" or row.attempt_count >= max_attempts:
            reason = error if outcome == "permanent" else f"{row.attempt_count} attempts (max {max_attempts}): {error}"
            _dead_letter(session, row, now=now, actor=actor, reason=reason or "failed")
            result = DeliveryOutcome(row.id, "dead", claim.attempt_number, error)
        else:
            release(row, "pending", now=now)
            row.next_attempt_at = now + timedelta(seconds=backoff.delay(row.attempt_count))
            row.last_error = error
            result = DeliveryOutcome(
                row.id, "pending", claim.attempt_number, error, next_attempt_at=row.next_attempt_at
            )
    session.flush()
    if sub is not None:
        refresh_submission_status(session, sub, now=now)
    return result


def backoff_from(settings: Settings, *, rng: Callable[[], float] | None = None) -> Backoff:
    if rng is None:
        return Backoff(base_seconds=settings.backoff_base_seconds, max_seconds=settings.backoff_max_seconds)
    return Backoff(base_seconds=settings.backoff_base_seconds, max_seconds=settings.backoff_max_seconds, rng=rng)


def deliver_next(
    runtime: Runtime,
    *,
    worker_id: str,
    clock: Callable[[], datetime] = _utcnow,
    backoff: Backoff | None = None,
) -> DeliveryOutcome | None:
    """Claim one due delivery, send it (outside any transaction) and record the outcome.

    Only deliveries to destinations configured in this process are claimed. Returns None when
    nothing was due. ``clock`` gives "now" (injectable so tests need not sleep); it is read once
    for the claim and once after the send. ``backoff`` defaults to the settings' values.
    """
    settings = runtime.settings
    backoff = backoff or backoff_from(settings)
    options: dict[str, Mapping[str, Any]] = {}
    if runtime.routing is not None:
        options = {n: d.options for n, d in runtime.routing.config.destinations.items()}
    with runtime.session_factory() as session, session.begin():
        claim = _claim(
            session,
            worker_id=worker_id,
            now=clock(),
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            destinations=runtime.destinations,
            options=options,
            keyring=runtime.keyring,
        )
    if claim is None:
        return None
    started = time.perf_counter()
    outcome, receipt, error = _send(claim)
    ATTEMPTS.labels(claim.connector_name, outcome).inc()
    _log.info(
        "delivery_attempt",
        delivery_id=claim.delivery_id,
        connector=claim.connector_name,
        attempt=claim.attempt_number,
        outcome=outcome,
        seconds=round(time.perf_counter() - started, 3),
    )
    with runtime.session_factory() as session, session.begin():
        return _record(
            session,
            claim,
            worker_id=worker_id,
            outcome=outcome,
            receipt=receipt,
            error=error,
            now=clock(),
            max_attempts=settings.max_attempts,
            backoff=backoff,
        )


def advisory_series_lock(session: Session, series_key: str) -> None:
    """Serialise writers of one series on PostgreSQL (SQLite already serialises every writer)."""
    if _is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": series_key})
