"""Outbox races: a stale worker against a fresh claim, lock orders under concurrent operators,
leases shorter than the send, and per-destination bulkheads (issue 7, defects 3, 4 and 8).

Real threads and, where the race is PostgreSQL's, real PostgreSQL sessions; no mocks.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from gateway import pipeline
from gateway.delivery import deliver_next
from gateway.storage.models import Attempt, Delivery
from tests.gateway.engine.support import (
    T0,
    Clock,
    FakeConnector,
    GateConnector,
    audit_events,
    make_runtime,
    submit,
    webhook_routing,
)


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
