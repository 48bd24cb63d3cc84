"""Outbox races: a stale worker against a fresh claim, lock orders under concurrent operators,
leases shorter than the send, and per-destination bulkheads (issue 7, defects 3, 4 and 8).

Real threads and, where the race is PostgreSQL's, real PostgreSQL sessions; no mocks.
"""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select, text

from connectors.base import Acknowledgement, Envelope, Receipt
from gateway import audit, pipeline
from gateway.app import create_app
from gateway.delivery import deliver_next, outbox
from gateway.delivery.engine import ConnectorPolicyError, check_connectors, claim_and_prepare
from gateway.delivery.outbox import ENDED, RETRYABLE, as_utc, cancel_submission, replay_submission, retry_delivery
from gateway.errors import Conflict, NotFound, TooManyRequests
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.models import Attempt, AuditEvent, Delivery, Submission
from tests.gateway.api.live import serve
from tests.gateway.engine.support import (
    T0,
    Clock,
    FakeConnector,
    GateConnector,
    audit_events,
    make_runtime,
    permanent,
    submit,
    transient,
    webhook_routing,
)
from tests.peers.gateway import webhook_routing as peers_webhook_routing


def _route_versions(session_factory, keyring, tenant, rt, clock, *, person: str, count: int) -> list[str]:
    """``count`` versions of one person's document, routed: their delivery ids in seq order."""
    for n in range(count):
        submit(
            session_factory,
            keyring,
            tenant_id=tenant.id,
            finess=tenant.finess,
            person_ref=person,
            created_at=T0 + timedelta(seconds=n),
        )
    while pipeline.process_next(rt, worker_id="router", clock=clock):
        pass
    with session_factory() as session:
        return list(session.scalars(select(Delivery.id).order_by(Delivery.seq)))


def _row(session_factory, delivery_id: str) -> Delivery:
    with session_factory() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        row.attempts  # load
        session.expunge_all()
        return row


def _in_thread(results: list[Any], fn: Any, **kwargs: Any) -> threading.Thread:
    def run() -> None:
        try:
            results.append(fn(**kwargs))
        except BaseException as exc:  # surfaced by the test
            results.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# -- defect 3: a stale worker never overwrites a fresh claim -----------------------------------------
