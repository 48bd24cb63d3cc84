"""Engine behaviour the rest of the gateway relies on: snapshot reads that do not block writers."""

from __future__ import annotations

import asyncio
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
    assert [h.split(" (")[0] for h in waited[0]["holders"]] == [held[0]["site"]]
    assert held[0]["site"].startswith(here + "hold:") and held[0]["thread"] == "holder"
    assert held[0]["seconds"] >= 0.2 and waited[0]["seconds"] >= 0.2


def test_a_write_transaction_opened_inside_another_is_refused_at_once(sqlite_url: str) -> None:
    """On SQLite the inner one would wait for the outer one's lock, which only this flow of control
    can release: 30 s of everything stalled, then a failure. Refused at once instead; a read
    snapshot inside, and a write transaction after the outer one ends, are fine."""
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    try:
        with factory() as outer, outer.begin():
            outer.execute(text("SELECT 1"))
            started = time.monotonic()
            with pytest.raises(db.NestedWriteTransaction, match="inside the one"), factory() as inner:
                inner.execute(text("SELECT 1"))
            assert time.monotonic() - started < 5  # not after the busy timeout
            with make_sessionmaker(snapshot_engine(engine))() as reader:
                assert reader.scalar(select(func.count()).select_from(Tenant)) == 0
        with factory() as after, after.begin():  # the outer one ended: the lock is free again
            after.execute(text("SELECT 1"))
        # another thread's transactions are not this thread's: it waits for them as usual
        done = threading.Event()
        with factory() as outer, outer.begin():
            outer.execute(text("SELECT 1"))

            def other() -> None:
                with factory() as s, s.begin():
                    s.execute(text("SELECT 1"))
                done.set()

            thread = threading.Thread(target=other)
            thread.start()
            assert not done.wait(0.3)  # waiting for the lock, not refused
        thread.join(10)
        assert done.is_set()
    finally:
        engine.dispose()


def test_a_write_transaction_on_the_event_loop_thread_is_refused(sqlite_url: str) -> None:
    """A coroutine writing directly would block the loop while the request that holds the lock
    needs the loop to commit (the inbound route did this: 30 s stalls under load)."""
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)

    async def coroutine(serving: bool) -> None:
        if serving:
            db.serving_loop(asyncio.get_running_loop())
        with factory() as s:
            s.execute(text("SELECT 1"))

    try:
        asyncio.run(coroutine(False))  # a loop that is not the server's (a CLI's, a browser driver's)
        with pytest.raises(db.NestedWriteTransaction, match="event loop"):
            asyncio.run(coroutine(True))
    finally:
        engine.dispose()
