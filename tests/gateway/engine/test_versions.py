"""Destination-truthful versions (issue 7 defects 5 and 6): a new version replaces only a version
that reached a destination; what each destination holds travels in the envelope; several series
per person (one FLUDT per transfer) keep their own numbering."""

from __future__ import annotations

from sqlalchemy import select

from gateway import pipeline
from gateway.delivery import deliver_next
from gateway.services.operations import cancel_submission
from gateway.storage.db import session_scope
from gateway.storage.models import Delivery, Rendition
from tests.gateway.engine.support import Clock, FakeConnector, make_runtime, permanent, submit, webhook_routing


def _rendition(session_factory, sub_id: str) -> Rendition:
    with session_factory() as session:
        (row,) = session.scalars(select(Rendition).where(Rendition.submission_id == sub_id)).all()
        session.expunge(row)
        return row


def _version(session_factory, keyring, tenant, rt, clock, **fields) -> str:
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, **fields)
    assert pipeline.process_next(rt, worker_id="w0", clock=clock)
    clock.advance(1)
    return sub_id


def _drain(rt, clock) -> None:
    while deliver_next(rt, worker_id="w1", clock=clock):
        pass


def test_a_new_version_never_replaces_one_that_was_dead_lettered(session_factory, keyring, tenant) -> None:
    clock = Clock()
    peer = FakeConnector([permanent("refused")])
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("a"), connectors={"a": peer})
    v1 = _version(session_factory, keyring, tenant, rt, clock)
    _drain(rt, clock)  # v1 dead-lettered: nobody has it
    v2 = _version(session_factory, keyring, tenant, rt, clock)
    r1, r2 = _rendition(session_factory, v1), _rendition(session_factory, v2)
    assert (r2.set_id, r2.version) == (r1.set_id, 2)  # numbers are never reused
    assert r2.replaces is None  # ... but v1 reached nobody: nothing to replace
    _drain(rt, clock)
    v3 = _version(session_factory, keyring, tenant, rt, clock)
    r3 = _rendition(session_factory, v3)
    assert (r3.version, r3.replaces) == (3, r2.document_id)
    _drain(rt, clock)
    # the destination is told what it holds: v2 only (v1 never reached it)
    v3_envelope = peer.accepted[-1].envelope
    assert v3_envelope.submission_id == v3
    assert {h.version for h in v3_envelope.held.values()} == {2}
    (held,) = v3_envelope.held.values()
    assert held.document_id == r2.document_id and held.remote_id == "remote-1"


def test_a_cancelled_version_is_not_replaced(session_factory, keyring, tenant) -> None:
    clock = Clock()
    peer = FakeConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("a"), connectors={"a": peer})
    v1 = _version(session_factory, keyring, tenant, rt, clock)
    _drain(rt, clock)
    v2 = _version(session_factory, keyring, tenant, rt, clock)
    with session_scope(session_factory) as session:
        cancel_submission(session, submission_id=v2, actor="user:ops", tenant_id=tenant.id)
    v3 = _version(session_factory, keyring, tenant, rt, clock)
    r1, r3 = _rendition(session_factory, v1), _rendition(session_factory, v3)
    assert (r3.version, r3.replaces) == (3, r1.document_id)


def test_each_destination_is_told_what_it_holds(session_factory, keyring, tenant) -> None:
    clock = Clock()
    a, b = FakeConnector(), FakeConnector([permanent()])
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("a", "b"), connectors={"a": a, "b": b})
    v1 = _version(session_factory, keyring, tenant, rt, clock)
    _drain(rt, clock)  # delivered to a, dead at b
    v2 = _version(session_factory, keyring, tenant, rt, clock)
    _drain(rt, clock)
    r1 = _rendition(session_factory, v1)
    (to_a,) = [s.envelope for s in a.accepted if s.envelope.submission_id == v2]
    (to_b,) = [s.envelope for s in b.accepted if s.envelope.submission_id == v2]
    assert [h.document_id for h in to_a.held.values()] == [r1.document_id]
    assert to_b.held == {}  # b never received v1: a replacement there must not point at it
    assert _rendition(session_factory, v2).replaces == r1.document_id  # a has it


def test_series_chosen_by_the_record_keep_their_own_versions(session_factory, keyring, tenant) -> None:
    """Defect 6: with one series per transfer, resending transfer A after transfer B used to
    restart A at version 1 without RPLC (two documents with the same setId and version)."""
    clock = Clock()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("a"), connectors={"a": FakeConnector()})
    a1 = _version(session_factory, keyring, tenant, rt, clock, series="A")
    b1 = _version(session_factory, keyring, tenant, rt, clock, series="B")
    a2 = _version(session_factory, keyring, tenant, rt, clock, series="A")
    r_a1, r_b1, r_a2 = (_rendition(session_factory, s) for s in (a1, b1, a2))
    assert r_a1.set_id != r_b1.set_id
    assert (r_a2.set_id, r_a2.version, r_a2.replaces) == (r_a1.set_id, 2, r_a1.document_id)
    assert r_b1.version == 1 and r_b1.replaces is None
    with session_factory() as session:
        seqs = session.scalars(select(Delivery.seq).order_by(Delivery.seq)).all()
    assert list(seqs) == [1, 2, 3]  # one ordered series per person and document type