@pytest.mark.parametrize("same_worker_id", [False, True], ids=["two-workers", "restarted-same-id"])
def test_stale_worker_finishing_during_a_fresh_claim_is_lease_lost(
    session_factory, keyring, tenant, same_worker_id: bool
) -> None:
    """Worker A's lease expires while its send hangs; B claims and is itself sending. A's late
    success is recorded on A's attempt and audited as ``lease_lost``; the row stays B's; version 2
    is released only once B finished. ``restarted-same-id``: B has A's worker id (a container
    restarted with the same hostname and pid): only the attempt number tells them apart."""
    clock = Clock()
    slow, fresh, next_peer = GateConnector(), GateConnector(), FakeConnector()
    routing = webhook_routing("partner")
    rt_a = make_runtime(session_factory, keyring, routing=routing, connectors={"partner": slow}, lease_heartbeat=False)
    rt_b = make_runtime(session_factory, keyring, routing=routing, connectors={"partner": fresh}, lease_heartbeat=False)
    rt_c = make_runtime(
        session_factory, keyring, routing=routing, connectors={"partner": next_peer}, lease_heartbeat=False
    )
    first, second = _route_versions(session_factory, keyring, tenant, rt_a, clock, person="p", count=2)
    worker_a, worker_b = ("w", "w") if same_worker_id else ("A", "B")

    results_a: list[Any] = []
    thread_a = _in_thread(results_a, deliver_next, runtime=rt_a, worker_id=worker_a, clock=clock)
    assert slow.entered.wait(10)
    clock.advance(61)  # A's lease (60 s) lapses while A is still in send()
    results_b: list[Any] = []
    thread_b = _in_thread(results_b, deliver_next, runtime=rt_b, worker_id=worker_b, clock=clock)
    assert fresh.entered.wait(10)
    assert slow.calls == [] and fresh.calls == []  # both are inside send(), neither answered yet
    assert deliver_next(rt_c, worker_id="C", clock=clock) is None  # version 2 waits for version 1

    slow.release.set()  # A's peer answers: too late
    thread_a.join(10)
    (late,) = results_a
    assert not isinstance(late, BaseException), late
    assert late is not None and late.status == "lease_lost" and late.attempt == 1
    row = _row(session_factory, first)
    assert (row.status, row.lease_owner, row.attempt_count) == ("in_flight", worker_b, 2)
    attempts = {a.number: a for a in row.attempts}
    assert attempts[1].worker == worker_a and attempts[1].outcome == "success"
    assert "[lease lost" in (attempts[1].error or "")
    assert attempts[2].outcome == "started"
    (lost,) = audit_events(session_factory, first, "lease_lost")
    assert lost.actor == f"worker:{worker_a}" and lost.detail["attempt"] == 1
    assert lost.detail["current_status"] == "in_flight"
    assert audit_events(session_factory, first, "delivered") == []
    assert deliver_next(rt_c, worker_id="C", clock=clock) is None  # still B's: version 2 still waits

    fresh.release.set()
    thread_b.join(10)
    (done,) = results_b
    assert not isinstance(done, BaseException), done
    assert done is not None and done.status == "delivered" and done.attempt == 2
    row = _row(session_factory, first)
    assert (row.status, row.lease_owner) == ("delivered", None)
    assert [e.actor for e in audit_events(session_factory, first, "delivered")] == [f"worker:{worker_b}"]

    out = deliver_next(rt_c, worker_id="C", clock=clock)  # now version 2 goes
    assert out is not None and out.delivery_id == second and out.status == "delivered"
    assert next_peer.accepted[0].at >= fresh.accepted[0].at
    # every send left its send_started, before the peer was called
    assert [e.detail["attempt"] for e in audit_events(session_factory, first, "send_started")] == [1, 2]
    assert [e.detail["attempt"] for e in audit_events(session_factory, second, "send_started")] == [1]
    assert len(slow.calls) + len(fresh.calls) + len(next_peer.calls) == 3
    with session_factory() as session:
        assert session.scalar(select(Attempt.id).where(Attempt.outcome == "started")) is None


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_stale_finish_racing_a_fresh_claim_never_overwrites_it(db_url, session_factory, keyring, tenant) -> None:
    """The PostgreSQL race itself, many times: A's late outcome and B's claim of A's expired lease
    start together. Either A records first (B finds nothing to claim) or B claims first (A's
    outcome is lease_lost); never "delivered" under B's feet while B is sending."""
    clock = Clock()
    routing = webhook_routing("partner")
    rounds = 15
    for n in range(rounds):
        slow, fresh = GateConnector(), FakeConnector(delay=0.2)
        rt_a = make_runtime(
            session_factory, keyring, routing=routing, connectors={"partner": slow}, lease_heartbeat=False
        )
        rt_b = make_runtime(
            session_factory, keyring, routing=routing, connectors={"partner": fresh}, lease_heartbeat=False
        )
        submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref=f"p{n}")
        assert pipeline.process_next(rt_a, worker_id="router", clock=clock)
        results_a: list[Any] = []
        thread_a = _in_thread(results_a, deliver_next, runtime=rt_a, worker_id="A", clock=clock)
        assert slow.entered.wait(10)
        clock.advance(61)
        start = threading.Barrier(2)
        results_b: list[Any] = []

        def claim_b(rt_b: Runtime = rt_b, start: threading.Barrier = start) -> Any:
            start.wait()
            return deliver_next(rt_b, worker_id="B", clock=clock)

        thread_b = _in_thread(results_b, claim_b)
        start.wait()
        slow.release.set()
        thread_a.join(10)
        thread_b.join(10)
        (a,), (b,) = results_a, results_b
        assert not isinstance(a, BaseException) and not isinstance(b, BaseException), (a, b)
        delivery_id = a.delivery_id
        delivered = audit_events(session_factory, delivery_id, "delivered")
        assert len(delivered) == 1, [e.actor for e in delivered]
        row = _row(session_factory, delivery_id)
        assert row.status == "delivered"
        if b is None:  # A recorded first: B found nothing
            assert a.status == "delivered" and fresh.calls == []
            assert delivered[0].actor == "worker:A" and row.attempt_count == 1
        else:  # B claimed first: A lost its lease, B delivered
            assert (a.status, b.status) == ("lease_lost", "delivered"), (a, b)
            assert delivered[0].actor == "worker:B" and row.attempt_count == 2
            assert len(audit_events(session_factory, delivery_id, "lease_lost")) == 1
        clock.advance(1)


