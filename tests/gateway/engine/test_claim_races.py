"""The one-statement claims under contention, with leases that expire while others claim.

Four threads, each on its own database connection, claim over and over with a lease of a few
milliseconds, so pending deliveries (``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)
RETURNING``) and expired leases (taken over, the dead attempt closed) are claimed at once by
several workers. Each claim's token (delivery, attempt number) must be issued exactly once, the
attempts recorded must be exactly those tokens, numbered 1, 2, 3… per delivery, and a newer
version of a series must never be leased while an older one is still open. Real PostgreSQL
(the race is its), real threads; no mocks.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from gateway import pipeline
from gateway.delivery import outbox
from gateway.security.clients import add_essms, create_tenant
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.models import Attempt, Delivery
from tests.gateway.engine.support import Clock, FakeConnector, make_runtime, submit, webhook_routing

pytestmark = pytest.mark.postgres

PERSONS = 8
VERSIONS = 2
CLAIMS = 160


def test_concurrent_claims_with_expiring_leases_issue_each_token_once(pg_url_test, keyring, request) -> None:
    engine = make_engine(pg_url_test)
    request.addfinalizer(engine.dispose)
    factory = make_sessionmaker(engine)
    with session_scope(factory) as session:
        t = create_tenant(session, code="og-race", name="Organisme")
        essms = add_essms(session, tenant_id=t.id, finess="750000010", name="ESSMS", category="500")
        tenant_id, finess = t.id, essms.finess
    clock = Clock()
    rt = make_runtime(factory, keyring, routing=webhook_routing("peer"), connectors={"peer": FakeConnector()})
    for version in range(VERSIONS):
        for p in range(PERSONS):
            submit(
                factory,
                keyring,
                tenant_id=tenant_id,
                finess=finess,
                person_ref=f"race-{p}",
                created_at=clock.advance(1),
            )
    while pipeline.process_next(rt, worker_id="router", clock=clock):
        pass
    with factory() as session:
        seq_of = {d.id: (d.series_key, d.seq) for d in session.scalars(select(Delivery))}
    assert len(seq_of) == PERSONS * VERSIONS

    tokens: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(name: str) -> None:
        try:
            while not stop.is_set():
                with factory() as session, session.begin():
                    got = outbox.claim(
                        session,
                        worker_id=name,
                        now=datetime.now(UTC),
                        lease_seconds=0.005,
                        max_attempts=10_000,
                        destinations=["peer"],
                    )
                if isinstance(got, outbox.Claimed):
                    with lock:
                        tokens.append((got.token.delivery_id, got.token.attempt))
                        if len(tokens) >= CLAIMS:
                            stop.set()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(tokens) >= CLAIMS
    duplicates = [token for token, count in Counter(tokens).items() if count > 1]
    assert duplicates == []
    # nothing ends here, so every first version stays open and holds its second version back
    assert {seq_of[delivery_id][1] for delivery_id, _ in tokens} == {1}
    with factory() as session:
        recorded = [(a.delivery_id, a.number) for a in session.scalars(select(Attempt))]
        outcomes = Counter(a.outcome for a in session.scalars(select(Attempt)))
    assert sorted(recorded) == sorted(tokens)
    numbers: dict[str, list[int]] = defaultdict(list)
    for delivery_id, number in recorded:
        numbers[delivery_id].append(number)
    for delivery_id, seen in numbers.items():
        assert sorted(seen) == list(range(1, len(seen) + 1)), delivery_id
    # every attempt but the last one of each delivery was taken over after its lease expired
    assert outcomes["abandoned"] == len(recorded) - len(numbers)
