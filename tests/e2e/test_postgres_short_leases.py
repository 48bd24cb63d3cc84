"""PostgreSQL, two ``dui-gateway worker`` processes, leases shorter than every send (issue 7, defect 8).

Each delivery takes the sandbox ~1.5 s to answer while ``DUI_GATEWAY_LEASE_SECONDS=1``: only the
lease heartbeat keeps another worker from claiming a delivery that is still being sent. Checked
at the sandbox (every POST, not only the accepted ones) and in the audit trail. The second test
switches the heartbeat off and shows what it prevents: the same deliveries POSTed again.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.delivery.outbox import ENDED
from gateway.storage.models import ApiClient, AuditEvent, Delivery
from tests.peers.gateway import (
    Deployment,
    bulk_load_and_route,
    create_pg_database,
    drop_pg_database,
    provision,
    webhook_routing,
)
from tests.peers.sandbox import SandboxClient
from tests.support.doctype import NOTE

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

FINESS = "750000010"
SEND_SECONDS = 1.5  # every answer of the sandbox takes this long: longer than the lease


@pytest.fixture
def pg_deployment(tmp_path: Path, pg_url: str) -> Iterator[Deployment]:
    url = create_pg_database(pg_url)
    dep = Deployment.create(tmp_path / "deployment", db_url=url)
    try:
        yield dep
    finally:
        dep.close()
        drop_pg_database(url)


def _load(dep: Deployment, *, persons: int, versions: int) -> SandboxClient:
    dep.migrate()
    tenant = provision(dep.db_url, finess=FINESS)
    sandbox = dep.start_sandbox()
    sandbox.control(delay=SEND_SECONDS)
    dep.write_routing(webhook_routing(sandbox.url, destinations={"outbox": "webhook"}, document_types=[NOTE.code]))
    with dep.engine.connect() as conn:
        client_id = conn.execute(select(ApiClient.id).where(ApiClient.tenant_id == tenant.tenant_id)).scalar_one()
    bulk_load_and_route(dep, client_id=client_id, persons=persons, versions=versions, finess=FINESS)
    return sandbox


def _count(dep: Deployment, *conditions: object) -> int:
    with dep.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Delivery).where(*conditions)).scalar_one())


def _audit_per_delivery(dep: Deployment, action: str) -> Counter[str]:
    with dep.engine.connect() as conn:
        rows = conn.execute(
            select(AuditEvent.entity_id, func.count())
            .where(AuditEvent.entity_type == "delivery", AuditEvent.action == action)
            .group_by(AuditEvent.entity_id)
        ).all()
    return Counter({entity_id: n for entity_id, n in rows})


def test_two_workers_with_one_second_leases_send_each_delivery_once(pg_deployment: Deployment) -> None:
    dep = pg_deployment
    persons, versions = 60, 3
    total = persons * versions
    sandbox = _load(dep, persons=persons, versions=versions)
    started = time.perf_counter()
    settings = {"lease_seconds": "1", "worker_concurrency": "6", "destination_concurrency": "6"}
    for n in (1, 2):
        dep.start_worker(f"worker-{n}", **settings)
    dep.wait_until(lambda: _count(dep, Delivery.status == "delivered") == total, timeout=120, what=f"{total} delivered")
    print(f"\n{total} deliveries of {SEND_SECONDS} s each, 1 s leases, 2 workers: {time.perf_counter() - started:.1f}s")

    received = sandbox.received()
    with dep.engine.connect() as conn:
        delivery_ids = set(conn.execute(select(Delivery.id)).scalars())
        attempts = Counter(dict(conn.execute(select(Delivery.id, Delivery.attempt_count)).all()))
    # every POST counted, not only the accepted ones: each delivery reached the peer exactly once
    posts = Counter(r["idempotency_key"] for r in received)
    assert posts == Counter(dict.fromkeys(delivery_ids, 1)), posts.most_common(3)
    assert {r["outcome"] for r in received} == {"accepted"}
    assert set(attempts.values()) == {1}  # no delivery was ever claimed twice
    # versions in order per series, in the receiver's arrival order
    series: dict[str, list[int]] = defaultdict(list)
    for r in sorted(received, key=lambda r: r["n"]):
        [doc] = r["documents"]
        series[doc["set_id"]].append(doc["version"])
    assert len(series) == persons
    assert all(v == list(range(1, versions + 1)) for v in series.values())
    # the audit trail: one send_started and one delivered per delivery, no lease ever lost
    assert _audit_per_delivery(dep, "send_started") == Counter(dict.fromkeys(delivery_ids, 1))
    assert _audit_per_delivery(dep, "delivered") == Counter(dict.fromkeys(delivery_ids, 1))
    assert _audit_per_delivery(dep, "lease_lost") == Counter()
    assert _audit_per_delivery(dep, "attempt_abandoned") == Counter()


def test_without_the_heartbeat_a_slow_send_is_sent_again(pg_deployment: Deployment) -> None:
    """Why the heartbeat exists: with it off, a 1 s lease lapses during every 1.5 s send and the
    other worker sends the same delivery again. The sandbox, idempotent, accepts each key once;
    a peer that is not would have received duplicates. (The old engine had no heartbeat.)"""
    dep = pg_deployment
    persons, versions = 10, 2
    total = persons * versions
    sandbox = _load(dep, persons=persons, versions=versions)
    settings = {
        "lease_seconds": "1",
        "lease_heartbeat": "false",
        "worker_concurrency": "4",
        "destination_concurrency": "4",
    }
    for n in (1, 2):
        dep.start_worker(f"worker-{n}", **settings)
    dep.wait_until(lambda: _count(dep, Delivery.status.in_(ENDED)) == total, timeout=120, what=f"{total} ended")

    received = sandbox.received()
    posts = Counter(r["idempotency_key"] for r in received)
    accepted = Counter(r["idempotency_key"] for r in received if r["outcome"] == "accepted")
    assert sum(posts.values()) > total, "no delivery was sent twice: the lease outlived the send?"
    assert max(posts.values()) > 1
    assert set(accepted.values()) == {1}  # the idempotent peer kept one copy of each
    # each re-claim used up an attempt: deliveries the peer accepted may even end dead-lettered
    assert len(accepted) >= _count(dep, Delivery.status == "delivered")
    assert sum(_audit_per_delivery(dep, "lease_lost").values()) > 0  # and the trail says so


def test_a_stopped_worker_finishes_its_sends_before_exiting(pg_deployment: Deployment) -> None:
    """SIGTERM while sends are in flight: the worker stops claiming, lets them finish and records
    them; the worker started next has nothing of them left to send."""
    dep = pg_deployment
    total = 8
    sandbox = _load(dep, persons=total, versions=1)
    settings = {"lease_seconds": "1", "worker_concurrency": "4", "destination_concurrency": "4"}
    first = dep.start_worker("worker-1", **settings)
    dep.wait_until(lambda: _count(dep, Delivery.status == "in_flight") > 0, timeout=60, what="sends in flight")
    assert first.stop(timeout=30) == 0
    dep.start_worker("worker-2", **settings)
    dep.wait_until(lambda: _count(dep, Delivery.status == "delivered") == total, timeout=60, what=f"{total} delivered")
    posts = Counter(r["idempotency_key"] for r in sandbox.received())
    assert len(posts) == total
    assert set(posts.values()) == {1}, posts.most_common(3)
    assert _audit_per_delivery(dep, "attempt_abandoned") == Counter()
