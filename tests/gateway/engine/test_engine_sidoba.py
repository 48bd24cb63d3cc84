"""A period's indicator dataset through the outbox: reported, mapped, routed by a routing file
to the ``sidoba`` connector (loaded from its entry point) and delivered to the local SIDOBA
simulator with retries and audit; a correction reported again is the next version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from connectors.sandbox.sidoba import SidobaSimulator
from gateway import pipeline, routing
from gateway.delivery import Backoff, deliver_next
from gateway.runtime import Runtime
from gateway.services import stays
from gateway.settings import Settings
from gateway.storage.models import Delivery, IndicatorReport
from reporting import Period
from reporting.events import StayEvent
from tests.gateway.engine.support import Clock, audit_actions, engine_url


@pytest.fixture
def sim() -> Iterator[SidobaSimulator]:
    with SidobaSimulator() as simulator:
        yield simulator


@pytest.fixture
def runtime(session_factory, keyring, sim: SidobaSimulator, tmp_path: Path) -> Runtime:
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(
        "destinations:\n"
        "  cnsa:\n"
        "    connector: sidoba\n"
        "    category: sidoba\n"
        f"    settings: {{url: '{sim.url}/datasets', health_url: '{sim.url}/_health', timeout: 5}}\n"
        "rules:\n"
        "  - document_types: [indicator-dataset]\n"
        "    destinations: [cnsa]\n"
    )
    settings = Settings(
        database_url=engine_url(session_factory),
        routing_file=routing_file,
        backoff_base_seconds=0.05,
        backoff_max_seconds=0.2,
        max_attempts=4,
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


def _event(finess: str, event_id: str, at: str, version: int = 1) -> StayEvent:
    from datetime import datetime

    return StayEvent(event_id, "admission", "P-1", finess, datetime.fromisoformat(at), version=version,
                     accommodation="permanent")  # fmt: skip


def _deliver(runtime: Runtime, clock: Clock) -> str:
    assert pipeline.process_next(runtime, worker_id="w1", clock=clock)
    while True:
        out = deliver_next(runtime, worker_id="w1", clock=clock, backoff=Backoff(base_seconds=0.05, max_seconds=0.2))
        assert out is not None
        if out.status in ("delivered", "dead"):
            return out.status
        clock.advance(1)


def test_a_period_dataset_is_delivered_then_corrected(session_factory, keyring, tenant, sim, runtime) -> None:
    assert runtime.health()["cnsa"].ok
    with session_factory() as session:
        stays.record_event(session, tenant_id=tenant.id, event=_event(tenant.finess, "a1", "2026-01-10T10:00:00+01:00"),
                           keyring=keyring, actor="test")  # fmt: skip
        first = stays.report(session, tenant_id=tenant.id, finess=tenant.finess, period=Period.parse("2026-01"),
                             keyring=keyring, actor="test")  # fmt: skip
        again = stays.report(session, tenant_id=tenant.id, finess=tenant.finess, period=Period.parse("2026-01"),
                             keyring=keyring, actor="test")  # fmt: skip
        session.commit()
    assert first.created and not again.created and again.submission_id == first.submission_id
    sim.control(fail_next=1, status=503)
    clock = Clock()
    assert _deliver(runtime, clock) == "delivered"
    with session_factory() as session:
        delivery = session.scalars(select(Delivery).where(Delivery.submission_id == first.submission_id)).one()
        assert [a.outcome for a in delivery.attempts] == ["transient", "success"]
        delivery_id = delivery.id
    assert audit_actions(session_factory, first.submission_id) == ["received", "mapped", "routed"]
    assert {"attempt", "delivered"} <= set(audit_actions(session_factory, delivery_id))
    held = requests.get(f"{sim.url}/_datasets", timeout=5).json()["datasets"]
    assert [(d["period"], d["version"], d["dataset"]["totals"]["days_realised"]) for d in held] == [("2026-01", 1, 22)]

    # a late correction: the period was reported, so the answer names it; reported again = version 2
    with session_factory() as session:
        rec = stays.record_event(session, tenant_id=tenant.id, keyring=keyring, actor="test",
                                 event=_event(tenant.finess, "a1", "2026-01-05T10:00:00+01:00", version=2))  # fmt: skip
        assert rec.reported_periods == ("2026-01",)
        second = stays.report(session, tenant_id=tenant.id, finess=tenant.finess, period=Period.parse("2026-01"),
                              keyring=keyring, actor="test")  # fmt: skip
        session.commit()
        assert len(list(session.scalars(select(IndicatorReport)))) == 2
    assert second.created
    assert _deliver(runtime, clock) == "delivered"
    held = requests.get(f"{sim.url}/_datasets", timeout=5).json()["datasets"]
    assert sorted((d["version"], d["dataset"]["totals"]["days_realised"]) for d in held) == [(1, 22), (2, 27)]
    assert held[-1]["replaces"] is not None
