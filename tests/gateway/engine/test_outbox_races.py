"""Outbox races: a stale worker against a fresh claim, lock orders under concurrent operators,
leases shorter than the send, and per-destination bulkheads (issue 7, defects 3, 4 and 8).

Real threads and, where the race is PostgreSQL's, real PostgreSQL sessions; no mocks.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from gateway import pipeline
from gateway.delivery import deliver_next
from gateway.delivery.engine import ConnectorPolicyError, check_connectors
from gateway.delivery.outbox import as_utc
from gateway.settings import Settings
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
    assert len(samples) >= 10
    assert all(until > wall for wall, until in samples), "the lease lapsed during the send"
    assert samples[-1][1] - samples[0][1] >= timedelta(seconds=1.5)  # really extended, not one long lease
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
    with pytest.raises(ConnectorPolicyError, match="'slow'.*120 s exceeds"):
        rt.load_routing()
    ok = make_runtime(session_factory, keyring, routing_file=path, max_send_seconds=120)
    ok.load_routing()
    assert set(ok.destinations) == {"slow"}
