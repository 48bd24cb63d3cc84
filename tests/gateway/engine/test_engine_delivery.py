"""Delivery engine: retries with backoff, dead letters, leases, ordering per series."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway import pipeline
from gateway.delivery import Backoff, deliver_next
from gateway.delivery.engine import claim_and_prepare
from gateway.storage.models import Attempt, Delivery, Submission
from tests.gateway.engine.support import (
    T0,
    Clock,
    FakeConnector,
    GateConnector,
    audit_actions,
    audit_events,
    make_runtime,
    permanent,
    submit,
    transient,
    webhook_routing,
)


def _routed(session_factory, keyring, tenant, rt, clock, **fields) -> tuple[str, str]:
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, **fields)
    assert pipeline.process_next(rt, worker_id="w0", clock=clock)
    with session_factory() as session:
        (delivery,) = session.scalars(select(Delivery).where(Delivery.submission_id == sub_id)).all()
        return sub_id, delivery.id


def _delivery(session_factory, delivery_id: str) -> Delivery:
    with session_factory() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        row.attempts  # load
        session.expunge_all()
        return row


def _status(session_factory, sub_id: str) -> str:
    with session_factory() as session:
        sub = session.get(Submission, sub_id)
        assert sub is not None
        return sub.status


def test_backoff_is_exponential_capped_and_jittered() -> None:
    backoff = Backoff(base_seconds=2, max_seconds=60, rng=random.Random(7).random)
    assert [backoff.ceiling(n) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    delays = [backoff.delay(3) for _ in range(200)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # really jittered


def test_transient_failures_are_retried_with_backoff(session_factory, keyring, tenant) -> None:
    clock = Clock()
    peer = FakeConnector([transient(), transient("HTTP 503")])
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    sub_id, delivery_id = _routed(session_factory, keyring, tenant, rt, clock)
    rng_values = iter([0.0, 1.0])  # jitter factor 0.5 for the first retry, 1.0 for the second
    backoff = Backoff(base_seconds=2.0, max_seconds=600.0, rng=lambda: next(rng_values))

    first = deliver_next(rt, worker_id="w1", clock=clock, backoff=backoff)
    assert first is not None and first.status == "pending"
    assert first.next_attempt_at == T0 + timedelta(seconds=1.0)  # 2 * 2**0 * 0.5
    assert deliver_next(rt, worker_id="w1", clock=clock, backoff=backoff) is None  # not due yet
    clock.advance(0.999)
    assert deliver_next(rt, worker_id="w1", clock=clock, backoff=backoff) is None
    clock.advance(0.001)
    second = deliver_next(rt, worker_id="w1", clock=clock, backoff=backoff)
    assert second is not None and second.status == "pending"
    assert second.next_attempt_at == clock() + timedelta(seconds=4.0)  # 2 * 2**1 * 1.0
    assert _status(session_factory, sub_id) == "routed"
    clock.advance(4)
    third = deliver_next(rt, worker_id="w2", clock=clock, backoff=backoff)
    assert third is not None and third.status == "delivered"

    row = _delivery(session_factory, delivery_id)
    assert row.status == "delivered" and row.attempt_count == 3 and row.last_error is None
    assert [(a.number, a.outcome, a.worker) for a in row.attempts] == [
        (1, "transient", "w1"),
        (2, "transient", "w1"),
        (3, "success", "w2"),
    ]
    assert row.attempts[1].error == "TransientError: HTTP 503"
    assert _status(session_factory, sub_id) == "delivered"
    assert audit_actions(session_factory, delivery_id) == [
        *["send_started", "attempt"] * 3,
        "delivered",
    ]
    assert [e.outcome for e in audit_events(session_factory, delivery_id, "attempt")] == [
        "failure",
        "failure",
        "success",
    ]
    assert len(peer.calls) == 3 and len(peer.accepted) == 1


def test_permanent_error_dead_letters_at_once(session_factory, keyring, tenant) -> None:
    clock = Clock()
    peer = FakeConnector([permanent("HTTP 422 schema")])
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    sub_id, delivery_id = _routed(session_factory, keyring, tenant, rt, clock)
    outcome = deliver_next(rt, worker_id="w1", clock=clock)
    assert outcome is not None and outcome.status == "dead"
    row = _delivery(session_factory, delivery_id)
    assert row.status == "dead" and row.attempt_count == 1
    assert row.last_error == "PermanentError: HTTP 422 schema"
    assert _status(session_factory, sub_id) == "failed"
    (dead,) = audit_events(session_factory, delivery_id, "dead_lettered")
    assert dead.detail["peer"]["reason"] == "PermanentError: HTTP 422 schema"
    clock.advance(10_000)
    assert deliver_next(rt, worker_id="w1", clock=clock) is None  # never tried again by itself


def test_too_many_attempts_dead_letters(session_factory, keyring, tenant) -> None:
    clock = Clock()
    peer = FakeConnector(default=transient("timeout"))
    rt = make_runtime(
        session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer}, max_attempts=3
    )
    sub_id, delivery_id = _routed(session_factory, keyring, tenant, rt, clock)
    statuses = []
    for _ in range(3):
        clock.advance(3600)
        out = deliver_next(rt, worker_id="w1", clock=clock)
        assert out is not None
        statuses.append(out.status)
    assert statuses == ["pending", "pending", "dead"]
    row = _delivery(session_factory, delivery_id)
    assert row.status == "dead" and row.attempt_count == 3
    assert "3 attempts (max 3)" in (row.last_error or "")
    assert _status(session_factory, sub_id) == "failed"
    assert len(peer.calls) == 3


def test_unexpected_exception_is_retried_and_logged_without_its_message(session_factory, keyring, tenant) -> None:
    clock = Clock()
    peer = FakeConnector([KeyError("Dupont Jeanne 1 45 02 75 123 456")])
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    _, delivery_id = _routed(session_factory, keyring, tenant, rt, clock)
    out = deliver_next(rt, worker_id="w1", clock=clock)
    assert out is not None and out.status == "pending"
    row = _delivery(session_factory, delivery_id)
    assert row.last_error == "unexpected KeyError in connector"
    assert "Dupont" not in (row.attempts[0].error or "")


def test_two_destinations_one_dead_is_partially_failed(session_factory, keyring, tenant) -> None:
    clock = Clock()
    good, bad = FakeConnector(), FakeConnector([permanent()])
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("a", "b"), connectors={"a": good, "b": bad})
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    pipeline.process_next(rt, worker_id="w0", clock=clock)
    assert deliver_next(rt, worker_id="w1", clock=clock) is not None
    assert _status(session_factory, sub_id) == "routed"
    assert deliver_next(rt, worker_id="w1", clock=clock) is not None
    assert _status(session_factory, sub_id) == "partially_failed"
    assert len(good.accepted) == 1 and len(bad.accepted) == 0


def test_expired_lease_is_reclaimed_by_another_worker_and_delivered_once(session_factory, keyring, tenant) -> None:
    clock = Clock()
    peer = FakeConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    sub_id, delivery_id = _routed(session_factory, keyring, tenant, rt, clock)
    # worker "crashed" claims the delivery and dies before sending anything
    claim = claim_and_prepare(rt, worker_id="crashed", now=clock())
    assert claim is not None
    assert deliver_next(rt, worker_id="w2", clock=clock) is None  # leased: nobody else takes it
    clock.advance(59)
    assert deliver_next(rt, worker_id="w2", clock=clock) is None
    clock.advance(1)
    out = deliver_next(rt, worker_id="w2", clock=clock)
    assert out is not None and out.status == "delivered"
    assert deliver_next(rt, worker_id="w2", clock=clock) is None
    row = _delivery(session_factory, delivery_id)
    assert [(a.worker, a.outcome) for a in row.attempts] == [("crashed", "abandoned"), ("w2", "success")]
    assert len(peer.accepted) == 1 and peer.accepted[0].envelope.idempotency_key == delivery_id
    assert _status(session_factory, sub_id) == "delivered"


def test_lease_lost_outcome_does_not_overwrite_the_newer_state(session_factory, keyring, tenant) -> None:
    clock = Clock()
    slow = GateConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": slow})
    _, delivery_id = _routed(session_factory, keyring, tenant, rt, clock)
    results: list = []
    first = threading.Thread(target=lambda: results.append(deliver_next(rt, worker_id="slow", clock=clock)))
    first.start()
    assert slow.entered.wait(10)
    clock.advance(61)  # the slow worker's lease expires while it is still sending
    rt2 = make_runtime(
        session_factory,
        keyring,
        routing=webhook_routing("partner"),
        connectors={"partner": FakeConnector([permanent()])},
    )
    out = deliver_next(rt2, worker_id="fast", clock=clock)
    assert out is not None and out.status == "dead"
    slow.release.set()
    first.join(10)
    (late,) = results
    assert late is not None and late.status == "lease_lost"
    row = _delivery(session_factory, delivery_id)
    assert row.status == "dead"  # the newer outcome stands
    outcomes = sorted((a.worker, a.outcome) for a in row.attempts)
    assert outcomes == [("fast", "permanent"), ("slow", "success")]
    slow_attempt = next(a for a in row.attempts if a.worker == "slow")
    assert "lease lost" in (slow_attempt.error or "")


def test_lease_expired_after_max_attempts_dead_letters(session_factory, keyring, tenant) -> None:
    clock = Clock()
    rt = make_runtime(
        session_factory,
        keyring,
        routing=webhook_routing("partner"),
        connectors={"partner": FakeConnector()},
        max_attempts=1,
    )
    _, delivery_id = _routed(session_factory, keyring, tenant, rt, clock)
    assert claim_and_prepare(rt, worker_id="crashed", now=clock())
    clock.advance(120)
    out = deliver_next(rt, worker_id="w2", clock=clock)
    assert out is not None and out.status == "dead"  # the expired lease had no attempt left: dead-lettered
    assert deliver_next(rt, worker_id="w2", clock=clock) is None
    row = _delivery(session_factory, delivery_id)
    assert row.status == "dead" and "lease expired" in (row.last_error or "")
    assert audit_actions(session_factory, delivery_id)[-2:] == ["attempt_abandoned", "dead_lettered"]


def test_only_configured_destinations_are_claimed(session_factory, keyring, tenant) -> None:
    clock = Clock()
    rt = make_runtime(
        session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": FakeConnector()}
    )
    _routed(session_factory, keyring, tenant, rt, clock)
    other_process = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={})
    assert deliver_next(other_process, worker_id="w9", clock=clock) is None
    assert deliver_next(rt, worker_id="w1", clock=clock) is not None


def _versions(peer: FakeConnector, person_ref: str) -> list[int]:
    return [s.envelope.renditions[0].version for s in peer.accepted if s.envelope.facts.person_ref == person_ref]


def test_newer_version_never_overtakes_an_older_one(session_factory, keyring, tenant) -> None:
    """Five versions of one person's series + another person's document, two workers in parallel,
    the first version failing twice: the destination still receives versions 1..5 in order."""
    fail_v1 = {"left": 2}
    lock = threading.Lock()

    def flaky(envelope):
        with lock:
            if envelope.renditions[0].version == 1 and envelope.facts.person_ref == "p" and fail_v1["left"]:
                fail_v1["left"] -= 1
                return transient("first version: peer busy")
        return "ok"

    peer = FakeConnector(default=flaky, delay=0.01)
    rt = make_runtime(
        session_factory,
        keyring,
        routing=webhook_routing("partner"),
        connectors={"partner": peer},
        backoff_base_seconds=0.05,
    )
    for n in range(5):
        submit(
            session_factory,
            keyring,
            tenant_id=tenant.id,
            finess=tenant.finess,
            person_ref="p",
            created_at=T0 + timedelta(seconds=n),
        )
    submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref="q", created_at=T0)
    while pipeline.process_next(rt, worker_id="w0"):
        pass

    stop = threading.Event()
    errors: list[BaseException] = []

    def work(worker_id: str) -> None:
        try:
            while not stop.is_set():
                if deliver_next(rt, worker_id=worker_id) is None:
                    stop.wait(0.01)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in (1, 2)]
    for t in threads:
        t.start()
    deadline = threading.Event()
    for _ in range(500):
        if len(peer.accepted) == 6:
            break
        deadline.wait(0.02)
    stop.set()
    for t in threads:
        t.join(10)
    assert errors == []
    assert _versions(peer, "p") == [1, 2, 3, 4, 5]
    assert _versions(peer, "q") == [1]
    assert len({s.thread for s in peer.calls}) == 2  # both workers really took part
    assert fail_v1["left"] == 0


@pytest.mark.postgres
def test_postgres_workers_never_double_claim(pg_url_test, keyring) -> None:
    """Four worker threads on PostgreSQL (SKIP LOCKED): every submission processed once, every delivery sent once."""
    from gateway.security.clients import add_essms, create_tenant
    from gateway.storage.db import make_engine, make_sessionmaker, session_scope

    engine = make_engine(pg_url_test)
    try:
        factory = make_sessionmaker(engine)
        with session_scope(factory) as session:
            t = create_tenant(session, code="og-pg", name="OG")
            add_essms(session, tenant_id=t.id, finess="750000010", name="EHPAD")
            tenant_id = t.id
        peer = FakeConnector()
        rt = make_runtime(factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
        n = 120
        for i in range(n):
            submit(
                factory,
                keyring,
                tenant_id=tenant_id,
                finess="750000010",
                person_ref=f"p{i % 40}",
                created_at=T0 + timedelta(milliseconds=i),
            )
        errors: list[BaseException] = []
        processed: list[str] = []

        def work(worker_id: str) -> None:
            idle = 0
            try:
                while idle < 20:
                    did = pipeline.process_next(rt, worker_id=worker_id)
                    if did:
                        processed.append(worker_id)
                    out = deliver_next(rt, worker_id=worker_id)
                    idle = 0 if (did or out is not None) else idle + 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(f"pg{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        assert len(processed) == n
        keys = [s.envelope.idempotency_key for s in peer.calls]
        assert len(keys) == n and len(set(keys)) == n
        assert len({w for w in processed}) > 1
        with factory() as session:
            assert set(session.scalars(select(Submission.status))) == {"delivered"}
            assert session.scalar(select(Attempt.id).where(Attempt.outcome != "success")) is None
            for i in range(40):
                versions = _versions(peer, f"p{i}")
                assert versions == sorted(versions) == list(range(1, 4))
    finally:
        engine.dispose()