# -- defect 7, found by the stress test below: an older version queued behind a newer one -------------
def _versions(peer: FakeConnector) -> list[int]:
    return [s.envelope.renditions[0].version for s in peer.accepted]


def test_replay_is_refused_while_a_newer_version_is_still_queued(session_factory, keyring, tenant) -> None:
    """v1, v2 delivered, v3 pending: replaying v2 would queue it after v3 (the peer would get
    1, 2, 3, 2 and end up holding the older version). Refused; the peer gets 1, 2, 3."""
    clock = Clock()
    peer = FakeConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    _route_versions(session_factory, keyring, tenant, rt, clock, person="p", count=3)
    with session_factory() as session:
        subs = list(session.scalars(select(Delivery.submission_id).order_by(Delivery.seq)))
    assert deliver_next(rt, worker_id="w", clock=clock).status == "delivered"  # type: ignore[union-attr]
    assert deliver_next(rt, worker_id="w", clock=clock).status == "delivered"  # type: ignore[union-attr]
    with pytest.raises(Conflict, match="newer version"):
        with session_scope(session_factory) as session:
            replay_submission(session, submission_id=subs[1], actor="user:ops", tenant_id=tenant.id, now=clock())
    while deliver_next(rt, worker_id="w", clock=clock):
        pass
    assert _versions(peer) == [1, 2, 3]


def test_retry_is_refused_while_a_newer_version_is_in_flight(session_factory, keyring, tenant) -> None:
    """v2 dead, v3 claimed and sending: retrying v2 would send it after v3. Refused (409)."""
    clock = Clock()
    peer, gate = FakeConnector(["ok", permanent()]), GateConnector()
    routing = webhook_routing("partner")
    rt = make_runtime(session_factory, keyring, routing=routing, connectors={"partner": peer})
    rt_gate = make_runtime(session_factory, keyring, routing=routing, connectors={"partner": gate})
    ids = _route_versions(session_factory, keyring, tenant, rt, clock, person="p", count=3)
    assert deliver_next(rt, worker_id="w", clock=clock).status == "delivered"  # type: ignore[union-attr]
    assert deliver_next(rt, worker_id="w", clock=clock).status == "dead"  # type: ignore[union-attr]
    results: list[Any] = []
    sending = _in_thread(results, deliver_next, runtime=rt_gate, worker_id="g", clock=clock)
    assert gate.entered.wait(10)  # v3 is in flight
    try:
        with pytest.raises(Conflict, match="newer version"):
            with session_scope(session_factory) as session:
                retry_delivery(session, delivery_id=ids[1], actor="user:ops", tenant_id=tenant.id, now=clock())
    finally:
        gate.release.set()
        sending.join(10)
    while deliver_next(rt, worker_id="w", clock=clock):
        pass
    assert _versions(peer) + _versions(gate) == [1, 3]
    assert _row(session_factory, ids[1]).status == "dead"


# -- defect 8: a lease shorter than the send ---------------------------------------------------------
class _SlowPeer(FakeConnector):
    """Takes ``delay`` seconds to answer; declares a send timeout the engine can honour."""

    send_timeout = 5.0


def test_heartbeat_keeps_a_lease_shorter_than_the_send(session_factory, keyring, tenant) -> None:
    """Lease 1 s, send 2.5 s: while A sends, B polls claims and gets nothing; one send only; the
    lease_until read from the database keeps moving ahead of the wall clock."""
    slow, other = _SlowPeer(delay=2.5), FakeConnector()
    routing = webhook_routing("partner")
    rt_a = make_runtime(session_factory, keyring, routing=routing, connectors={"partner": slow}, lease_seconds=1)
    rt_b = make_runtime(session_factory, keyring, routing=routing, connectors={"partner": other}, lease_seconds=1)
    (delivery_id,) = _route_versions(session_factory, keyring, tenant, rt_a, Clock(), person="p", count=1)

    results: list[Any] = []
    thread_a = _in_thread(results, deliver_next, runtime=rt_a, worker_id="A")
    for _ in range(200):  # until A is inside send()
        if slow.calls:
            break
        time.sleep(0.01)
    assert slow.calls
    samples: list[tuple[Any, Any]] = []
    b_claims = []
    while thread_a.is_alive():
        b_claims.append(deliver_next(rt_b, worker_id="B"))
        with session_factory() as session:
            lease_until = session.scalar(select(Delivery.lease_until).where(Delivery.id == delivery_id))
        wall = datetime.now(UTC)
        if lease_until is not None:
            samples.append((wall, as_utc(lease_until)))
        time.sleep(0.1)
    thread_a.join()
    (out,) = results
    assert not isinstance(out, BaseException), out
    assert out is not None and out.status == "delivered" and out.attempt == 1
    assert b_claims and set(b_claims) == {None}  # B never got it
    assert len(slow.calls) == 1 and other.calls == []
    assert len(samples) >= 5
    assert all(until > wall for wall, until in samples), "the lease lapsed during the send"
    assert samples[-1][1] - samples[0][1] >= timedelta(seconds=1)  # really extended, not one long lease
    row = _row(session_factory, delivery_id)
    assert [(a.worker, a.outcome) for a in row.attempts] == [("A", "success")]
    assert len(audit_events(session_factory, delivery_id, "send_started")) == 1
    assert audit_events(session_factory, delivery_id, "lease_lost") == []


