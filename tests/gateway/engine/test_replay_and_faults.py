"""Replay keeps the order, honours Idempotency-Key and is throttled (issue 7 defect 7); the
gateway's own faults never become a permanent outcome for the document (defect 9)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from gateway import pipeline
from gateway.delivery import deliver_next
from gateway.errors import Conflict, TooManyRequests
from gateway.security.crypto import KeyRing, generate_master_key
from gateway.services.operations import replay_submission
from gateway.storage.db import session_scope
from gateway.storage.models import Attempt, Delivery, Submission
from tests.gateway.engine.support import (
    Clock,
    FakeConnector,
    audit_events,
    make_runtime,
    submit,
    webhook_routing,
)


def _delivered(session_factory, keyring, tenant, rt, clock, **fields) -> str:
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, **fields)
    assert pipeline.process_next(rt, worker_id="w0", clock=clock)
    while deliver_next(rt, worker_id="w1", clock=clock):
        pass
    clock.advance(1)
    return sub_id


def _replay(session_factory, sub_id, tenant, clock, **kwargs):
    with session_scope(session_factory) as session:
        return replay_submission(
            session, submission_id=sub_id, actor="user:ops", tenant_id=tenant.id, now=clock(), **kwargs
        )


def test_replaying_an_older_version_after_a_newer_one_was_delivered_is_refused(
    session_factory, keyring, tenant
) -> None:
    clock = Clock()
    peer = FakeConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("a"), connectors={"a": peer})
    v1 = _delivered(session_factory, keyring, tenant, rt, clock)
    _delivered(session_factory, keyring, tenant, rt, clock)
    with pytest.raises(Conflict, match="newer version"):
        _replay(session_factory, v1, tenant, clock)
    assert [s.envelope.renditions[0].version for s in peer.accepted] == [1, 2]  # never 1, 2, 1


def test_replay_with_the_same_idempotency_key_happens_once(session_factory, keyring, tenant) -> None:
    clock = Clock()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("a"), connectors={"a": FakeConnector()})
    sub_id = _delivered(session_factory, keyring, tenant, rt, clock)
    _replay(session_factory, sub_id, tenant, clock, idempotency_key="k-1")
    _replay(session_factory, sub_id, tenant, clock, idempotency_key="k-1")  # a client's retry
    with session_factory() as session:
        assert len(session.scalars(select(Delivery).where(Delivery.submission_id == sub_id)).all()) == 2
    assert len(audit_events(session_factory, sub_id, "replayed")) == 1


def test_replays_are_throttled(session_factory, keyring, tenant) -> None:
    clock = Clock()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("a"), connectors={"a": FakeConnector()})
    sub_id = _delivered(session_factory, keyring, tenant, rt, clock)
    _replay(session_factory, sub_id, tenant, clock, min_interval_seconds=60)
    while deliver_next(rt, worker_id="w1", clock=clock):
        pass
    clock.advance(10)
    with pytest.raises(TooManyRequests) as caught:
        _replay(session_factory, sub_id, tenant, clock, min_interval_seconds=60)
    assert caught.value.headers["Retry-After"] == "50"
    clock.advance(50)
    _replay(session_factory, sub_id, tenant, clock, min_interval_seconds=60)  # allowed again


def test_a_missing_master_key_holds_the_submission_instead_of_rejecting_it(session_factory, keyring, tenant) -> None:
    clock = Clock()
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    other = KeyRing.parse(f"other:{generate_master_key()}")  # the tenant's data key is not wrapped by it
    rt = make_runtime(session_factory, other, routing=webhook_routing("a"), connectors={"a": FakeConnector()})
    assert pipeline.process_next(rt, worker_id="w1", clock=clock)
    with session_factory() as session:
        sub = session.get(Submission, sub_id)
        assert sub is not None and sub.status == "received"  # held, not rejected
        assert sub.lease_owner == pipeline.HELD_OWNER and sub.report["stage"] == "load"
    # the right key ring comes back: the same submission goes through
    clock.advance(61)
    good = make_runtime(session_factory, keyring, routing=webhook_routing("a"), connectors={"a": FakeConnector()})
    assert pipeline.process_next(good, worker_id="w1", clock=clock)
    with session_factory() as session:
        assert session.get(Submission, sub_id).status == "routed"


def test_a_delivery_that_cannot_be_prepared_for_the_gateways_fault_is_deferred_not_dead(
    session_factory, keyring, tenant
) -> None:
    clock = Clock()
    peer = FakeConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("a"), connectors={"a": peer}, max_attempts=2)
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    assert pipeline.process_next(rt, worker_id="w0", clock=clock)
    other = KeyRing.parse(f"other:{generate_master_key()}")
    wrong = make_runtime(session_factory, other, routing=webhook_routing("a"), connectors={"a": peer}, max_attempts=2)
    wrong.keyring.forget()
    for _ in range(4):  # more than max_attempts: an infrastructure fault never dead-letters
        out = deliver_next(wrong, worker_id="w1", clock=clock)
        assert out is not None and out.status == "pending" and "key" in (out.error or "")
        clock.advance(3600)
    assert peer.calls == []
    out = deliver_next(rt, worker_id="w2", clock=clock)
    assert out is not None and out.status == "delivered"
    with session_factory() as session:
        outcomes = session.scalars(select(Attempt.outcome).order_by(Attempt.number)).all()
    assert list(outcomes) == ["deferred"] * 4 + ["success"]
    with session_factory() as session:
        assert session.get(Submission, sub_id).status == "delivered"
