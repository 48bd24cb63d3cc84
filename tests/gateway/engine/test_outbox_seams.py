"""The acknowledgement seam (issue 7): ``sent`` -> receipt -> ``delivered`` / ``failed`` /
``unconfirmed``, receipts stored and audited, and peer-chosen ids that look like a NIR (defect 2)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from connectors.base import Acknowledgement, Envelope, Receipt
from gateway import audit, pipeline
from gateway.delivery import deliver_next, outbox
from gateway.delivery.outbox import retry_delivery
from gateway.storage.db import session_scope
from gateway.storage.models import Attempt, Delivery, Submission
from gateway.storage.models import Receipt as ReceiptRow
from tests.gateway.engine.support import (
    T0,
    Clock,
    FakeConnector,
    audit_actions,
    audit_events,
    make_runtime,
    submit,
    webhook_routing,
)

RECEIPT_TIMEOUT = 600


class Relay(FakeConnector):
    """A relay (SMTP, HL7 commit ACK...): accepted, the receipt comes later under ``ack-<id>``.
    ``gate``: when set, send() waits for it (to hold the delivery in flight)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def send(self, envelope: Envelope) -> Receipt:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        super().send(envelope)
        return Receipt(status="sent", ack_ref=f"ack-{envelope.delivery_id}", remote_id=f"msg-{len(self.accepted)}")


class PeerId(FakeConnector):
    """A destination answering with an id of its own choosing."""

    def __init__(self, remote_id: str) -> None:
        super().__init__()
        self.remote_id = remote_id

    def send(self, envelope: Envelope) -> Receipt:
        super().send(envelope)
        return Receipt(remote_id=self.remote_id, detail={"id": self.remote_id})


def _setup(session_factory, keyring, tenant, peer, *, versions: int = 1, person: str = "p") -> tuple[Any, list[str]]:
    rt = make_runtime(
        session_factory,
        keyring,
        routing=webhook_routing("relay"),
        connectors={"relay": peer},
        receipt_timeout_seconds=RECEIPT_TIMEOUT,
    )
    for n in range(versions):
        submit(
            session_factory,
            keyring,
            tenant_id=tenant.id,
            finess=tenant.finess,
            person_ref=person,
            created_at=T0 + timedelta(seconds=n),
        )
    while pipeline.process_next(rt, worker_id="router", clock=Clock()):
        pass
    with session_factory() as session:  # the deliveries still to send, in series order
        return rt, list(session.scalars(select(Delivery.id).where(Delivery.status == "pending").order_by(Delivery.seq)))


def _row(session_factory, delivery_id: str) -> Delivery:
    with session_factory() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        session.expunge_all()
        return row


def _sub_status(session_factory, delivery_id: str) -> str:
    with session_factory() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        sub = session.get(Submission, row.submission_id)
        assert sub is not None
        return sub.status


def _ack(session_factory, tenant_id: str, ref: str, outcome: str, clock: Clock, **fields: Any) -> outbox.AckResult:
    ack = Acknowledgement(ack_ref=ref, outcome=outcome, kind=fields.pop("kind", "dsn"), **fields)  # type: ignore[arg-type]
    with session_scope(session_factory) as session:
        return outbox.acknowledge(session, ack, tenant_id=tenant_id, now=clock(), actor="peer:relay")


def _receipts(session_factory, delivery_id: str) -> list[ReceiptRow]:
    with session_factory() as session:
        rows = list(
            session.scalars(
                select(ReceiptRow).where(ReceiptRow.delivery_id == delivery_id).order_by(ReceiptRow.received_at)
            )
        )
        session.expunge_all()
        return rows


def _chain_ok(session_factory) -> None:
    with session_factory() as session:
        result = audit.verify(session)
        assert result.ok, result.problems