class _NoTimeout:
    """A connector that cannot say how long a send may take."""

    name = "no-timeout"
    version = "1"

    def send(self, envelope: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError

    def health(self) -> Any:  # pragma: no cover
        raise AssertionError


def test_connectors_that_cannot_honour_the_deadline_are_refused() -> None:
    settings = Settings(profile="dev", max_send_seconds=60)
    check_connectors(settings, {"ok": _SlowPeer(), "edge": _with_timeout(60)})
    with pytest.raises(ConnectorPolicyError, match="declares no send_timeout"):
        check_connectors(settings, {"ok": _SlowPeer(), "mute": _NoTimeout()})
    with pytest.raises(ConnectorPolicyError, match="exceeds DUI_GATEWAY_MAX_SEND_SECONDS"):
        check_connectors(settings, {"slow": _with_timeout(61)})
    for bad in (0, -1, float("nan"), True, "10"):
        with pytest.raises(ConnectorPolicyError):
            check_connectors(settings, {"odd": _with_timeout(bad)})


def _with_timeout(value: Any) -> FakeConnector:
    peer = FakeConnector()
    peer.send_timeout = value
    return peer


def test_runtime_refuses_at_start_up_a_connector_slower_than_max_send_seconds(
    session_factory, keyring, tmp_path
) -> None:
    routing = peers_webhook_routing("http://127.0.0.1:9", destinations={"slow": "webhook"}, document_types=["x"])
    routing["destinations"]["slow"]["settings"]["timeout"] = 120
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(routing), encoding="utf-8")
    rt = make_runtime(session_factory, keyring, routing_file=path, max_send_seconds=60)
    with pytest.raises(ConnectorPolicyError, match=r"'slow'.*120 s exceeds"):
        rt.load_routing()
    ok = make_runtime(session_factory, keyring, routing_file=path, max_send_seconds=120)
    ok.load_routing()
    assert set(ok.destinations) == {"slow"}


# -- defect 4: one lock order (PostgreSQL stress) -----------------------------------------------------
class _Relay(FakeConnector):
    """A relay: accepts and answers ``sent``; the acknowledgement comes later (ack_ref)."""

    def send(self, envelope: Envelope) -> Receipt:
        super().send(envelope)
        return Receipt(status="sent", ack_ref=f"ack-{envelope.delivery_id}", remote_id=f"relay-{envelope.delivery_id}")


def _flaky(rng: random.Random, lock: threading.Lock) -> Any:
    def step(_envelope: Envelope) -> Any:
        with lock:
            roll = rng.random()
        if roll < 0.35:
            return permanent("HTTP 422")
        if roll < 0.5:
            return transient("HTTP 503")
        return "ok"

    return step


def _versions_by_series(peers: list[FakeConnector]) -> dict[tuple[str, str], list[int]]:
    sends = sorted((s for p in peers for s in p.accepted), key=lambda s: s.at)
    out: dict[tuple[str, str], list[int]] = {}
    for s in sends:
        key = (s.envelope.destination, s.envelope.facts.person_ref or "")
        out.setdefault(key, []).append(s.envelope.renditions[0].version)
    return out


