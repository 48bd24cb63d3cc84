"""Worker pool: loops, graceful drain (in-process and on SIGTERM in a real process)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway import wakeup
from gateway.security.clients import add_essms, create_tenant
from gateway.security.crypto import KeyRing
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.models import Delivery, Submission
from gateway.worker import WorkerPool
from tests.gateway.engine.support import FakeConnector, GateConnector, make_runtime, submit, webhook_routing
from tests.peers.process import ROOT, ManagedProcess


def _statuses(session_factory: sessionmaker[Session]) -> list[str]:
    with session_factory() as session:
        return sorted(session.scalars(select(Delivery.status)))


def test_pool_processes_and_delivers_everything(session_factory, keyring, tenant) -> None:
    peer = FakeConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    for i in range(10):
        submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref=f"p{i}")
    pool = WorkerPool(rt, concurrency=2)
    assert len(set(pool.worker_ids)) == 2 and all(w.count(":") >= 2 for w in pool.worker_ids)
    pool.start()
    try:
        deadline = time.monotonic() + 30
        while len(peer.accepted) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        assert pool.stop(timeout=10) is True
    assert len(peer.accepted) == 10
    assert _statuses(session_factory) == ["delivered"] * 10
    assert not pool.running


def test_an_idle_pool_is_woken_by_stored_work_not_its_poll(session_factory, keyring, tenant) -> None:
    """The poll is 60 s: the submission is picked up because the store wakes a thread (PostgreSQL:
    a notification committed with it; SQLite: ``wake()``, as the API does)."""
    peer = FakeConnector()
    rt = make_runtime(
        session_factory,
        keyring,
        routing=webhook_routing("partner"),
        connectors={"partner": peer},
        poll_interval_seconds=60.0,
    )
    postgres = rt.engine.dialect.name == "postgresql"
    pool = WorkerPool(rt, concurrency=2)
    pool.start()
    try:
        deadline = time.monotonic() + 10
        while postgres and not pool.listening and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pool.listening is postgres
        time.sleep(0.5)  # both threads found nothing and sleep
        assert pool.busy == 0
        for n in range(3):
            submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref=f"p{n}")
        if postgres:
            with session_factory() as session, session.begin():
                wakeup.notify_work(session)
        else:
            pool.wake()
        deadline = time.monotonic() + 30  # half the poll
        while len(peer.accepted) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        assert pool.stop(timeout=10) is True
    assert len(peer.accepted) == 3  # one wake-up: a thread that finds work looks again at once
    assert not pool.listening


def test_stop_drains_in_flight_send_and_claims_nothing_more(session_factory, keyring, tenant) -> None:
    peer = GateConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref="a")
    pool = WorkerPool(rt, concurrency=1)
    pool.start()
    assert peer.entered.wait(10)
    submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref="b")
    result: list[bool] = []
    stopper = threading.Thread(target=lambda: result.append(pool.stop(timeout=20)))
    stopper.start()
    time.sleep(0.3)
    assert result == [] and stopper.is_alive()  # stop() waits for the send in flight
    peer.release.set()
    stopper.join(20)
    assert result == [True]
    assert len(peer.accepted) == 1
    with session_factory() as session:
        statuses = dict(session.execute(select(Submission.person_ref, Submission.status)).all())
    assert statuses == {"a": "delivered", "b": "received"}  # nothing new was claimed while draining


def test_sigterm_drains_a_worker_process(sqlite_url: str, tmp_path: Path) -> None:
    key = os.urandom(32)
    keyring = KeyRing([("test-1", key)])
    engine = make_engine(sqlite_url)
    try:
        factory = make_sessionmaker(engine)
        with session_scope(factory) as session:
            t = create_tenant(session, code="og-sig", name="OG")
            add_essms(session, tenant_id=t.id, finess="750000010", name="EHPAD")
            tenant_id = t.id
        submit(factory, keyring, tenant_id=tenant_id, finess="750000010")
        marker = tmp_path / "markers"
        marker.mkdir()
        child = ManagedProcess(
            "worker",
            [sys.executable, str(Path(__file__).with_name("worker_child.py")), sqlite_url, key.hex(), str(marker)],
            log_path=tmp_path / "worker.log",
            env={"PYTHONPATH": str(ROOT)},
        )
        try:
            deadline = time.monotonic() + 30
            while not (marker / "entered").exists() and time.monotonic() < deadline and child.alive():
                time.sleep(0.02)
            assert (marker / "entered").exists(), child.output()
            assert not (marker / "sent").exists()
            code = child.stop(timeout=30)  # SIGTERM while the send is in flight
        finally:
            child.stop(timeout=5)
        assert code == 0, child.output()
        assert (marker / "sent").exists()
        assert _statuses(factory) == ["delivered"]
    finally:
        engine.dispose()
