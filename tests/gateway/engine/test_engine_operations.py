"""Operator actions: retry a dead letter, replay a submission, cancel what is not sent yet."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway import pipeline
from gateway.delivery import deliver_next
from gateway.errors import Conflict, NotFound
from gateway.services.operations import cancel_submission, replay_submission, retry_delivery
from gateway.storage.db import session_scope
from gateway.storage.models import Delivery, Submission
from tests.gateway.engine.support import (
    T0,
    Clock,
    FakeConnector,
    audit_actions,
    audit_events,
    make_runtime,
    permanent,
    submit,
    webhook_routing,
)


def _deliveries(session_factory, sub_id: str) -> list[Delivery]:
    with session_factory() as session:
        rows = list(
            session.scalars(
                select(Delivery).where(Delivery.submission_id == sub_id).order_by(Delivery.seq, Delivery.created_at)
            )
        )
        session.expunge_all()
        return rows


def _status(session_factory, sub_id: str) -> str:
    with session_factory() as session:
        return session.get(Submission, sub_id).status  # type: ignore[union-attr]


def test_retry_a_dead_delivery(session_factory, keyring, tenant) -> None:
    clock = Clock()
    peer = FakeConnector([permanent()])
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    pipeline.process_next(rt, worker_id="w1", clock=clock)
    deliver_next(rt, worker_id="w1", clock=clock)
    (dead,) = _deliveries(session_factory, sub_id)
    assert dead.status == "dead" and _status(session_factory, sub_id) == "failed"

    with pytest.raises(NotFound):
        with session_scope(session_factory) as session:
            retry_delivery(session, delivery_id=dead.id, actor="user:ops", tenant_id="another-tenant")
    with session_scope(session_factory) as session:
        row = retry_delivery(session, delivery_id=dead.id, actor="user:ops", tenant_id=tenant.id, now=clock())
        assert row.status == "pending"
    assert _status(session_factory, sub_id) == "routed"
    with pytest.raises(Conflict):
        with session_scope(session_factory) as session:
            retry_delivery(session, delivery_id=dead.id, actor="user:ops", tenant_id=tenant.id)

    out = deliver_next(rt, worker_id="w1", clock=clock)
    assert out is not None and out.status == "delivered"
    (row,) = _deliveries(session_factory, sub_id)
    assert row.attempt_count == 2  # attempts are kept across the retry
    assert _status(session_factory, sub_id) == "delivered"
    assert audit_actions(session_factory, dead.id) == [
        "send_started",
        "attempt",
        "dead_lettered",
        "retried",
        "send_started",
        "attempt",
        "delivered",
    ]
    (retried,) = audit_events(session_factory, dead.id, "retried")
    assert retried.actor == "user:ops"


def test_retry_refuses_an_older_version_once_a_newer_one_reached_the_destination(
    session_factory, keyring, tenant
) -> None:
    clock = Clock()
    peer = FakeConnector([permanent()])  # version 1 is refused, then the peer accepts
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    v1 = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, created_at=T0)
    v2 = submit(
        session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, created_at=T0 + timedelta(seconds=1)
    )
    while pipeline.process_next(rt, worker_id="w1", clock=clock):
        pass
    assert deliver_next(rt, worker_id="w1", clock=clock).status == "dead"  # v1
    assert deliver_next(rt, worker_id="w1", clock=clock).status == "delivered"  # v2 (v1 is terminal)
    (dead,) = _deliveries(session_factory, v1)
    (newer,) = _deliveries(session_factory, v2)
    assert newer.status == "delivered" and newer.seq > dead.seq

    with pytest.raises(Conflict, match="newer version"):
        with session_scope(session_factory) as session:
            retry_delivery(session, delivery_id=dead.id, actor="user:ops", tenant_id=tenant.id, now=clock())
    (still,) = _deliveries(session_factory, v1)
    assert still.status == "dead"
    assert [c.envelope.submission_id for c in peer.calls] == [v1, v2]


def test_replay_a_delivered_submission_sends_again_after_what_is_queued(session_factory, keyring, tenant) -> None:
    clock = Clock()
    peer = FakeConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("a", "b"), connectors={"a": peer, "b": peer})
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    pipeline.process_next(rt, worker_id="w1", clock=clock)
    while deliver_next(rt, worker_id="w1", clock=clock):
        pass
    assert _status(session_factory, sub_id) == "delivered"

    with session_scope(session_factory) as session:
        sub = replay_submission(session, submission_id=sub_id, actor="user:ops", tenant_id=tenant.id, now=clock())
        assert sub.status == "routed"
    rows = _deliveries(session_factory, sub_id)
    assert sorted((r.destination, r.seq, r.status) for r in rows) == [
        ("a", 1, "delivered"),
        ("a", 2, "pending"),
        ("b", 1, "delivered"),
        ("b", 2, "pending"),
    ]
    with pytest.raises(Conflict):  # still pending: a second replay is refused
        with session_scope(session_factory) as session:
            replay_submission(session, submission_id=sub_id, actor="user:ops", tenant_id=tenant.id)
    while deliver_next(rt, worker_id="w1", clock=clock):
        pass
    assert _status(session_factory, sub_id) == "delivered"
    assert len(peer.accepted) == 4
    first_id, replay_id = peer.accepted[0].envelope, peer.accepted[2].envelope
    assert first_id.renditions == replay_id.renditions  # same documents
    assert first_id.idempotency_key != replay_id.idempotency_key  # a replay is a new delivery
    (replayed,) = audit_events(session_factory, sub_id, "replayed")
    assert replayed.detail["mode"] == "deliveries" and len(replayed.detail["deliveries"]) == 2


def test_replay_a_rejected_submission_runs_the_pipeline_again(session_factory, keyring, tenant) -> None:
    from mappings import registry
    from tests.support.doctype import NOTE

    peer = FakeConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    registry.unregister(NOTE.code)  # the document type is missing in this deployment: rejected
    pipeline.process_next(rt, worker_id="w1", clock=Clock())
    assert _status(session_factory, sub_id) == "rejected"
    registry.register(NOTE)  # fixed by the operator; the replay re-runs the pipeline
    with session_scope(session_factory) as session:
        replay_submission(session, submission_id=sub_id, actor="user:ops", tenant_id=None)
    assert _status(session_factory, sub_id) == "received"
    pipeline.process_next(rt, worker_id="w1", clock=Clock())
    deliver_next(rt, worker_id="w1", clock=Clock())
    assert _status(session_factory, sub_id) == "delivered"
    assert audit_actions(session_factory, sub_id) == ["rejected", "replayed", "mapped", "routed"]


def test_cancel_pending_deliveries_leaves_in_flight_ones(session_factory, keyring, tenant) -> None:
    clock = Clock()
    a, b = FakeConnector(), FakeConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("a", "b"), connectors={"a": a, "b": b})
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    pipeline.process_next(rt, worker_id="w1", clock=clock)
    # put "a" in flight (claimed by a worker that is still sending)
    from gateway.delivery.engine import claim_and_prepare

    claim = claim_and_prepare(rt, worker_id="busy", now=clock(), destinations=["a"])
    assert claim is not None
    with session_scope(session_factory) as session:
        sub = cancel_submission(session, submission_id=sub_id, actor="user:ops", tenant_id=tenant.id)
        assert sub.status == "cancelled"
    statuses = {r.destination: r.status for r in _deliveries(session_factory, sub_id)}
    assert statuses == {"a": "in_flight", "b": "cancelled"}
    assert deliver_next(rt, worker_id="w2", clock=clock) is None  # nothing left to claim
    (event,) = audit_events(session_factory, sub_id, "cancelled")
    assert event.detail["left_in_flight"] == [claim.delivery_id]
    with pytest.raises(Conflict):
        with session_scope(session_factory) as session:
            cancel_submission(session, submission_id=sub_id, actor="user:ops", tenant_id=tenant.id)
    assert _status(session_factory, sub_id) == "cancelled"


def test_cancel_before_processing_and_not_found(session_factory, keyring, tenant) -> None:
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("a"), connectors={"a": FakeConnector()})
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    with session_scope(session_factory) as session:
        cancel_submission(session, submission_id=sub_id, actor="user:ops", tenant_id=tenant.id)
    assert pipeline.process_next(rt, worker_id="w1", clock=Clock()) is False  # never processed
    with pytest.raises(NotFound):
        with session_scope(session_factory) as session:
            cancel_submission(session, submission_id="nope", actor="user:ops", tenant_id=tenant.id)
    # a cancelled submission stays cancelled: replay does not revive it (submit the record again)
    with pytest.raises(Conflict, match="cancelled"):
        with session_scope(session_factory) as session:
            replay_submission(session, submission_id=sub_id, actor="user:ops", tenant_id=tenant.id)
    assert pipeline.process_next(rt, worker_id="w1", clock=Clock()) is False
    assert _status(session_factory, sub_id) == "cancelled"


def test_a_failed_submission_replayed_successfully_is_delivered(session_factory, keyring, tenant) -> None:
    """Only each destination's latest delivery decides the status: the dead letter a replay
    superseded must not keep a fully re-delivered submission 'partially_failed' forever."""
    clock = Clock()
    peer = FakeConnector([permanent()])  # first send refused, the next ones accepted
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    pipeline.process_next(rt, worker_id="w1", clock=clock)
    deliver_next(rt, worker_id="w1", clock=clock)
    assert _status(session_factory, sub_id) == "failed"

    with session_scope(session_factory) as session:
        replay_submission(session, submission_id=sub_id, actor="user:ops", tenant_id=tenant.id, now=clock())
    while deliver_next(rt, worker_id="w1", clock=clock):
        pass
    assert sorted((r.seq, r.status) for r in _deliveries(session_factory, sub_id)) == [(1, "dead"), (2, "delivered")]
    assert _status(session_factory, sub_id) == "delivered"
    # retrying the superseded dead letter puts the submission back in progress until it is sent
    (dead,) = [r for r in _deliveries(session_factory, sub_id) if r.status == "dead"]
    with session_scope(session_factory) as session:
        retry_delivery(session, delivery_id=dead.id, actor="user:ops", tenant_id=tenant.id, now=clock())
    assert _status(session_factory, sub_id) == "routed"
    while deliver_next(rt, worker_id="w1", clock=clock):
        pass
    assert _status(session_factory, sub_id) == "delivered"