OPERATOR_ERRORS = (Conflict, NotFound, TooManyRequests)
STRESS_SECONDS = 12.0


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_concurrent_workers_and_operators_never_deadlock(db_url, keyring, tenant) -> None:
    """Two runtimes' workers (sends failing permanently or transiently, a relay answering ``sent``,
    leases of a crashed worker to take over or dead-letter) while operators retry, replay and
    cancel, receipts arrive (delivered, failed, info, duplicates) and overdue receipts expire,
    all at once on PostgreSQL for a bounded time: no deadlock or serialization failure surfaces,
    nothing is left half-done, the audit chain verifies."""
    engine = make_engine(db_url, pool_size=24, max_overflow=8)
    factory = make_sessionmaker(engine)
    rng = random.Random(4)
    rng_lock = threading.Lock()
    routing = webhook_routing("ok", "flaky", "relay")
    peers: dict[str, list[FakeConnector]] = {"ok": [], "flaky": [], "relay": []}

    def runtime() -> Runtime:
        connectors = {
            "ok": FakeConnector(delay=0.002),
            "flaky": FakeConnector(default=_flaky(rng, rng_lock)),
            "relay": _Relay(),
        }
        for name, peer in connectors.items():
            peers[name].append(peer)
        return make_runtime(
            factory,
            keyring,
            routing=routing,
            connectors=connectors,
            lease_seconds=30,
            max_attempts=3,
            backoff_base_seconds=0.02,
            backoff_max_seconds=0.2,
            receipt_timeout_seconds=0.4,
            breaker_failure_threshold=1000,
        )

    runtimes = [runtime(), runtime()]
    # a worker that claims and dies before sending: its 1 s leases expire under the others
    crasher = make_runtime(factory, keyring, routing=routing, connectors=runtimes[0].destinations, lease_seconds=1)
    persons = [f"p{i}" for i in range(10)]
    for version in range(2):
        for person in persons:
            submit(factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref=person, text=f"v{version}")

    stop = threading.Event()
    failures: list[tuple[str, BaseException]] = []
    done: dict[str, int] = {}
    done_lock = threading.Lock()

    def count(what: str) -> None:
        with done_lock:
            done[what] = done.get(what, 0) + 1

    def pick(query: Any) -> str | None:
        with factory() as session:
            ids = list(session.scalars(query))
        if not ids:
            return None
        with rng_lock:
            return str(rng.choice(ids))

    def loop(name: str, body: Any, pause: float) -> threading.Thread:
        def run() -> None:
            while not stop.is_set():
                try:
                    body()
                except OPERATOR_ERRORS:
                    count(f"{name}:refused")
                except BaseException as exc:
                    failures.append((name, exc))
                stop.wait(pause)

        return threading.Thread(target=run, name=name, daemon=True)

    def worker(rt: Runtime, worker_id: str) -> Any:
        def body() -> None:
            if pipeline.process_next(rt, worker_id=worker_id):
                count("routed")
            out = deliver_next(rt, worker_id=worker_id)
            if out is not None:
                count(f"deliver:{out.status}")

        return body

    def retry() -> None:
        delivery_id = pick(select(Delivery.id).where(Delivery.status.in_(RETRYABLE)))
        if delivery_id is not None:
            with session_scope(factory) as session:
                retry_delivery(session, delivery_id=delivery_id, actor="user:ops", tenant_id=tenant.id)
            count("retried")

    def replay() -> None:
        sub_id = pick(select(Submission.id).where(Submission.status.in_(("delivered", "failed", "partially_failed"))))
        if sub_id is not None:
            with session_scope(factory) as session:
                replay_submission(
                    session, submission_id=sub_id, actor="user:ops", tenant_id=tenant.id, min_interval_seconds=0
                )
            count("replayed")

    def cancel() -> None:
        sub_id = pick(
            select(Submission.id)
            .join(Delivery, Delivery.submission_id == Submission.id)
            .where(Submission.status == "routed", Delivery.status == "pending")
        )
        if sub_id is not None:
            with session_scope(factory) as session:
                cancel_submission(session, submission_id=sub_id, actor="user:ops", tenant_id=tenant.id)
            count("cancelled")

    def receipt() -> None:
        with rng_lock:
            outcome = rng.choice(["delivered", "delivered", "failed", "info"])
            by_id, again = rng.random() < 0.3, rng.random() < 0.3
        delivery_id = pick(
            select(Delivery.id).where(
                Delivery.destination == "relay", Delivery.status.in_(("sent", "in_flight", "delivered"))
            )
        )
        if delivery_id is None:
            return
        # by ack_ref as the relay declared it, or by the delivery id (peers echoing the
        # idempotency key): that one may arrive while the send is still in flight
        ref = delivery_id if by_id else f"ack-{delivery_id}"
        ack = Acknowledgement(ack_ref=ref, outcome=outcome, kind="test")  # type: ignore[arg-type]
        for _ in range(2 if again else 1):
            with session_scope(factory) as session:
                result = outbox.acknowledge(session, ack, tenant_id=tenant.id, now=datetime.now(UTC), actor="peer:t")
            count(f"ack:{result.result}")

    def expire() -> None:
        with session_scope(factory) as session:
            if outbox.expire_receipts(session, now=datetime.now(UTC)):
                count("expired")

    def crash() -> None:
        if claim_and_prepare(crasher, worker_id="crashed", now=datetime.now(UTC)) is not None:
            count("crashed")

    def more_versions() -> None:
        with rng_lock:
            person = rng.choice(persons)
        submit(factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref=person, text="later")
        count("submitted")

    threads = [loop(f"worker-{r}-{n}", worker(rt, f"r{r}w{n}"), 0.0) for r, rt in enumerate(runtimes) for n in range(2)]
    threads += [
        loop("retry", retry, 0.02),
        loop("replay", replay, 0.05),
        loop("cancel", cancel, 0.4),
        loop("receipt", receipt, 0.01),
        loop("expire", expire, 0.05),
        loop("submit", more_versions, 0.3),
        loop("crash", crash, 0.5),
    ]
    try:
        for t in threads:
            t.start()
        time.sleep(STRESS_SECONDS)
        stop.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        deadlocks = [
            (name, exc)
            for name, exc in failures
            if isinstance(
                getattr(exc, "orig", exc), psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
            )
        ]
        assert deadlocks == [], deadlocks[:3]
        assert failures == [], failures[:3]
        print("\n", dict(sorted(done.items())))
        for what in ("retried", "replayed", "cancelled", "ack:applied", "ack:stored", "expired", "deliver:dead"):
            assert done.get(what, 0) > 0, f"the stress never exercised {what}: {done}"

        # the leftovers run to an end (a day later: every backoff over, every receipt overdue)
        later = Clock(datetime.now(UTC) + timedelta(days=1))
        for _ in range(3000):
            later.advance(3600)
            with session_scope(factory) as session:
                expired = outbox.expire_receipts(session, now=later())
            progressed = pipeline.process_next(runtimes[0], worker_id="drain", clock=later)
            if not (deliver_next(runtimes[0], worker_id="drain", clock=later) or expired or progressed):
                break
        else:
            raise AssertionError("the leftovers never ran out")

        with factory() as session:
            rows = list(session.scalars(select(Delivery)))
            assert {r.status for r in rows} <= set(ENDED), sorted({r.status for r in rows})
            assert all(r.lease_owner is None and r.lease_until is None for r in rows)
            assert all(r.status != "delivered" or r.delivered_at is not None for r in rows)
            assert session.scalar(select(Attempt.id).where(Attempt.outcome == "started")) is None
            starts = dict(
                session.execute(
                    select(AuditEvent.entity_id, func.count())
                    .where(AuditEvent.action == "send_started")
                    .group_by(AuditEvent.entity_id)
                ).all()
            )
            # every claim (attempt) has its send_started event, and no event lacks its claim
            assert {r.id: r.attempt_count for r in rows if r.attempt_count} == starts
            subs = list(session.scalars(select(Submission)))
            before = {s.id: s.status for s in subs}
            for sub in subs:
                outbox.refresh_submission_status(session, sub, now=later())
            assert {s.id: s.status for s in subs} == before  # every status is the derived one
            session.rollback()
            result = audit.verify(session)
            assert result.ok, result.problems[:5]
            assert result.checked > 100
        # a destination that holds what it accepted got every series' versions in order
        for name in ("ok", "flaky"):
            for key, versions in _versions_by_series(peers[name]).items():
                assert versions == sorted(versions), (key, versions)
    finally:
        stop.set()
        for rt in runtimes:
            rt.stop_workers()
        engine.dispose()