def test_sent_holds_the_series_until_the_receipt_says_delivered(session_factory, keyring, tenant) -> None:
    clock = Clock()
    relay = Relay()
    rt, (first, second) = _setup(session_factory, keyring, tenant, relay, versions=2)

    out = deliver_next(rt, worker_id="w", clock=clock)
    assert out is not None and out.delivery_id == first and out.status == "sent"
    row = _row(session_factory, first)
    assert (row.status, row.ack_ref, row.remote_id) == ("sent", f"ack-{first}", "msg-1")
    assert outbox.as_utc(row.receipt_due_at) == T0 + timedelta(seconds=RECEIPT_TIMEOUT)  # type: ignore[arg-type]
    assert row.lease_owner is None and row.delivered_at is None
    assert _sub_status(session_factory, first) == "routed"  # not delivered yet
    clock.advance(RECEIPT_TIMEOUT - 1)
    assert deliver_next(rt, worker_id="w", clock=clock) is None  # version 2 waits for version 1's receipt

    result = _ack(session_factory, tenant.id, f"ack-{first}", "delivered", clock, remote_id="dsn-77")
    assert (result.result, result.delivery_id, result.status) == ("applied", first, "delivered")
    row = _row(session_factory, first)
    assert row.status == "delivered" and row.delivered_at is not None and row.receipt_due_at is None
    assert _sub_status(session_factory, first) == "delivered"
    (stored,) = _receipts(session_factory, first)
    assert (stored.kind, stored.outcome, stored.remote_id, stored.applied) == ("dsn", "delivered", "dsn-77", True)
    (delivered,) = audit_events(session_factory, first, "delivered")
    assert delivered.actor == "peer:relay" and delivered.detail["receipt"] == stored.id
    assert delivered.detail["peer"]["remote_id"] == "dsn-77"
    assert audit_actions(session_factory, first) == ["send_started", "attempt", "sent", "delivered"]

    # a duplicate receipt is kept and audited, and changes nothing
    again = _ack(session_factory, tenant.id, f"ack-{first}", "delivered", clock)
    assert (again.result, again.status) == ("stored", "delivered")
    assert [r.applied for r in _receipts(session_factory, first)] == [True, False]
    (dup,) = audit_events(session_factory, first, "receipt")
    assert dup.detail["status"] == "delivered" and dup.detail["peer"]["outcome"] == "delivered"

    out = deliver_next(rt, worker_id="w", clock=clock)  # now version 2 goes
    assert out is not None and out.delivery_id == second and out.status == "sent"
    _chain_ok(session_factory)


def test_a_failed_receipt_fails_the_delivery_which_can_be_retried(session_factory, keyring, tenant) -> None:
    clock = Clock()
    relay = Relay()
    rt, (first,) = _setup(session_factory, keyring, tenant, relay)
    assert deliver_next(rt, worker_id="w", clock=clock).status == "sent"  # type: ignore[union-attr]
    result = _ack(session_factory, tenant.id, f"ack-{first}", "failed", clock, reason="5.2.2 mailbox full")
    assert (result.result, result.status) == ("applied", "failed")
    row = _row(session_factory, first)
    assert row.status == "failed" and row.last_error == "dsn: 5.2.2 mailbox full"
    assert _sub_status(session_factory, first) == "failed"
    (failed,) = audit_events(session_factory, first, "receipt_failed")
    assert failed.outcome == "failure" and failed.detail["peer"]["reason"] == "5.2.2 mailbox full"

    with session_scope(session_factory) as session:
        retried = retry_delivery(session, delivery_id=first, actor="user:ops", tenant_id=tenant.id, now=clock())
        assert retried.status == "pending" and retried.ack_ref is None
    out = deliver_next(rt, worker_id="w", clock=clock)
    assert out is not None and out.status == "sent" and out.attempt == 2
    assert _row(session_factory, first).ack_ref == f"ack-{first}"
    assert _ack(session_factory, tenant.id, f"ack-{first}", "delivered", clock).status == "delivered"
    assert _sub_status(session_factory, first) == "delivered"
    _chain_ok(session_factory)


