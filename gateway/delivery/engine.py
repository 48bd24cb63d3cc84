"""The delivery engine: claim -> prepare -> send (lease kept alive, deadline set) -> finish.

Every state change is the outbox's (:mod:`gateway.delivery.outbox`); the engine only moves one
delivery through it, outside any transaction while the peer is called:

1. reserve a slot in the destination's bulkhead (concurrency limit, circuit breaker), then
   ``outbox.claim`` in one short transaction (ownership token);
2. in the same transaction, prepare the envelope: renditions decrypted, what this destination
   holds of the series (``held``), the ESSMS's credentials, the send deadline. A known content
   fault (a rendition that no longer authenticates) is permanent; any other failure here is the
   gateway's (database, key ring, credentials store): the delivery is *deferred* with backoff,
   never dead-lettered for it;
3. ``connector.send(envelope)`` while a heartbeat extends the lease (never past the deadline);
4. ``outbox.finish`` with the token: a lease lost meanwhile is recorded and audited, never
   written over the newer state.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import structlog
from sqlalchemy import Table, bindparam, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from connectors.base import Connector, Envelope, PermanentError, Receipt, TransientError
from gateway.delivery import outbox
from gateway.delivery.outbox import ClaimToken, as_utc
from gateway.metrics import ATTEMPTS, DELIVERY_LATENCY
from gateway.security.crypto import DecryptionError, KeyUnavailable
from gateway.settings import Settings
from gateway.storage.codec import facts_from_json, load_rendition
from gateway.storage.db import run_unit
from gateway.storage.lookups import tenant_code
from gateway.storage.models import Rendition

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = [
    "Backoff",
    "ConnectorPolicyError",
    "DeliveryOutcome",
    "Prepared",
    "as_utc",
    "backoff_from",
    "check_connectors",
    "claim_and_prepare",
    "deliver_next",
]

_log = structlog.get_logger(__name__)


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


def backoff_from(settings: Settings, *, rng: Callable[[], float] | None = None) -> Backoff:
    if rng is None:
        return Backoff(base_seconds=settings.backoff_base_seconds, max_seconds=settings.backoff_max_seconds)
    return Backoff(base_seconds=settings.backoff_base_seconds, max_seconds=settings.backoff_max_seconds, rng=rng)


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one :func:`deliver_next` call did (for logs, the worker loop and tests)."""

    delivery_id: str
    status: str  # delivered | sent | pending | dead | lease_lost
    attempt: int
    error: str | None = None
    next_attempt_at: datetime | None = None
    remote_id: str | None = None


class ConnectorPolicyError(ValueError):
    """A configured connector cannot honour the engine's deadline (refused at start-up)."""


def check_connectors(settings: Settings, destinations: Mapping[str, Any]) -> None:
    """Refuse connectors that do not declare a finite ``send_timeout`` within ``max_send_seconds``.

    The engine keeps a lease alive while a send runs, but only up to the send's deadline: a
    connector that may block longer (or cannot say how long) could be resent concurrently.
    """
    for name, connector in destinations.items():
        timeout = getattr(connector, "send_timeout", None)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
            raise ConnectorPolicyError(
                f"destination {name!r}: connector {type(connector).__name__} declares no send_timeout; "
                "it cannot honour the send deadline"
            )
        if timeout > settings.max_send_seconds:
            raise ConnectorPolicyError(
                f"destination {name!r}: send timeout {timeout:g} s exceeds DUI_GATEWAY_MAX_SEND_SECONDS "
                f"({settings.max_send_seconds:g} s)"
            )


