"""The engine against a real peer: the webhook connector (loaded from its entry point through a
routing file) delivering to the sandbox HTTP receiver on loopback."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway import pipeline, routing
from gateway.delivery import Backoff, deliver_next
from gateway.delivery.engine import claim_and_prepare
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.storage.models import Delivery, Submission
from gateway.worker import WorkerPool
from tests.gateway.engine.support import Clock, engine_url, submit
from tests.peers import SandboxClient, sandbox_thread


@pytest.fixture
def peer() -> Iterator[SandboxClient]:
    with sandbox_thread() as (_receiver, client):
        yield client


@pytest.fixture
def runtime(session_factory, keyring, peer: SandboxClient, tmp_path: Path) -> Runtime:
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(
        "destinations:\n"
        "  dui-hook:\n"
        "    connector: webhook\n"
        "    category: webhook\n"
        f"    settings: {{url: '{peer.url}/hooks/dui', health_url: '{peer.url}/_health', timeout: 5, signing: false}}\n"
        "rules:\n"
        "  - document_types: [test-note]\n"
        "    destinations: [dui-hook]\n"
    )
    settings = Settings(
        database_url=engine_url(session_factory),
        routing_file=routing_file,
        backoff_base_seconds=0.05,
        backoff_max_seconds=0.2,
        max_attempts=4,
        poll_interval_seconds=0.02,
        worker_concurrency=2,
    )
    table, connectors = routing.load(settings)
    return Runtime(
        settings=settings,
        engine=session_factory.kw["bind"],
        session_factory=session_factory,
        keyring=keyring,
        destinations=connectors,
        routing=table,
    )


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def _statuses(session_factory) -> list[str]:
    with session_factory() as session:
        return sorted(session.scalars(select(Submission.status)))


def test_delivered_to_the_sandbox_receiver_through_retries(
    session_factory, keyring, tenant, peer: SandboxClient, runtime: Runtime
) -> None:
    assert runtime.health()["dui-hook"].ok
    peer.control(fail_next=2, status=503)
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, text="Note de liaison")
    pool = WorkerPool(runtime)
    pool.start()
    try:
        _wait(lambda: _statuses(session_factory) == ["delivered"])
    finally:
        assert pool.stop(timeout=10)
    with session_factory() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.submission_id == sub_id)).one()
        assert delivery.attempt_count == 3
        assert [a.outcome for a in delivery.attempts] == ["transient", "transient", "success"]
    received = peer.received()
    assert [r["outcome"] for r in received] == ["failed", "failed", "accepted"]
    assert {r["idempotency_key"] for r in received} == {delivery.id}
    assert delivery.remote_id == peer.accepted()[0]["receipt_id"]
    body = json.loads(peer.body(received[-1]["n"]))
    (rendition,) = body["renditions"]
    assert b"Note de liaison" in base64.b64decode(rendition["content_base64"])
    assert body["facts"]["person_ref"] == "person-1"


def test_rejected_by_the_peer_is_dead_lettered(session_factory, keyring, tenant, peer, runtime) -> None:
    peer.control(reject_next=1, status=422)
    submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    clock = Clock()
    assert pipeline.process_next(runtime, worker_id="w1", clock=clock)
    out = deliver_next(runtime, worker_id="w1", clock=clock)
    assert out is not None and out.status == "dead"
    assert "422" in (out.error or "")
    assert _statuses(session_factory) == ["failed"]
    assert peer.accepted() == []


def test_worker_crash_after_sending_is_resent_and_the_peer_keeps_one_copy(
    session_factory, keyring, tenant, peer, runtime
) -> None:
    """A worker sends, then dies before recording: after its lease, another worker sends again
    with the same idempotency key; the receiver keeps one accepted copy, the delivery one success."""
    submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    clock = Clock()
    assert pipeline.process_next(runtime, worker_id="w1", clock=clock)
    claim = claim_and_prepare(runtime, worker_id="crashed", now=clock())
    assert claim is not None
    claim.connector.send(claim.envelope)  # ... and the process dies here
    clock.advance(runtime.settings.lease_seconds)
    out = deliver_next(runtime, worker_id="w2", clock=clock, backoff=Backoff())
    assert out is not None and out.status == "delivered"
    assert len(peer.received()) == 2 and len(peer.accepted()) == 1
    assert out.remote_id == peer.accepted()[0]["receipt_id"]
    with session_factory() as session:
        delivery = session.get(Delivery, claim.delivery_id)
        assert delivery is not None
        assert [(a.worker, a.outcome) for a in delivery.attempts] == [("crashed", "abandoned"), ("w2", "success")]
