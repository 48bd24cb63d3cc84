"""Engine behaviour the rest of the gateway relies on: snapshot reads that do not block writers."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select, text
from structlog.testing import capture_logs

from gateway.security.clients import create_tenant
from gateway.storage import db
from gateway.storage.db import make_engine, make_sessionmaker, session_scope, snapshot_engine
from gateway.storage.models import Tenant


def test_snapshot_reader_does_not_block_writers_and_sees_one_snapshot(db_url: str) -> None:
    # On SQLite a blocked writer would fail with "database is locked" after the busy timeout.
    engine = make_engine(db_url)
    try:
        writer = make_sessionmaker(engine)
        reader = make_sessionmaker(snapshot_engine(engine))
        with session_scope(writer) as s:
            create_tenant(s, code="og-1", name="one")
        with reader() as r, r.begin():
            assert r.scalar(select(func.count()).select_from(Tenant)) == 1
            # a writer commits while the snapshot transaction is open (would time out if blocked)
            with session_scope(writer) as s:
                create_tenant(s, code="og-2", name="two")
            assert r.scalar(select(func.count()).select_from(Tenant)) == 1  # same snapshot
        with reader() as r, r.begin():
            assert r.scalar(select(func.count()).select_from(Tenant)) == 2
    finally:
        engine.dispose()


def test_a_long_sqlite_write_lock_is_logged_with_the_code_paths_of_holder_and_waiter(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Who kept SQLite's only write lock, and who waited for it, by code path (never data)."""
    monkeypatch.setattr(db, "SLOW_WRITE_LOCK_SECONDS", 0.2)
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    holding = threading.Event()

    def hold() -> None:
        with factory() as s, s.begin():
            s.execute(text("SELECT 1"))
            holding.set()
            time.sleep(0.6)

    try:
        with capture_logs() as logs:
            holder = threading.Thread(target=hold, name="holder")
            holder.start()
            assert holding.wait(10)
            with factory() as s, s.begin():  # waits for the holder
                s.execute(text("SELECT 1"))
            holder.join()
    finally:
        engine.dispose()
    waited = [e for e in logs if e["event"] == "sqlite_write_lock_waited"]
    held = [e for e in logs if e["event"] == "sqlite_write_lock_held_long"]
    assert len(waited) == 1 and len(held) == 1, logs
    here = f"{__name__}:"
    assert waited[0]["site"].startswith(here + "test_a_long_sqlite_write_lock")
    assert waited[0]["self_wait"] is False
    assert [h.split(" (")[0] for h in waited[0]["holders"]] == [held[0]["site"]]
    assert held[0]["site"].startswith(here + "hold:") and held[0]["thread"] == "holder"
    assert held[0]["seconds"] >= 0.2 and waited[0]["seconds"] >= 0.2