# -- prepare --------------------------------------------------------------------------------
class _Unpreparable(Exception):
    """The delivery cannot be prepared; ``permanent`` says whether that will ever change."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Prepared:
    """A claimed delivery with everything the send needs."""

    token: ClaimToken
    destination: str
    connector: Connector
    connector_name: str
    document_type: str
    submission_created_at: datetime
    envelope: Envelope | None = None
    unpreparable: _Unpreparable | None = None

    @property
    def delivery_id(self) -> str:
        return self.token.delivery_id


def _options(runtime: Runtime, name: str) -> Mapping[str, Any]:
    routing = runtime.routing
    if routing is None:
        return {}
    dest = routing.config.destinations.get(name)
    return dict(dest.options) if dest is not None else {}


def _receipt_timeout(runtime: Runtime, name: str) -> float:
    routing = runtime.routing
    dest = routing.config.destinations.get(name) if routing is not None else None
    value = getattr(dest, "receipt_timeout_seconds", None) if dest is not None else None
    return float(value) if value is not None else float(runtime.settings.receipt_timeout_seconds)


def send_budget(runtime: Runtime, connector: Connector) -> float:
    """Seconds a send may take: the connector's declared timeout, capped by the settings."""
    return min(float(connector.send_timeout), float(runtime.settings.max_send_seconds))


_RENDITIONS = cast(Table, Rendition.__table__)
# built once; Core rows (columns by name), cheaper than ORM objects for rows only read
_RENDITIONS_OF = (
    select(_RENDITIONS).where(_RENDITIONS.c.submission_id == bindparam("submission_id")).order_by(_RENDITIONS.c.kind)
)


def _build_envelope(runtime: Runtime, session: Session, got: outbox.Claimed, connector: Connector) -> Envelope:
    """Everything the send needs, read in the claim's transaction (``outbox.claim(prepare=...)``)."""
    row, sub, token = got.row, got.submission, got.token
    if sub is None:
        raise _Unpreparable("the submission row disappeared", permanent=False)
    code = tenant_code(session, sub.tenant_id)
    rows = session.connection().execute(_RENDITIONS_OF, {"submission_id": sub.id}).all()
    try:
        renditions = tuple(load_rendition(session, r, keyring=runtime.keyring) for r in rows)
    except KeyUnavailable as exc:
        raise _Unpreparable(f"a key is not available: {exc}", permanent=False) from exc
    except DecryptionError as exc:
        # the stored document no longer authenticates (tampered or corrupted): never sendable
        raise _Unpreparable(f"a stored rendition cannot be read: {exc}", permanent=True) from exc
    held = outbox.held_versions(session, row)
    facts = facts_from_json(sub.facts, person_ref=sub.person_ref, essms_finess=sub.essms_finess)
    credentials = None
    purpose = getattr(connector, "credentials_purpose", None)
    if purpose:
        credentials = runtime.credentials.get(
            session, tenant_id=sub.tenant_id, essms_finess=sub.essms_finess, purpose=str(purpose)
        )
        if credentials is None:
            raise _Unpreparable(
                f"no {purpose} credentials configured for ESSMS {sub.essms_finess} (dui-gateway credentials set ...)",
                permanent=False,
            )
    # the deadline is real time (connectors compare it with the wall clock), whatever clock claims use
    budget = send_budget(runtime, connector)
    return Envelope(
        delivery_id=row.id,
        submission_id=sub.id,
        idempotency_key=row.id,
        tenant=code or sub.tenant_id,
        destination=row.destination,
        document_type=sub.document_type,
        renditions=renditions,
        facts=facts,
        options=_options(runtime, row.destination),
        held=held,
        deadline=datetime.now(UTC) + timedelta(seconds=budget),
        credentials=credentials,
        attempt=token.attempt,
    )


_EXPIRED_CHECK_MAX = timedelta(seconds=5)