def test_a_receipt_before_the_send_is_recorded_is_applied_when_it_is(session_factory, keyring, tenant) -> None:
    """A fast peer acknowledges (by delivery id, the idempotency key) while the send is in flight."""
    clock = Clock()
    relay = Relay()
    relay.gate = threading.Event()
    rt, (first,) = _setup(session_factory, keyring, tenant, relay)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(deliver_next(rt, worker_id="w", clock=clock)))
    thread.start()
    try:
        assert relay.entered.wait(10)
        early = _ack(session_factory, tenant.id, first, "delivered", clock, kind="webhook-receipt")
        assert (early.result, early.status) == ("stored", "in_flight")
        assert [r.applied for r in _receipts(session_factory, first)] == [False]
    finally:
        relay.gate.set()
        thread.join(10)
    (out,) = results
    assert out is not None and out.status == "sent"  # what the send itself said
    row = _row(session_factory, first)
    assert row.status == "delivered" and row.delivered_at is not None
    assert [r.applied for r in _receipts(session_factory, first)] == [True]
    assert _sub_status(session_factory, first) == "delivered"
    assert audit_actions(session_factory, first) == ["send_started", "receipt", "attempt", "sent", "delivered"]
    _chain_ok(session_factory)


def test_an_overdue_receipt_makes_the_delivery_unconfirmed(session_factory, keyring, tenant) -> None:
    clock = Clock()
    relay = Relay()
    rt, (first, second) = _setup(session_factory, keyring, tenant, relay, versions=2)
    assert deliver_next(rt, worker_id="w", clock=clock).status == "sent"  # type: ignore[union-attr]
    with session_scope(session_factory) as session:
        assert outbox.expire_receipts(session, now=clock() + timedelta(seconds=RECEIPT_TIMEOUT - 1)) == 0
    clock.advance(RECEIPT_TIMEOUT)
    with session_scope(session_factory) as session:
        assert outbox.expire_receipts(session, now=clock()) == 1
    row = _row(session_factory, first)
    assert row.status == "unconfirmed" and row.last_error == "no receipt before the configured time"
    assert _sub_status(session_factory, first) == "failed"  # nobody confirmed it reached the destination
    (overdue,) = audit_events(session_factory, first, "receipt_overdue")
    assert overdue.outcome == "failure"
    with session_scope(session_factory) as session:
        assert outbox.expire_receipts(session, now=clock()) == 0  # once
    # unconfirmed has ended: version 2 is no longer held back
    out = deliver_next(rt, worker_id="w", clock=clock)
    assert out is not None and out.delivery_id == second
    # a late receipt still tells the truth
    late = _ack(session_factory, tenant.id, f"ack-{first}", "delivered", clock)
    assert (late.result, late.status) == ("applied", "delivered")
    assert _sub_status(session_factory, first) == "delivered"
    _chain_ok(session_factory)


def test_receipts_nobody_asked_for_are_unknown(session_factory, keyring, tenant) -> None:
    clock = Clock()
    rt, (first,) = _setup(session_factory, keyring, tenant, Relay())
    assert deliver_next(rt, worker_id="w", clock=clock).status == "sent"  # type: ignore[union-attr]
    assert _ack(session_factory, tenant.id, "ack-nobody", "delivered", clock).result == "unknown"
    assert _ack(session_factory, "another-tenant", f"ack-{first}", "delivered", clock).result == "unknown"
    assert _receipts(session_factory, first) == []
    assert _row(session_factory, first).status == "sent"


# -- defect 2: a peer's id that looks like a NIR is not personal data of ours -------------------------
@pytest.mark.parametrize("remote_id", ["1733000000000", "185057800608436"], ids=["13-digit", "15-digit"])
def test_a_numeric_peer_id_is_recorded_not_refused(session_factory, keyring, tenant, remote_id: str) -> None:
    """``{"id": 1733000000000}`` matches the NIR pattern of the audit guard: the delivery must
    still be recorded as delivered at once, the id kept under the audit's ``peer`` values."""
    clock = Clock()
    peer = PeerId(remote_id)
    rt, (first,) = _setup(session_factory, keyring, tenant, peer)
    out = deliver_next(rt, worker_id="w", clock=clock)
    assert out is not None and out.status == "delivered" and out.remote_id == remote_id
    assert deliver_next(rt, worker_id="w", clock=clock) is None
    assert len(peer.calls) == 1  # accepted once, never resent
    row = _row(session_factory, first)
    assert (row.status, row.remote_id, row.attempt_count) == ("delivered", remote_id, 1)
    with session_factory() as session:
        assert session.scalar(select(Attempt.remote_id).where(Attempt.delivery_id == first)) == remote_id
    for action in ("attempt", "delivered"):
        (event,) = audit_events(session_factory, first, action)
        assert event.detail["peer"]["remote_id"] == remote_id
        assert remote_id not in {str(v) for k, v in event.detail.items() if k != "peer"}
    # the same id in a receipt's remote id and reason is stored as the peer's, too
    relay = Relay()
    rt2, (sent_id,) = _setup(session_factory, keyring, tenant, relay, person="q")
    assert deliver_next(rt2, worker_id="w", clock=clock).status == "sent"  # type: ignore[union-attr]
    result = _ack(
        session_factory, tenant.id, f"ack-{sent_id}", "delivered", clock, remote_id=remote_id, reason=remote_id
    )
    assert result.result == "applied"
    (event,) = audit_events(session_factory, sent_id, "delivered")
    assert event.detail["peer"] == {"remote_id": remote_id, "reason": remote_id}
    _chain_ok(session_factory)


