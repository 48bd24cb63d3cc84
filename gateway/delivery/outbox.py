"""The outbox: the one owner of delivery rows.

Every change of a delivery's state goes through this module: enqueue (pipeline, replay),
claim (returns an ownership token), extend (lease heartbeat), finish (a conditional update on
that token), acknowledge (a receipt arriving later), expire overdue receipts, dead-letter,
retry, replay, cancel, and the submission status derived from its deliveries.

States (docs/delivery.md)::

    pending --claim--> in_flight --Receipt delivered-------------------------> delivered
       ^                   |------Receipt sent (relay accepted)--> sent --ack--> delivered | failed
       |                   |                                         '--no receipt in time--> unconfirmed
       |                   |------TransientError, attempts left----> pending (backoff)
       |                   |------PermanentError / attempts used---> dead
       |                   |------could not prepare (infra fault)--> pending (backoff, no attempt used up)
       |                   '------lease expired (worker died)------> claimable again (attempt abandoned)
       '--- retry (operator): dead | failed | unconfirmed ;  pending --cancel--> cancelled

**Ownership token.** ``claim`` sets ``lease_owner`` and increments ``attempt_count``; the pair
(owner, attempt_count) is the token. ``extend`` and ``finish`` are conditional updates on it: a
worker whose lease lapsed and was taken over can neither extend nor finish; its late outcome is
recorded on its attempt and audited as ``lease_lost``, never written over the newer state.

**Ordering.** A delivery is claimable only when every delivery of the same series to the same
destination with a smaller ``seq`` has ended (delivered, failed, dead, cancelled or
unconfirmed): ``sent`` still blocks, so a newer version never reaches a destination before the
receipt of the older one (or its timeout). Retry and replay refuse to put an older version after
a newer one the destination holds or will receive (queued, in flight or awaiting its receipt);
both check under the series' advisory lock, so a concurrent retry, replay or enqueue cannot slip
a newer version in between.

**One lock order everywhere:** delivery rows (by id), then the submission, then the series'
advisory lock, then the audit chain head (every audit append comes after the row locks).
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import DateTime, String, Table, and_, bindparam, exists, func, literal, select, text, update
from sqlalchemy.orm import Session, aliased, defer

from connectors.base import Acknowledgement, HeldVersion, Receipt
from gateway import audit, wakeup
from gateway.errors import Conflict, NotFound, TooManyRequests
from gateway.storage.models import Attempt, AuditEvent, Delivery, Rendition, Submission
from gateway.storage.models import Receipt as ReceiptRow

__all__ = [
    "ENDED",
    "RETRYABLE",
    "ClaimToken",
    "Finished",
    "acknowledge",
    "advisory_series_lock",
    "as_utc",
    "cancel_submission",
    "claim",
    "dead_letter",
    "enqueue",
    "expire_receipts",
    "extend",
    "finish",
    "held_versions",
    "refresh_submission_status",
    "replay_submission",
    "retry_delivery",
]

# a delivery in one of these no longer holds back the next version of its series
ENDED: tuple[str, ...] = ("delivered", "failed", "dead", "cancelled", "unconfirmed")
# an operator may send these again
RETRYABLE: tuple[str, ...] = ("dead", "failed", "unconfirmed")

_log = structlog.get_logger(__name__)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything the gateway stores is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def advisory_series_lock(session: Session, series_key: str) -> None:
    """Serialise writers of one series on PostgreSQL (SQLite already serialises every writer)."""
    if _is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": series_key})


def _lock_deliveries(session: Session, *conditions: Any) -> list[Delivery]:
    """Delivery rows matching ``conditions``, locked in id order (the first step of the lock order)."""
    query = select(Delivery).where(*conditions).order_by(Delivery.id).execution_options(populate_existing=True)
    if _is_postgres(session):
        query = query.with_for_update()
    return list(session.scalars(query).all())


def _lock_delivery(session: Session, delivery_id: str) -> Delivery | None:
    rows = _lock_deliveries(session, Delivery.id == delivery_id)
    return rows[0] if rows else None


def _lock_submission(session: Session, submission_id: str) -> Submission | None:
    query = select(Submission).where(Submission.id == submission_id).execution_options(populate_existing=True)
    if _is_postgres(session):
        query = query.with_for_update()
    return session.scalars(query).first()


def _release(row: Delivery, status: str, *, now: datetime) -> None:
    row.status = status
    row.lease_owner = None
    row.lease_until = None
    row.updated_at = now


def _audit(
    session: Session,
    row: Delivery,
    *,
    actor: str,
    action: str,
    outcome: str,
    person_ref: str | None,
    detail: dict[str, Any],
    at: datetime,
    peer: Mapping[str, Any] | None = None,
) -> None:
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
        peer=peer,
    )


def _audit_abandoned(
    session: Session, row: Delivery, abandoned: Sequence[Attempt], *, actor: str, person_ref: str | None, at: datetime
) -> None:
    """One ``attempt_abandoned`` event per attempt a dead worker left open (the peer may have it)."""
    for gone in abandoned:
        _audit(
            session,
            row,
            actor=actor,
            action="attempt_abandoned",
            outcome="failure",
            person_ref=person_ref,
            detail={"destination": row.destination, "attempt": gone.number, "worker": gone.worker},
            at=at,
        )


# -- status of a submission ---------------------------------------------------------------------
_DELIVERIES = cast(Table, Delivery.__table__)
# built once (building a statement per call costs more CPU than running it)
_SUBMISSION_DELIVERIES = select(_DELIVERIES.c.destination, _DELIVERIES.c.seq, _DELIVERIES.c.status).where(
    _DELIVERIES.c.submission_id == bindparam("submission_id"), _DELIVERIES.c.status != "cancelled"
)
_LAST_SEQ = select(func.max(_DELIVERIES.c.seq)).where(_DELIVERIES.c.series_key == bindparam("series_key"))


# the statuses of a submission that its deliveries decide
_DERIVED = ("routed", "delivered", "partially_failed", "failed")


def _derived_status(current: str, deliveries: Sequence[tuple[str, int, str]]) -> str:
    """A submission's status from its deliveries that are not cancelled, ``(destination, seq,
    status)`` (:func:`refresh_submission_status`)."""
    if current not in _DERIVED:
        return current
    latest: dict[str, tuple[int, str]] = {}
    for destination, seq, status in deliveries:
        if destination not in latest or seq > latest[destination][0]:
            latest[destination] = (seq, status)
    counted = [status for _, status in latest.values()]
    if not counted or any(status not in ENDED for _, _, status in deliveries):
        return "routed"
    if all(s == "delivered" for s in counted):
        return "delivered"
    if not any(s == "delivered" for s in counted):
        return "failed"
    return "partially_failed"


def refresh_submission_status(session: Session, submission: Submission, *, now: datetime) -> str:
    """Derive a routed submission's status from its deliveries (call with the submission locked).

    Cancelled deliveries do not count. Any pending, in flight or sent: ``routed``. All ended:
    each destination's latest delivery decides (a replay supersedes the earlier ones):
    ``delivered`` when all are delivered, ``failed`` when none is, else ``partially_failed``
    (an ``unconfirmed`` delivery, whose receipt never came, is not delivered). Cancelled and
    rejected submissions keep their status; one without deliveries stays ``routed``.
    """
    if submission.status not in _DERIVED:
        return submission.status
    session.flush()  # what the caller changed is read back (a Core statement does not autoflush)
    rows = session.connection().execute(_SUBMISSION_DELIVERIES, {"submission_id": submission.id}).all()
    new = _derived_status(submission.status, [(r.destination, r.seq, r.status) for r in rows])
    if new != submission.status:
        submission.status = new
        submission.updated_at = now
    return new


# -- enqueue ------------------------------------------------------------------------------------
def enqueue(
    session: Session,
    *,
    submission_id: str,
    tenant_id: str,
    series: str,
    destinations: Sequence[tuple[str, str]],
    now: datetime,
) -> list[Delivery]:
    """One pending delivery per (destination, connector), next in the series.

    Takes the series' advisory lock (call after locking the submission, before any audit
    append). The sequence number comes from the ``(series_key, seq)`` index. The rows returned
    are detached (not in the session): what was written, to read; load a row to change it.
    """
    advisory_series_lock(session, series)
    session.flush()  # as the ORM's autoflush would
    connection = session.connection()
    last = connection.execute(_LAST_SEQ, {"series_key": series}).scalar() or 0
    values = [
        {
            "id": str(uuid.uuid4()),
            "submission_id": submission_id,
            "tenant_id": tenant_id,
            "destination": name,
            "connector": connector,
            "series_key": series,
            "seq": last + 1,
            "status": "pending",
            "next_attempt_at": now,
            "attempt_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        for name, connector in destinations
    ]
    if values:
        # a Core insert (one executemany), cheaper than the ORM's unit of work for rows only written
        connection.execute(_DELIVERIES.insert(), values)
    # returned detached (not in the session), as written: load them to change them
    return [Delivery(**value) for value in values]


# A newer version in one of these is (or will be) at the destination before an older one sent
# now: queued (a replay would go after it; a retry could be overtaken by its claim), being sent,
# awaiting its receipt, or held. Only dead, failed and cancelled ones never reach it.
_NEWER_BLOCKS: tuple[str, ...] = ("pending", "in_flight", "sent", "delivered", "unconfirmed")


def _newer_version_held(session: Session, row: Delivery) -> bool:
    """Does the destination hold, or is it about to receive, a newer version of this delivery's series?

    Call under the series' advisory lock (:func:`advisory_series_lock`): only retry and enqueue
    move a newer version into one of the blocking states, and both take it.
    """
    found = session.scalars(
        select(Delivery.id)
        .where(
            Delivery.destination == row.destination,
            Delivery.series_key == row.series_key,
            Delivery.seq > row.seq,
            Delivery.status.in_(_NEWER_BLOCKS),
            Delivery.submission_id != row.submission_id,  # a replay of the same document is no newer version
        )
        .limit(1)
    ).first()
    return found is not None


# -- claim --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimToken:
    """Proof of ownership of one delivery for one attempt (see the module docstring)."""

    delivery_id: str
    owner: str
    attempt: int  # the delivery's attempt_count after this claim: the fencing number
    attempt_id: str
    lease_until: datetime


def _lit(value: str) -> Any:
    """A constant rendered into the SQL text, not bound: the planner then proves a partial index's
    predicate (``status = 'pending'``) even in a generic (prepared) plan."""
    return literal(value, literal_execute=True)


# the complement of ENDED: what still holds back the next version of a series
OPEN: tuple[str, ...] = ("pending", "in_flight", "sent")


_TIMESTAMP = DateTime(timezone=True)


def _claimable(*, expired: bool) -> tuple[Any, Any]:
    """Expired leases (work of a dead worker), or pending deliveries that are due, in due order.

    Each query walks a partial index in its ORDER BY (``ix_deliveries_lease``,
    ``ix_deliveries_pending_due``) and stops at the first rows it can lock, and "an earlier
    version is still open" is a probe of ``ix_deliveries_open_series``: the cost does not grow
    with the table, with or without planner statistics (tests/gateway/test_plans_at_scale.py).
    Bound parameters: ``now`` and ``destinations`` (expanding).
    """
    cand = aliased(Delivery)
    earlier = aliased(Delivery)
    blocked = exists().where(
        and_(
            earlier.destination == cand.destination,
            earlier.series_key == cand.series_key,
            earlier.seq < cand.seq,
            earlier.status.in_([_lit(s) for s in OPEN]),
        )
    )
    now = bindparam("now", type_=_TIMESTAMP)
    query: Any
    if expired:
        query = select(cand).where(cand.status == _lit("in_flight"), cand.lease_until <= now)
        query = query.order_by(cand.lease_until)
    else:
        query = select(cand.id).where(cand.status == _lit("pending"), cand.next_attempt_at <= now)
        query = query.order_by(cand.next_attempt_at, cand.seq)
    destinations = bindparam("destinations", expanding=True, type_=String())
    return query.where(cand.destination.in_(destinations)).where(~blocked).limit(1), cand


@functools.cache
def _claim_statements(postgres: bool) -> tuple[Any, Any]:
    """The two claim statements, built once per dialect (building the aliased queries costs more
    CPU than running them); executed with ``now``, ``destinations``, ``worker_id`` and
    ``lease_until`` bound.

    1. expired leases, the rows locked (PostgreSQL: ``SKIP LOCKED``) and loaded;
    2. the common case, one statement: lease the first due pending delivery and read it back.
    """
    expired, cand = _claimable(expired=True)
    expired = expired.execution_options(populate_existing=True)
    if postgres:
        expired = expired.with_for_update(skip_locked=True, of=cand)
    pending, cand = _claimable(expired=False)
    if postgres:
        pending = pending.with_for_update(skip_locked=True, of=cand)
    lease = (
        update(Delivery)
        .where(Delivery.id == pending.scalar_subquery())
        .values(
            status="in_flight",
            lease_owner=bindparam("worker_id", type_=String(64)),
            lease_until=bindparam("lease_until", type_=_TIMESTAMP),
            attempt_count=Delivery.attempt_count + 1,
            updated_at=bindparam("now", type_=_TIMESTAMP),
        )
        .returning(Delivery)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    return expired, lease


@dataclass(frozen=True)
class Claimed:
    token: ClaimToken
    row: Delivery
    submission: Submission | None = None


@dataclass(frozen=True)
class Ended:
    """The claim found work but ended it instead (an expired lease with no attempt left)."""

    delivery_id: str
    status: str
    reason: str


def claim(
    session: Session,
    *,
    worker_id: str,
    now: datetime,
    lease_seconds: float,
    max_attempts: int,
    destinations: Collection[str],
    prepare: Callable[[Claimed], None] | None = None,
    expired_first: bool = True,
) -> Claimed | Ended | None:
    """Inside one transaction: lease one due delivery and open its attempt.

    A lease that expired (its worker died) is taken over: the dead worker's attempt is closed as
    ``abandoned`` and audited (the send may have reached the peer). Returns :class:`Ended` when
    the only work found was dead-lettering such a delivery (no attempt left), None when idle.

    ``prepare(claimed)`` runs in the same transaction once the delivery is leased, before the
    audit events are appended (the chain head is the last lock taken): the engine reads what
    the send needs there, saving a transaction and a re-read of the rows.

    ``expired_first=False`` looks for an expired lease only when no pending delivery is due (one
    statement instead of two per claim under load); the engine asks for it first every few
    seconds, so a dead worker's delivery never waits behind a busy queue for long.
    """
    names = sorted(destinations)
    if not names:
        return None
    postgres = _is_postgres(session)
    common: dict[str, Any] = {
        "worker_id": worker_id,
        "now": now,
        "lease_seconds": lease_seconds,
        "max_attempts": max_attempts,
        "prepare": prepare,
    }
    # PostgreSQL: lock the row, skipping rows other workers hold. SQLite: the transaction holds
    # the database write lock (BEGIN IMMEDIATE), so the row read is the row written.
    expired, lease = _claim_statements(postgres)
    params = {"now": now, "destinations": names}
    if expired_first:
        row = session.scalars(expired, params).first()
        if row is not None:
            return _take(session, row, **common)
    leased = session.scalars(
        lease, {**params, "worker_id": worker_id, "lease_until": now + timedelta(seconds=lease_seconds)}
    ).first()
    if leased is not None:
        return _opened(session, leased, [], **common)
    if not expired_first:
        row = session.scalars(expired, params).first()
        if row is not None:
            return _take(session, row, **common)
    return None


def _take(
    session: Session,
    row: Delivery,
    *,
    worker_id: str,
    now: datetime,
    lease_seconds: float,
    max_attempts: int,
    prepare: Callable[[Claimed], None] | None,
) -> Claimed | Ended:
    """Lease ``row`` (locked by the caller: the claim's ``FOR UPDATE``, or SQLite's write lock)."""
    actor = f"worker:{worker_id}"
    abandoned: list[Attempt] = []
    if row.status == "in_flight":
        abandoned = [a for a in row.attempts if a.outcome == "started"]
        for attempt in abandoned:
            attempt.outcome = "abandoned"
            attempt.finished_at = now
            attempt.error = "lease expired before the outcome was recorded (worker gone); the peer may have it"
        if row.attempt_count >= max_attempts:
            reason = f"lease expired after {row.attempt_count} attempts (max {max_attempts})"
            dead_letter(session, row, now=now, actor=actor, reason=reason, abandoned=abandoned)
            return Ended(row.id, "dead", reason)
    row.status = "in_flight"
    row.lease_owner = worker_id
    row.lease_until = now + timedelta(seconds=lease_seconds)
    row.attempt_count = row.attempt_count + 1
    row.updated_at = now
    return _opened(
        session,
        row,
        abandoned,
        worker_id=worker_id,
        now=now,
        lease_seconds=lease_seconds,
        max_attempts=max_attempts,
        prepare=prepare,
    )


_INSERT_ATTEMPT = cast(Table, Attempt.__table__).insert()
# what a delivery reads of its submission: not the stored record nor the pipeline's report
# (loaded only if accessed), which it never needs
_SUBMISSION_READ = (defer(Submission.payload_ct), defer(Submission.report))


def _opened(
    session: Session,
    row: Delivery,
    abandoned: Sequence[Attempt],
    *,
    worker_id: str,
    now: datetime,
    lease_seconds: float,
    max_attempts: int,
    prepare: Callable[[Claimed], None] | None,
) -> Claimed:
    """``row`` is leased to ``worker_id``: open its attempt, let ``prepare`` read, then audit."""
    actor = f"worker:{worker_id}"
    attempt_id = str(uuid.uuid4())
    session.flush()  # the lease (an expired one is taken over through the ORM) before its attempt
    # a Core insert: the attempt is only written here (finish reads it back by id)
    session.connection().execute(
        _INSERT_ATTEMPT,
        {
            "id": attempt_id,
            "delivery_id": row.id,
            "number": row.attempt_count,
            "worker": worker_id,
            "started_at": now,
            "outcome": "started",
        },
    )
    sub = session.get(Submission, row.submission_id, options=_SUBMISSION_READ)
    token = ClaimToken(
        delivery_id=row.id,
        owner=worker_id,
        attempt=row.attempt_count,
        attempt_id=attempt_id,
        lease_until=now + timedelta(seconds=lease_seconds),
    )
    claimed = Claimed(token=token, row=row, submission=sub)
    if prepare is not None:
        prepare(claimed)
    person_ref = sub.person_ref if sub is not None else None
    _audit_abandoned(session, row, abandoned, actor=actor, person_ref=person_ref, at=now)
    # the disclosure starts now: audited before any byte leaves
    _audit(
        session,
        row,
        actor=actor,
        action="send_started",
        outcome="success",
        person_ref=person_ref,
        detail={"destination": row.destination, "attempt": row.attempt_count},
        at=now,
    )
    return claimed


def _owned(token: ClaimToken) -> Any:
    return and_(
        Delivery.id == token.delivery_id,
        Delivery.status == "in_flight",
        Delivery.lease_owner == token.owner,
        Delivery.attempt_count == token.attempt,
    )


def extend(session: Session, token: ClaimToken, *, until: datetime, now: datetime) -> bool:
    """Push the lease to ``until`` if the token still owns the delivery (the heartbeat)."""
    done = session.execute(
        update(Delivery)
        .where(_owned(token))
        .values(lease_until=until, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1  # type: ignore[attr-defined,no-any-return]


_RENDITIONS = cast(Table, Rendition.__table__)
_HELD = (
    select(
        _RENDITIONS.c.kind,
        _RENDITIONS.c.set_id,
        _RENDITIONS.c.version,
        _RENDITIONS.c.document_id,
        _DELIVERIES.c.remote_id,
    )
    .join(_DELIVERIES, _DELIVERIES.c.submission_id == _RENDITIONS.c.submission_id)
    .where(
        _DELIVERIES.c.destination == bindparam("destination"),
        _DELIVERIES.c.series_key == bindparam("series_key"),
        _DELIVERIES.c.seq < bindparam("seq"),
        _DELIVERIES.c.status == "delivered",
        _DELIVERIES.c.submission_id != bindparam("submission_id"),
    )
)


def held_versions(session: Session, row: Delivery) -> dict[str, HeldVersion]:
    """Per set_id, the newest version of this delivery's series that *its destination* acknowledged.

    Only deliveries ``delivered`` to the same destination count: a version that was cancelled,
    dead-lettered, refused by routing or still unacknowledged there is not held by it.
    """
    params = {
        "destination": row.destination,
        "series_key": row.series_key,
        "seq": row.seq,
        "submission_id": row.submission_id,
    }
    held: dict[str, HeldVersion] = {}
    session.flush()  # as the ORM's autoflush would
    for kind, set_id, version, document_id, remote_id in session.connection().execute(_HELD, params).all():
        current = held.get(set_id)
        if current is None or version > current.version:
            held[set_id] = HeldVersion(
                kind=kind, set_id=set_id, version=version, document_id=document_id, remote_id=remote_id
            )
    return held


# -- finish -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finished:
    """What :func:`finish` did."""

    delivery_id: str
    status: str  # delivered | sent | pending | dead | lease_lost
    attempt: int
    error: str | None = None
    next_attempt_at: datetime | None = None
    remote_id: str | None = None


_ATTEMPTS = cast(Table, Attempt.__table__)
_SUBMISSION_ROWS = cast(Table, Submission.__table__)


@functools.cache
def _finish_statement(postgres: bool) -> Any:
    """What :func:`finish` locks and reads first, in one statement built once per dialect
    (executed with ``delivery_id`` and ``attempt_id`` bound): the delivery and its submission,
    locked (in that order: the rows of one joined tuple are locked in FROM order), and the
    token's attempt (which only the delivery's lock holder changes). Plain Core rows: no ORM
    object is made for rows this step only reads and updates."""
    d, s, a = _DELIVERIES, _SUBMISSION_ROWS, _ATTEMPTS
    query = (
        select(
            d.c.id,
            d.c.tenant_id,
            d.c.destination,
            d.c.submission_id,
            d.c.status,
            d.c.lease_owner,
            d.c.attempt_count,
            s.c.status.label("submission_status"),
            s.c.person_ref,
            a.c.id.label("attempt_id"),
            a.c.started_at,
        )
        .select_from(
            d.join(s, s.c.id == d.c.submission_id).outerjoin(
                a, and_(a.c.id == bindparam("attempt_id", type_=String()), a.c.delivery_id == d.c.id)
            )
        )
        .where(d.c.id == bindparam("delivery_id", type_=String()))
    )
    if postgres:
        query = query.with_for_update(of=[d, s])
    return query


_UPDATE_DELIVERY = _DELIVERIES.update().where(_DELIVERIES.c.id == bindparam("delivery_id", type_=String()))
_UPDATE_ATTEMPT = _ATTEMPTS.update().where(_ATTEMPTS.c.id == bindparam("attempt_id", type_=String()))
# PostgreSQL: the attempt's update rides along the delivery's, as a data-modifying WITH (run once,
# to completion, whether or not the outer statement reads it): one round trip instead of two. Its
# values are bound under their own names (``attempt_*``), the delivery's under the column names.
_ATTEMPT_DONE = (
    _ATTEMPTS.update()
    .where(_ATTEMPTS.c.id == bindparam("attempt_id", type_=String()))
    .values(
        finished_at=bindparam("attempt_finished_at"),
        outcome=bindparam("attempt_outcome"),
        error=bindparam("attempt_error"),
        remote_id=bindparam("attempt_remote_id"),
    )
    .returning(_ATTEMPTS.c.id)
    .cte("attempt_done")
)
# (no parameter named as a column of attempts: the WITH's SET would take it too)
_UPDATE_DELIVERY_AND_ATTEMPT = (
    _DELIVERIES.update()
    .where(_DELIVERIES.c.id == bindparam("finished_delivery", type_=String()))
    .add_cte(_ATTEMPT_DONE)
)
_UPDATE_SUBMISSION_STATUS = (
    _SUBMISSION_ROWS.update()
    .where(_SUBMISSION_ROWS.c.id == bindparam("submission_id", type_=String()))
    .values(status=bindparam("new_status", type_=String()), updated_at=bindparam("updated_at", type_=_TIMESTAMP))
)


def finish(
    session: Session,
    token: ClaimToken,
    *,
    outcome: str,
    receipt: Receipt | None,
    error: str | None,
    now: datetime,
    max_attempts: int,
    backoff: Callable[[int], float],
    receipt_timeout_seconds: float,
) -> Finished:
    """Record one attempt's outcome, only if ``token`` still owns the delivery.

    ``outcome``: ``success`` (with ``receipt``), ``transient``, ``permanent``, or ``deferred``
    (the gateway could not prepare the send: an infrastructure fault, retried with backoff
    without using up the delivery's attempts). ``backoff(n)`` is the delay after the n-th attempt.

    Plain Core statements on the session's connection, no ORM object: the rows locked and read,
    the delivery and the attempt updated, the submission's deliveries read and its status
    updated when it changes, then the audit events.
    """
    actor = f"worker:{token.owner}"
    session.flush()  # the caller's pending changes first (Core statements do not autoflush)
    connection = session.connection()
    row = connection.execute(
        _finish_statement(_is_postgres(session)), {"delivery_id": token.delivery_id, "attempt_id": token.attempt_id}
    ).first()
    if row is None or row.attempt_id is None:  # deleted under us: nothing sensible to record
        return Finished(token.delivery_id, "lease_lost", token.attempt, error)
    person_ref = row.person_ref
    attempt_values: dict[str, Any] = {
        "finished_at": now,
        "outcome": outcome,
        "error": error,
        "remote_id": receipt.remote_id if receipt is not None else None,
    }
    common: dict[str, Any] = {"destination": row.destination, "attempt": token.attempt}
    peer: dict[str, Any] = {}
    if receipt is not None and receipt.remote_id is not None:
        peer["remote_id"] = receipt.remote_id
    if error:
        peer["error"] = error

    def append(actions: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        audit.append_many(
            session,
            [
                audit.Entry(
                    actor=actor,
                    action=action,
                    entity_type="delivery",
                    entity_id=row.id,
                    outcome=result_outcome,
                    tenant_id=row.tenant_id,
                    person_ref=person_ref,
                    detail=detail,
                    at=now,
                    peer=peer,
                )
                for action, result_outcome, detail in actions
            ],
        )

    owned = row.status == "in_flight" and row.lease_owner == token.owner and row.attempt_count == token.attempt
    if not owned:
        # Our lease lapsed and another worker took the delivery over (or an operator changed it):
        # the newer state wins; our attempt and its outcome stay on record, audited.
        attempt_values["error"] = ((error or "") + " [lease lost before the outcome was recorded]").strip()
        connection.execute(_UPDATE_ATTEMPT, {"attempt_id": token.attempt_id, **attempt_values})
        append([("lease_lost", "failure", {**common, "outcome": outcome, "current_status": row.status})])
        _log.warning("delivery_lease_lost", delivery_id=row.id, worker=token.owner, outcome=outcome)
        return Finished(row.id, "lease_lost", token.attempt, error)
    released: dict[str, Any] = {"lease_owner": None, "lease_until": None, "updated_at": now}
    values: dict[str, Any]
    if outcome == "success":
        assert receipt is not None
        remote_id = receipt.remote_id[:255] if receipt.remote_id else None
        values = {**released, "remote_id": remote_id, "last_error": None}
        if receipt.status == "sent":
            values.update(
                status="sent",
                ack_ref=(receipt.ack_ref or "")[:255],
                sent_at=now,
                receipt_due_at=now + timedelta(seconds=receipt_timeout_seconds),
            )
            result = Finished(row.id, "sent", token.attempt, remote_id=remote_id)
            actions = [("attempt", "success", common), ("sent", "success", {**common, "awaiting": "receipt"})]
        else:
            values.update(status="delivered", delivered_at=now)
            result = Finished(row.id, "delivered", token.attempt, remote_id=remote_id)
            actions = [("attempt", "success", common), ("delivered", "success", common)]
    elif outcome == "deferred":
        due = now + timedelta(seconds=backoff(max(1, token.attempt)))
        values = {**released, "status": "pending", "next_attempt_at": due, "last_error": error}
        result = Finished(row.id, "pending", token.attempt, error, next_attempt_at=due)
        actions = [("attempt", "failure", {**common, "kind": "deferred"})]
    else:
        actions = [("attempt", "failure", {**common, "kind": outcome})]
        attempts = row.attempt_count
        if outcome == "permanent" or attempts >= max_attempts:
            reason = error if outcome == "permanent" else f"{attempts} attempts (max {max_attempts}): {error}"
            values = {**released, "status": "dead", "last_error": reason or "failed"}
            peer["reason"] = values["last_error"]
            result = Finished(row.id, "dead", token.attempt, error)
            actions.append(("dead_lettered", "failure", {**common, "attempts": attempts}))
        else:
            due = now + timedelta(seconds=backoff(attempts))
            values = {**released, "status": "pending", "next_attempt_at": due, "last_error": error}
            result = Finished(row.id, "pending", token.attempt, error, next_attempt_at=due)
    if _is_postgres(session):
        attempt_params = {f"attempt_{key}": value for key, value in attempt_values.items()}
        connection.execute(
            _UPDATE_DELIVERY_AND_ATTEMPT,
            {"finished_delivery": row.id, "attempt_id": token.attempt_id, **attempt_params, **values},
        )
    else:
        connection.execute(_UPDATE_DELIVERY, {"delivery_id": row.id, **values})
        connection.execute(_UPDATE_ATTEMPT, {"attempt_id": token.attempt_id, **attempt_values})
    # the submission's status, from its deliveries read now, in a statement of its own: one
    # begun after the submission's lock was granted sees what the lock's previous holder committed
    # (a statement that waited for the lock reads the other rows as they were when it began)
    new_status = row.submission_status
    if new_status in _DERIVED:
        deliveries = connection.execute(_SUBMISSION_DELIVERIES, {"submission_id": row.submission_id}).all()
        new_status = _derived_status(new_status, [(r.destination, r.seq, r.status) for r in deliveries])
    if new_status != row.submission_status:
        connection.execute(
            _UPDATE_SUBMISSION_STATUS, {"submission_id": row.submission_id, "new_status": new_status, "updated_at": now}
        )
    append(actions)
    if result.status == "sent":
        _apply_early_receipts(
            session, row.id, row.submission_id, since=as_utc(row.started_at), now=now, person_ref=person_ref
        )
    return result


def _apply_early_receipts(
    session: Session,
    delivery_id: str,
    submission_id: str,
    *,
    since: datetime,
    now: datetime,
    person_ref: str | None,
) -> None:
    """A receipt stored before the send was recorded (a fast peer) ends the delivery now.

    Only one received since this attempt was claimed: an unapplied receipt from before (a
    duplicate of an earlier attempt's receipt) says nothing about this send.
    """
    early = session.scalars(
        select(ReceiptRow)
        .where(
            ReceiptRow.delivery_id == delivery_id,
            ReceiptRow.applied.is_(False),
            ReceiptRow.outcome != "info",
            ReceiptRow.received_at >= since,
        )
        .order_by(ReceiptRow.received_at)
        .limit(1)
    ).first()
    if early is None:
        return
    # rare (a receipt faster than our record of the send): the rows, locked by finish, loaded to change
    row = session.get(Delivery, delivery_id, populate_existing=True)
    sub = session.get(Submission, submission_id, options=_SUBMISSION_READ, populate_existing=True)
    assert row is not None
    _apply_receipt(session, row, early, now=now, actor="gateway:receipts", person_ref=person_ref, sub=sub)


def dead_letter(
    session: Session,
    row: Delivery,
    *,
    now: datetime,
    actor: str,
    reason: str,
    abandoned: Sequence[Attempt] = (),
) -> None:
    """``row`` (already locked) goes to ``dead``; its submission's status follows; audited."""
    sub = _lock_submission(session, row.submission_id)
    _release(row, "dead", now=now)
    row.last_error = reason
    session.flush()
    if sub is not None:
        refresh_submission_status(session, sub, now=now)
    person_ref = sub.person_ref if sub is not None else None
    _audit_abandoned(session, row, abandoned, actor=actor, person_ref=person_ref, at=now)
    _audit(
        session,
        row,
        actor=actor,
        action="dead_lettered",
        outcome="failure",
        person_ref=person_ref,
        detail={"destination": row.destination, "attempts": row.attempt_count},
        at=now,
        peer={"reason": reason},
    )


# -- acknowledgements ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AckResult:
    """What one acknowledgement did: ``applied`` (moved a delivery), ``stored`` (kept, e.g. a
    duplicate or an ``info``), or ``unknown`` (no delivery has that ack_ref)."""

    result: str
    delivery_id: str | None = None
    status: str | None = None


def _apply_receipt(
    session: Session,
    row: Delivery,
    receipt: ReceiptRow,
    *,
    now: datetime,
    actor: str,
    person_ref: str | None,
    sub: Submission | None,
) -> bool:
    if receipt.outcome not in ("delivered", "failed") or row.status not in ("sent", "unconfirmed"):
        return False
    receipt.applied = True
    row.status = receipt.outcome
    row.updated_at = now
    row.receipt_due_at = None
    if receipt.outcome == "delivered":
        row.delivered_at = now
        row.last_error = None
        if receipt.remote_id and not row.remote_id:
            row.remote_id = receipt.remote_id[:255]
    else:
        row.last_error = f"{receipt.kind}: {receipt.reason or 'failed'}"
    session.flush()
    if sub is not None:
        refresh_submission_status(session, sub, now=now)
    _audit(
        session,
        row,
        actor=actor,
        action="delivered" if receipt.outcome == "delivered" else "receipt_failed",
        outcome="success" if receipt.outcome == "delivered" else "failure",
        person_ref=person_ref,
        detail={"destination": row.destination, "receipt": receipt.id, "kind": receipt.kind},
        at=now,
        peer={"remote_id": receipt.remote_id, "reason": receipt.reason},
    )
    return True


def acknowledge(
    session: Session,
    ack: Acknowledgement,
    *,
    tenant_id: str,
    now: datetime,
    actor: str,
    inbound_id: str | None = None,
    destinations: Collection[str] | None = None,
) -> AckResult:
    """Store a receipt and, when it ends a ``sent`` delivery, move it to delivered or failed.

    The delivery is found by ``ack_ref`` (what its :class:`Receipt` declared) or, for peers
    that echo the idempotency key, by its id; only within ``tenant_id`` (and ``destinations``
    when given: a source answers for its own destinations). A receipt for a delivery still in
    flight is stored and applied as soon as the send is recorded.
    """
    ref = ack.ack_ref[:255]
    scope = [Delivery.tenant_id == tenant_id]
    if destinations is not None:
        scope.append(Delivery.destination.in_(sorted(destinations)))
    rows = _lock_deliveries(session, (Delivery.ack_ref == ref) | (Delivery.id == ref), *scope)
    if not rows:
        return AckResult("unknown")
    row = rows[-1] if len(rows) == 1 else max(rows, key=lambda r: (r.seq, r.created_at))
    sub = _lock_submission(session, row.submission_id)
    person_ref = sub.person_ref if sub is not None else None
    stored = ReceiptRow(
        id=str(uuid.uuid4()),
        delivery_id=row.id,
        inbound_id=inbound_id,
        kind=ack.kind[:32],
        outcome=ack.outcome,
        remote_id=ack.remote_id[:255] if ack.remote_id else None,
        reason=ack.reason[:2000] if ack.reason else None,
        detail=dict(ack.detail) or None,
        applied=False,
        received_at=now,
    )
    session.add(stored)
    session.flush()
    if _apply_receipt(session, row, stored, now=now, actor=actor, person_ref=person_ref, sub=sub):
        return AckResult("applied", row.id, row.status)
    _audit(
        session,
        row,
        actor=actor,
        action="receipt",
        outcome="success",
        person_ref=person_ref,
        detail={"destination": row.destination, "receipt": stored.id, "kind": stored.kind, "status": row.status},
        at=now,
        peer={"outcome": ack.outcome, "remote_id": ack.remote_id, "reason": ack.reason},
    )
    return AckResult("stored", row.id, row.status)


def expire_receipts(session: Session, *, now: datetime, limit: int = 100) -> int:
    """``sent`` deliveries whose receipt is overdue become ``unconfirmed`` (an alert); audited.

    Up to ``limit`` in this transaction, in the one lock order: the overdue delivery rows first
    (``SKIP LOCKED`` on PostgreSQL: never waits, so their order does not matter), then their
    submissions by id, then the audit head for every event.
    """
    query = (
        select(Delivery)
        .where(Delivery.status == "sent", Delivery.receipt_due_at <= now)
        .order_by(Delivery.receipt_due_at)
        .limit(limit)
        .execution_options(populate_existing=True)
    )
    if _is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    rows = list(session.scalars(query).all())
    if not rows:
        return 0
    subs = {sub_id: _lock_submission(session, sub_id) for sub_id in sorted({r.submission_id for r in rows})}
    for row in rows:
        row.status = "unconfirmed"
        row.updated_at = now
        row.last_error = "no receipt before the configured time"
    session.flush()
    for sub in subs.values():
        if sub is not None:
            refresh_submission_status(session, sub, now=now)
    for row in rows:
        sub = subs.get(row.submission_id)
        _audit(
            session,
            row,
            actor="gateway:receipts",
            action="receipt_overdue",
            outcome="failure",
            person_ref=sub.person_ref if sub is not None else None,
            detail={
                "destination": row.destination,
                "sent_at": as_utc(row.sent_at).isoformat() if row.sent_at else None,
            },
            at=now,
        )
    return len(rows)


# -- operator actions ---------------------------------------------------------------------------
def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _owned_submission(session: Session, submission_id: str, tenant_id: str | None) -> Submission:
    sub = session.get(Submission, submission_id)
    if sub is None or (tenant_id is not None and sub.tenant_id != tenant_id):
        raise NotFound(f"submission {submission_id} not found")
    return sub


def retry_delivery(
    session: Session, *, delivery_id: str, actor: str, tenant_id: str | None, now: datetime | None = None
) -> Delivery:
    """A dead, failed or unconfirmed delivery goes back to ``pending``, due now; its attempts are kept."""
    now = _now(now)
    row = _lock_delivery(session, delivery_id)
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        raise NotFound(f"delivery {delivery_id} not found")
    sub = _lock_submission(session, row.submission_id)
    assert sub is not None
    if row.status not in RETRYABLE:
        raise Conflict(f"only a dead, failed or unconfirmed delivery can be retried (this one is {row.status})")
    if sub.status == "cancelled":
        raise Conflict("the submission was cancelled")
    advisory_series_lock(session, row.series_key)
    if _newer_version_held(session, row):
        # Sending this one now would put an older version after a newer one (ARCHITECTURE
        # "Delivery semantics"). Submit a new version instead.
        raise Conflict(
            "a newer version of this document was delivered to this destination or is queued or being "
            "sent there; retrying this older one would deliver it after the newer one"
        )
    previous_status = row.status
    _release(row, "pending", now=now)
    row.next_attempt_at = now
    row.ack_ref = None
    row.receipt_due_at = None
    session.flush()
    refresh_submission_status(session, sub, now=now)
    _audit(
        session,
        row,
        actor=actor,
        action="retried",
        outcome="success",
        person_ref=sub.person_ref,
        detail={"destination": row.destination, "attempts_so_far": row.attempt_count, "was": previous_status},
        at=now,
        peer={"last_error": row.last_error},
    )
    wakeup.notify_work(session)  # due now: the listening workers look at the commit
    return row


def replay_submission(
    session: Session,
    *,
    submission_id: str,
    actor: str,
    tenant_id: str | None,
    now: datetime | None = None,
    idempotency_key: str | None = None,
    min_interval_seconds: float = 0.0,
) -> Submission:
    """Send again: new deliveries of the same renditions to the same destinations.

    A rejected submission is instead run through the pipeline again, from its stored payload.
    Refused (409) while anything is still pending, in flight or sent; for a cancelled submission;
    and for a destination that already holds a newer version of the document (it would receive
    versions 1, 2, 1). The same ``idempotency_key`` returns the first replay without a new one;
    replays of one submission closer than ``min_interval_seconds`` are refused (429).
    """
    now = _now(now)
    _owned_submission(session, submission_id, tenant_id)
    deliveries = _lock_deliveries(session, Delivery.submission_id == submission_id)
    sub = _lock_submission(session, submission_id)
    assert sub is not None
    previous = list(
        session.scalars(
            select(AuditEvent)
            .where(AuditEvent.entity_type == "submission", AuditEvent.entity_id == sub.id)
            .where(AuditEvent.action == "replayed")
            .order_by(AuditEvent.seq.desc())
        ).all()
    )
    if idempotency_key is not None:
        for event in previous:
            if (event.detail or {}).get("idempotency_key") == idempotency_key:
                return sub  # the first replay with this key already happened
    if sub.status in ("received", "processing"):
        raise Conflict(f"the submission is still being processed ({sub.status})")
    if sub.status == "cancelled":
        raise Conflict("the submission was cancelled; submit the record again instead")
    if any(d.status not in ENDED for d in deliveries):
        raise Conflict("some deliveries are still pending, in flight or awaiting a receipt; cancel them or wait")
    if previous and min_interval_seconds > 0:
        last_at = as_utc(previous[0].recorded_at)
        wait = (last_at + timedelta(seconds=min_interval_seconds) - now).total_seconds()
        if wait > 0:
            retry_after = math.ceil(wait)
            raise TooManyRequests(
                f"this submission was replayed {int((now - last_at).total_seconds())} s ago; "
                f"try again in {retry_after} s",
                retry_after=retry_after,
            )
    detail: dict[str, Any]
    if sub.status == "rejected":
        sub.status = "received"
        sub.report = None
        sub.lease_owner = None
        sub.lease_until = None
        sub.updated_at = now
        detail = {"mode": "pipeline"}
    else:
        latest: dict[str, Delivery] = {}
        for d in sorted(deliveries, key=lambda d: d.seq):
            latest[d.destination] = d
        if not latest:
            raise Conflict("the submission was routed to no destination; nothing to replay")
        advisory_series_lock(session, next(iter(latest.values())).series_key)
        for d in latest.values():
            if _newer_version_held(session, d):
                raise Conflict(
                    f"destination {d.destination!r} holds a newer version of this document or has one queued "
                    "or being sent; replaying this one would deliver an older version after it"
                )
        key = next(iter(latest.values())).series_key
        rows = enqueue(
            session,
            submission_id=sub.id,
            tenant_id=sub.tenant_id,
            series=key,
            destinations=[(d.destination, d.connector) for d in latest.values()],
            now=now,
        )
        sub.status = "routed"
        sub.updated_at = now
        detail = {"mode": "deliveries", "deliveries": [{"destination": r.destination, "id": r.id} for r in rows]}
    if idempotency_key is not None:
        detail["idempotency_key"] = idempotency_key
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
    wakeup.notify_work(session)  # queued again: the listening workers look at the commit
    return sub


def cancel_submission(
    session: Session, *, submission_id: str, actor: str, tenant_id: str | None, now: datetime | None = None
) -> Submission:
    """Cancel what has not been sent: pending deliveries (in-flight ones finish), or the processing itself."""
    now = _now(now)
    _owned_submission(session, submission_id, tenant_id)
    deliveries = _lock_deliveries(session, Delivery.submission_id == submission_id)
    sub = _lock_submission(session, submission_id)
    assert sub is not None
    if sub.status in ("cancelled", "rejected"):
        raise Conflict(f"the submission is already {sub.status}")
    if sub.status == "processing":
        raise Conflict("the submission is being processed right now; try again in a moment")
    cancelled = []
    for row in deliveries:
        if row.status == "pending":
            _release(row, "cancelled", now=now)
            cancelled.append(row.id)
    in_flight = [d.id for d in deliveries if d.status in ("in_flight", "sent")]
    if sub.status != "received" and not cancelled:
        raise Conflict("nothing left to cancel: every delivery is finished, in flight or awaiting a receipt")
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