def claim_and_prepare(
    runtime: Runtime, *, worker_id: str, now: datetime, destinations: list[str] | None = None
) -> Prepared | outbox.Ended | None:
    """Claim one due delivery among ``destinations`` (default: all configured) and prepare it,
    in one transaction (the audit of the claim comes last in it).

    A known content fault is permanent; a key ring or credentials store failing is the
    gateway's (deferred). A database error ends the transaction: nothing is claimed, and the
    worker loop tries again.
    """
    names = destinations if destinations is not None else sorted(runtime.destinations)
    found: dict[str, Prepared] = {}

    def prepare(got: outbox.Claimed) -> None:
        row, sub = got.row, got.submission
        connector: Connector = runtime.destinations[row.destination]
        prepared = Prepared(
            token=got.token,
            destination=row.destination,
            connector=connector,
            connector_name=row.connector,
            document_type=sub.document_type if sub is not None else "",
            submission_created_at=as_utc(sub.created_at) if sub is not None else now,
        )
        try:
            envelope = _build_envelope(runtime, session, got, connector)
        except _Unpreparable as exc:
            prepared = dataclasses.replace(prepared, unpreparable=exc)
        except SQLAlchemyError:
            raise  # the transaction is unusable: the claim is rolled back with it
        except Exception as exc:  # a key ring or a credentials store failing: ours, not the document's
            _log.error("delivery_unpreparable", delivery_id=got.token.delivery_id, error_type=type(exc).__name__)
            prepared = dataclasses.replace(prepared, unpreparable=_Unpreparable(type(exc).__name__, permanent=False))
        else:
            prepared = dataclasses.replace(prepared, envelope=envelope)
        found["prepared"] = prepared

    # Expired leases (a dead worker's deliveries) are looked for first every few seconds of the
    # claim clock, otherwise only when nothing pending is due: one statement less per claim.
    due = runtime.expired_check_at
    expired_first = due is None or now >= due or now < due - _EXPIRED_CHECK_MAX
    if expired_first:
        runtime.expired_check_at = now + min(_EXPIRED_CHECK_MAX, timedelta(seconds=runtime.settings.lease_seconds / 4))
    with runtime.session_factory() as session, session.begin():
        got = outbox.claim(
            session,
            worker_id=worker_id,
            now=now,
            lease_seconds=runtime.settings.lease_seconds,
            max_attempts=runtime.settings.max_attempts,
            destinations=names,
            prepare=prepare,
            expired_first=expired_first,
        )
    if not isinstance(got, outbox.Claimed):
        return got
    return found["prepared"]


# -- send -----------------------------------------------------------------------------------
def _send(prepared: Prepared) -> tuple[str, Receipt | None, str | None]:
    """Call the connector; returns (outcome, receipt, error text). Never raises."""
    assert prepared.envelope is not None
    try:
        receipt = prepared.connector.send(prepared.envelope)
    except PermanentError as exc:
        return "permanent", None, f"PermanentError: {exc}"[:2000]
    except TransientError as exc:
        return "transient", None, f"TransientError: {exc}"[:2000]
    except Exception as exc:
        # A connector bug or an unwrapped library error: retried like a transient failure; only
        # the type is kept, since the message of an arbitrary exception may quote the content.
        _log.warning(
            "connector_unexpected_error",
            delivery_id=prepared.delivery_id,
            connector=prepared.connector_name,
            error_type=type(exc).__name__,
        )
        return "transient", None, f"unexpected {type(exc).__name__} in connector"
    if not isinstance(receipt, Receipt):
        return "transient", None, f"connector returned {type(receipt).__name__}, not a Receipt"
    return "success", receipt, None


