"""A worker killed with SIGKILL in the middle of deliveries loses nothing and duplicates nothing.

Real processes: the API under uvicorn (``dui-gateway serve``, no embedded worker), a worker
(``dui-gateway worker``), the sandbox receiver (``dui-gateway sandbox``) answering slowly so that
deliveries are in flight when the worker dies. A second worker takes over once the leases expire.
"""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import many_dlu, require_dlu
from tests.peers.gateway import Deployment, post_submissions, provision, webhook_routing

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SUBMISSIONS = 12
DESTINATIONS = {"peer-a": "webhook", "peer-b": "webhook"}


def _owned_in_flight(dep: Deployment, pid: int) -> list[str]:
    prefix = f"{socket.gethostname()[:40]}:{pid}:"
    return [d.id for d in dep.deliveries() if d.status == "in_flight" and (d.lease_owner or "").startswith(prefix)]


def test_sigkill_worker_mid_delivery_then_new_worker_delivers_everything_once(
    deployment: Deployment, kit_dir: Path
) -> None:
    require_dlu()
    dep = deployment
    dep.env.update({"DUI_GATEWAY_LEASE_SECONDS": "4", "DUI_GATEWAY_WORKER_CONCURRENCY": "2"})
    dep.migrate()
    tenant = provision(dep.db_url)
    sandbox = dep.start_sandbox()
    sandbox.control(delay=0.4)  # every delivery takes 0.4 s at the peer: the kill lands mid-send
    dep.write_routing(webhook_routing(sandbox.url, destinations=DESTINATIONS, document_types=["dlu"]))
    api = dep.start_api()
    ids = post_submissions(api, tenant.api_key, [("dlu", r) for r in many_dlu(SUBMISSIONS, tenant.finess)])
    expected = SUBMISSIONS * len(DESTINATIONS)

    first = dep.start_worker("worker-1")
    in_flight: list[str] = []

    def mid_delivery() -> bool:
        nonlocal in_flight
        if len(sandbox.accepted()) < 3:
            return False
        in_flight = _owned_in_flight(dep, first.pid)
        return bool(in_flight)

    dep.wait_until(mid_delivery, timeout=180, what="worker-1 delivering")
    first.kill()
    accepted_at_kill = len(sandbox.accepted())
    assert accepted_at_kill < expected, "the worker must die before it finished"

    dep.start_worker("worker-2")

    def all_delivered() -> bool:
        rows = dep.deliveries()
        return len(rows) == expected and all(d.status == "delivered" for d in rows)

    dep.wait_until(all_delivered, timeout=240, what="every delivery delivered")

    assert dep.submission_statuses() == {"delivered": SUBMISSIONS}
    deliveries = dep.deliveries()
    assert {d.submission_id for d in deliveries} == set(ids)
    # the deliveries caught in flight by the kill were finished by worker-2, not lost
    by_id = {d.id: d for d in deliveries}
    assert all(by_id[i].status == "delivered" for i in in_flight)

    accepted = sandbox.accepted()
    # every delivery accepted exactly once by the idempotent receiver ...
    assert len(accepted) == expected
    assert Counter(r["headers"].get("X-Dui-Delivery-Id") for r in accepted) == Counter({d.id: 1 for d in deliveries})
    # ... and no document accepted twice at the same destination
    docs = Counter((r["path"], doc["document_id"]) for r in accepted for doc in r["documents"])
    assert docs and max(docs.values()) == 1
    assert {path for path, _ in docs} == {f"/{name}" for name in DESTINATIONS}
    # resends after the crash carried the same Idempotency-Key (recognised, not accepted again)
    everything = sandbox.received()
    accepted_keys = {r["idempotency_key"] for r in accepted}
    resends = [r for r in everything if r["outcome"] == "duplicate"]
    assert all(r["idempotency_key"] in accepted_keys for r in resends)
    print(f"\nkilled with {len(in_flight)} deliveries in flight; {len(resends)} resends recognised by the receiver")
