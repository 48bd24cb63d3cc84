"""PostgreSQL scale-out: two ``dui-gateway worker`` processes drain 2,000 deliveries.

The 2,000 submissions (500 series of 4 versions) are accepted and routed in the test process,
through the real intake service and pipeline (with the test-only document type, which the
worker processes do not need: they only deliver); then two worker processes share the outbox
with ``FOR UPDATE SKIP LOCKED``. Checked at the idempotent sandbox receiver: nothing lost,
nothing accepted twice, and every series' versions accepted in order.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.storage.models import ApiClient, Attempt, Delivery
from tests.peers.gateway import (
    Deployment,
    bulk_load_and_route,
    create_pg_database,
    drop_pg_database,
    provision,
    webhook_routing,
)
from tests.support.doctype import NOTE

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

PERSONS = 500
VERSIONS = 4
FINESS = "750000010"


@pytest.fixture
def pg_deployment(tmp_path: Path, pg_url: str) -> Iterator[Deployment]:
    url = create_pg_database(pg_url)
    dep = Deployment.create(tmp_path / "deployment", db_url=url)
    try:
        yield dep
    finally:
        dep.close()
        drop_pg_database(url)


def test_two_workers_drain_2000_without_loss_duplicate_or_reordering(pg_deployment: Deployment) -> None:
    dep = pg_deployment
    dep.migrate()
    tenant = provision(dep.db_url, finess=FINESS)
    sandbox = dep.start_sandbox()
    dep.write_routing(webhook_routing(sandbox.url, destinations={"outbox": "webhook"}, document_types=[NOTE.code]))
    with dep.engine.connect() as conn:
        client_id = conn.execute(select(ApiClient.id).where(ApiClient.tenant_id == tenant.tenant_id)).scalar_one()
    load_seconds = bulk_load_and_route(dep, client_id=client_id, persons=PERSONS, versions=VERSIONS, finess=FINESS)
    total = PERSONS * VERSIONS

    started = time.perf_counter()
    workers = [dep.start_worker(f"worker-{n}", worker_concurrency="4") for n in (1, 2)]

    def drained() -> bool:
        with dep.engine.connect() as conn:
            done = conn.execute(select(func.count()).select_from(Delivery).where(Delivery.status == "delivered"))
            return done.scalar_one() == total

    dep.wait_until(drained, timeout=300, what="2,000 deliveries delivered")
    drain_seconds = time.perf_counter() - started
    print(
        f"\nload+route {total} in {load_seconds:.1f}s; drain by 2 workers in {drain_seconds:.1f}s "
        f"({total / drain_seconds:.0f} deliveries/s)"
    )

    accepted = sandbox.accepted()
    assert len(accepted) == total, "no loss, no extra acceptance"
    with dep.engine.connect() as conn:
        delivery_ids = set(conn.execute(select(Delivery.id)).scalars())
        attempt_workers = set(conn.execute(select(Attempt.worker).where(Attempt.outcome == "success")).scalars())
    assert Counter(r["headers"].get("X-Dui-Delivery-Id") for r in accepted) == Counter(dict.fromkeys(delivery_ids, 1))
    docs = Counter(doc["document_id"] for r in accepted for doc in r["documents"])
    assert len(docs) == total and max(docs.values()) == 1
    # order per setId: the receiver's arrival order (n) has every series' versions ascending
    series: dict[str, list[int]] = defaultdict(list)
    for r in sorted(accepted, key=lambda r: r["n"]):
        [doc] = r["documents"]
        series[doc["set_id"]].append(doc["version"])
    assert len(series) == PERSONS
    assert all(v == list(range(1, VERSIONS + 1)) for v in series.values())
    # both worker processes took part (SKIP LOCKED shares the outbox)
    pids = {w.split(":")[1] for w in attempt_workers}
    assert pids == {str(w.pid) for w in workers}