class _Heartbeat:
    """Extends a claim's lease while its send runs, never past the send's deadline plus one lease."""

    def __init__(self, runtime: Runtime, token: ClaimToken, *, budget: float, clock: Callable[[], datetime]):
        self._runtime = runtime
        self._token = token
        self._limit = clock() + timedelta(seconds=budget + runtime.settings.lease_seconds)
        self._clock = clock
        self._stop = threading.Event()
        self.lost = False
        lease = float(runtime.settings.lease_seconds)
        self._interval = max(0.05, lease / 3.0)
        self._thread = threading.Thread(target=self._run, name=f"lease-{token.delivery_id[:8]}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        if self._runtime.settings.lease_heartbeat:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        lease = timedelta(seconds=self._runtime.settings.lease_seconds)
        while not self._stop.wait(self._interval):
            now = self._clock()
            until = min(now + lease, self._limit)
            try:
                with self._runtime.session_factory() as session, session.begin():
                    ok = outbox.extend(session, self._token, until=until, now=now)
            except Exception as exc:  # the database is away: try again next beat
                _log.warning("lease_extend_failed", delivery_id=self._token.delivery_id, error_type=type(exc).__name__)
                continue
            if not ok:
                self.lost = True
                _log.warning("lease_lost_while_sending", delivery_id=self._token.delivery_id)
                return
            if until >= self._limit:
                return


def _finish(
    runtime: Runtime,
    prepared: Prepared,
    *,
    outcome: str,
    receipt: Receipt | None,
    error: str | None,
    now: datetime,
    backoff: Backoff,
) -> outbox.Finished:
    def record(session: Session) -> outbox.Finished:
        return outbox.finish(
            session,
            prepared.token,
            outcome=outcome,
            receipt=receipt,
            error=error,
            now=now,
            max_attempts=runtime.settings.max_attempts,
            backoff=backoff.delay,
            receipt_timeout_seconds=_receipt_timeout(runtime, prepared.destination),
        )

    # the send happened: a database connection lost meanwhile (a restart) must not lose its outcome
    return run_unit(runtime.session_factory, record)


def deliver_next(
    runtime: Runtime,
    *,
    worker_id: str,
    clock: Callable[[], datetime] = _utcnow,
    backoff: Backoff | None = None,
) -> DeliveryOutcome | None:
    """Claim one due delivery, send it (outside any transaction) and record the outcome.

    Only deliveries to destinations configured in this process, with a free bulkhead slot and
    a circuit not open, are claimed. Returns None when nothing was due. ``clock`` gives "now"
    (injectable so tests need not sleep). ``backoff`` defaults to the settings' values.
    """
    backoff = backoff or backoff_from(runtime.settings)
    bulkheads = runtime.bulkheads
    reserved = bulkheads.reserve(sorted(runtime.destinations))
    if not reserved:
        return None
    used: str | None = None
    breaker_outcome: str | None = None
    try:
        got = claim_and_prepare(runtime, worker_id=worker_id, now=clock(), destinations=reserved)
        if got is None:
            return None
        if isinstance(got, outbox.Ended):
            return DeliveryOutcome(got.delivery_id, got.status, 0, got.reason)
        used = got.destination
        # Only the claimed destination's slot is held while sending: the others go back now, or a
        # thread in one slow destination's send would keep every other destination's slot too.
        for name in reserved:
            if name != used:
                bulkheads.release(name)
        reserved = [used]
        if got.unpreparable is not None:
            kind = "permanent" if got.unpreparable.permanent else "deferred"
            breaker_outcome = "deferred"
            done = _finish(
                runtime,
                got,
                outcome=kind,
                receipt=None,
                error=f"cannot prepare the delivery: {got.unpreparable.reason}"[:2000],
                now=clock(),
                backoff=backoff,
            )
            return DeliveryOutcome(done.delivery_id, done.status, done.attempt, done.error, done.next_attempt_at)
        assert got.envelope is not None
        started = time.perf_counter()
        with _Heartbeat(runtime, got.token, budget=send_budget(runtime, got.connector), clock=clock):
            outcome, receipt, error = _send(got)
        breaker_outcome = outcome
        ATTEMPTS.labels(got.connector_name, outcome).inc()
        _log.info(
            "delivery_attempt",
            delivery_id=got.delivery_id,
            connector=got.connector_name,
            attempt=got.token.attempt,
            outcome=outcome,
            seconds=round(time.perf_counter() - started, 3),
        )
        now = clock()
        done = _finish(runtime, got, outcome=outcome, receipt=receipt, error=error, now=now, backoff=backoff)
        if done.status == "delivered":
            DELIVERY_LATENCY.labels(got.document_type, got.connector_name).observe(
                max(0.0, (now - got.submission_created_at).total_seconds())
            )
        return DeliveryOutcome(
            done.delivery_id, done.status, done.attempt, done.error, done.next_attempt_at, done.remote_id
        )
    finally:
        for name in reserved:
            bulkheads.release(name, outcome=breaker_outcome if name == used else None)