# -- defect 4, deterministic: every writer takes delivery -> submission -> series -> audit head --------
LOCK_ORDER_OPS = ["finish", "retry", "cancel", "replay", "acknowledge"]


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
@pytest.mark.parametrize("op", LOCK_ORDER_OPS)
def test_each_writer_follows_the_one_lock_order(db_url, session_factory, keyring, tenant, op: str) -> None:
    """A transaction holding a delivery row (as reclaim and dead-letter do) then taking its
    submission, the series' advisory lock and the audit head must never deadlock with ``op`` on
    that delivery: ``op`` waits on the delivery row, holding nothing the first one needs. The old
    engine's outcome recording and retry took the submission first: PostgreSQL broke the cycle
    with DeadlockDetected."""
    clock = Clock()
    gate = GateConnector()
    peer: FakeConnector = {"finish": gate, "acknowledge": _Relay(), "retry": FakeConnector([permanent()])}.get(
        op, FakeConnector()
    )
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    (delivery_id,) = _route_versions(session_factory, keyring, tenant, rt, clock, person="p", count=1)
    with session_factory() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        sub_id, series = row.submission_id, row.series_key
    if op in ("retry", "replay", "acknowledge"):  # dead, delivered, sent
        assert deliver_next(rt, worker_id="w", clock=clock) is not None

    def run() -> Any:
        if op == "finish":
            return deliver_next(rt, worker_id="w", clock=clock)  # waits in the gate, then records
        with session_scope(session_factory) as session:
            if op == "retry":
                return retry_delivery(session, delivery_id=delivery_id, actor="user:ops", tenant_id=tenant.id)
            if op == "cancel":
                return cancel_submission(session, submission_id=sub_id, actor="user:ops", tenant_id=tenant.id)
            if op == "replay":
                return replay_submission(session, submission_id=sub_id, actor="user:ops", tenant_id=tenant.id)
            ack = Acknowledgement(ack_ref=f"ack-{delivery_id}", outcome="delivered", kind="test")
            return outbox.acknowledge(session, ack, tenant_id=tenant.id, now=clock(), actor="peer:t")

    results: list[Any] = []
    if op == "finish":  # claimed and sending before the delivery row is taken
        thread = _in_thread(results, run)
        assert gate.entered.wait(10)
    with session_factory() as holder:
        holder.execute(text("SET LOCAL lock_timeout = '10s'"))
        holder.execute(select(Delivery.id).where(Delivery.id == delivery_id).with_for_update())
        if op == "finish":
            gate.release.set()
        else:
            thread = _in_thread(results, run)
        time.sleep(0.5)
        assert thread.is_alive(), f"{op} did not wait for the delivery row: {results}"
        try:  # the rest of the one lock order, while op waits on the delivery
            holder.execute(select(Submission.id).where(Submission.id == sub_id).with_for_update())
            holder.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": series})
            holder.execute(text("SELECT last_seq FROM audit_head FOR UPDATE"))
        finally:
            holder.commit()
    thread.join(15)
    assert not thread.is_alive()
    (result,) = results
    assert not isinstance(result, BaseException), repr(result)


