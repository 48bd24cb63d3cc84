"""Engine behaviour the rest of the gateway relies on: snapshot reads that do not block writers."""

from __future__ import annotations

from sqlalchemy import func, select

from gateway.security.clients import create_tenant
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