def test_every_overdue_receipt_is_expired_in_one_sweep(session_factory, keyring, tenant) -> None:
    """The worker sweeps every few seconds: one sweep must expire the whole backlog (up to its
    limit), not one delivery per sweep, or a relay outage alerts one document at a time."""
    clock = Clock()
    relay = Relay()
    rt = make_runtime(
        session_factory,
        keyring,
        routing=webhook_routing("relay", "other"),
        connectors={"relay": relay, "other": Relay()},
        receipt_timeout_seconds=RECEIPT_TIMEOUT,
    )
    for n in range(3):
        submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref=f"p{n}")
    while pipeline.process_next(rt, worker_id="router", clock=clock):
        pass
    while deliver_next(rt, worker_id="w", clock=clock):
        pass
    with session_factory() as session:
        assert set(session.scalars(select(Delivery.status))) == {"sent"}
    clock.advance(RECEIPT_TIMEOUT)
    with session_scope(session_factory) as session:
        assert outbox.expire_receipts(session, now=clock(), limit=4) == 4
    with session_scope(session_factory) as session:
        assert outbox.expire_receipts(session, now=clock()) == 2
    with session_factory() as session:
        assert set(session.scalars(select(Delivery.status))) == {"unconfirmed"}
        assert set(session.scalars(select(Submission.status))) == {"failed"}
    with session_factory() as session:
        ids = list(session.scalars(select(Delivery.id)))
    assert all(len(audit_events(session_factory, i, "receipt_overdue")) == 1 for i in ids)
    _chain_ok(session_factory)


def test_a_stale_duplicate_receipt_does_not_end_the_retried_delivery(session_factory, keyring, tenant) -> None:
    """Attempt 1: sent, receipt "failed", then the same receipt again (stored, not applied). The
    operator retries: attempt 2 is sent and must wait for *its* receipt, not be failed at once by
    the duplicate left over from attempt 1."""
    clock = Clock()
    rt, (first,) = _setup(session_factory, keyring, tenant, Relay())
    assert deliver_next(rt, worker_id="w", clock=clock).status == "sent"  # type: ignore[union-attr]
    clock.advance(1)
    assert _ack(session_factory, tenant.id, f"ack-{first}", "failed", clock).result == "applied"
    clock.advance(1)
    assert _ack(session_factory, tenant.id, f"ack-{first}", "failed", clock).result == "stored"
    clock.advance(1)
    with session_scope(session_factory) as session:
        retry_delivery(session, delivery_id=first, actor="user:ops", tenant_id=tenant.id, now=clock())
    clock.advance(1)
    out = deliver_next(rt, worker_id="w", clock=clock)
    assert out is not None and out.status == "sent" and out.attempt == 2
    row = _row(session_factory, first)
    assert row.status == "sent", f"attempt 2 ended by attempt 1's duplicate receipt: {row.status} {row.last_error}"
    assert [r.applied for r in _receipts(session_factory, first)] == [True, False]
    clock.advance(1)
    assert _ack(session_factory, tenant.id, f"ack-{first}", "delivered", clock).status == "delivered"