# -- bulkheads: one failing or slow destination does not starve the others ----------------------------
COOLDOWN = 4.0


def test_an_open_circuit_skips_its_destination_and_shows_in_readyz(session_factory, keyring, tenant) -> None:
    clock = Clock()
    down, healthy = FakeConnector(default=transient("HTTP 503")), FakeConnector()
    rt = make_runtime(
        session_factory,
        keyring,
        routing=webhook_routing("A", "B"),
        connectors={"A": down, "B": healthy},
        breaker_failure_threshold=3,
        breaker_cooldown_seconds=COOLDOWN,
        max_attempts=50,
    )
    _route_versions(session_factory, keyring, tenant, rt, clock, person="p", count=1)
    for n in range(5):  # other persons: five more deliveries for each destination
        submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref=f"q{n}")
    while pipeline.process_next(rt, worker_id="router", clock=clock):
        pass

    while len(down.calls) < 3:
        clock.advance(3600)  # every backoff over: only the circuit can keep A's deliveries back
        assert deliver_next(rt, worker_id="w", clock=clock) is not None
    opened = time.monotonic()
    lanes = rt.bulkheads.snapshot()
    assert lanes["A"]["circuit"] == "open" and lanes["A"]["consecutive_failures"] == 3
    assert lanes["B"]["circuit"] == "closed"
    while len(healthy.accepted) < 6:
        clock.advance(3600)
        out = deliver_next(rt, worker_id="w", clock=clock)
        assert out is not None and out.status == "delivered"
    clock.advance(3600)
    assert deliver_next(rt, worker_id="w", clock=clock) is None  # A's are due, but its circuit is open
    assert len(down.calls) == 3

    with serve(create_app(rt)) as api:
        ready = api.get("/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["circuit:A"]["ok"] is False and checks["circuit:A"]["circuit"] == "open"
    assert checks["circuit:B"]["ok"] is True
    assert checks["destination:A"]["ok"] is True  # its health endpoint answers; its sends fail

    assert time.monotonic() < opened + COOLDOWN, "too slow: the cool-off ended during the checks"
    time.sleep(max(0.0, opened + COOLDOWN + 0.1 - time.monotonic()))
    # the cool-off is over: one probe, which fails: open again, for longer
    assert rt.bulkheads.snapshot()["A"]["circuit"] == "half_open"
    out = deliver_next(rt, worker_id="w", clock=clock)
    assert out is not None and out.status == "pending" and len(down.calls) == 4
    lanes = rt.bulkheads.snapshot()
    assert lanes["A"]["circuit"] == "open" and lanes["A"]["retry_in_seconds"] > COOLDOWN
    assert deliver_next(rt, worker_id="w", clock=clock) is None


class _Counting(GateConnector):
    """A gate that also counts how many sends are inside it at once."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.most = 0
        self._count = threading.Lock()

    def send(self, envelope: Envelope) -> Receipt:
        with self._count:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            return super().send(envelope)
        finally:
            with self._count:
                self.active -= 1


def test_a_slow_destination_uses_only_its_slots_while_the_others_proceed(session_factory, keyring, tenant) -> None:
    clock = Clock()
    slow, fast = _Counting(), FakeConnector()
    routing = webhook_routing("A", "B")
    routing["destinations"]["A"]["concurrency"] = 1
    rt = make_runtime(session_factory, keyring, routing=routing, connectors={"A": slow, "B": fast})
    for n in range(3):  # three persons: three independent series per destination
        submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref=f"p{n}")
    while pipeline.process_next(rt, worker_id="router", clock=clock):
        pass

    stop = threading.Event()
    errors: list[BaseException] = []

    def work(worker_id: str) -> None:
        try:
            while not stop.is_set():
                if deliver_next(rt, worker_id=worker_id, clock=clock) is None:
                    stop.wait(0.01)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{n}",), daemon=True) for n in range(2)]
    for t in threads:
        t.start()
    try:
        assert slow.entered.wait(10)
        for _ in range(500):  # the other thread delivers all of B while A's one slot is stuck
            if len(fast.accepted) == 3:
                break
            time.sleep(0.01)
        assert len(fast.accepted) == 3
        time.sleep(0.2)
        assert slow.active == 1 and rt.bulkheads.snapshot()["A"]["in_flight"] == 1
        with session_factory() as session:
            waiting = session.scalars(select(Delivery.status).where(Delivery.destination == "A")).all()
        assert sorted(waiting) == ["in_flight", "pending", "pending"]
    finally:
        slow.release.set()
        for _ in range(500):
            if len(slow.accepted) == 3:
                break
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    assert len(slow.accepted) == 3 and slow.most == 1


def test_a_thread_sending_elsewhere_does_not_hold_a_destinations_only_slot(session_factory, keyring, tenant) -> None:
    """Both destinations allow one send at a time. A thread stuck in B's slow send must hold B's
    slot only: another thread still delivers to A (a slow B never starves A)."""
    clock = Clock()
    fast, slow = FakeConnector(), GateConnector()
    routing = webhook_routing("A", "B")
    routing["destinations"]["A"]["concurrency"] = 1
    routing["destinations"]["B"]["concurrency"] = 1
    rt = make_runtime(session_factory, keyring, routing=routing, connectors={"A": fast, "B": slow})
    _route_versions(session_factory, keyring, tenant, rt, clock, person="p0", count=1)

    def first_worker() -> None:
        while deliver_next(rt, worker_id="T1", clock=clock) is not None:
            pass

    stuck = threading.Thread(target=first_worker, daemon=True)
    stuck.start()
    try:
        assert slow.entered.wait(10)  # T1 is inside B's send (after A's delivery, or before it)
        submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref="p1")
        assert pipeline.process_next(rt, worker_id="router", clock=clock)
        for _ in range(3):
            if deliver_next(rt, worker_id="T2", clock=clock) is None:
                break
        assert len(fast.accepted) == 2, f"A starved while B was slow: {rt.bulkheads.snapshot()}"
        assert rt.bulkheads.snapshot()["A"]["in_flight"] == 0
        assert rt.bulkheads.snapshot()["B"]["in_flight"] == 1
    finally:
        slow.release.set()
        stuck.join(10)
