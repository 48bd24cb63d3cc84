"""Engine and session factory. SQLite runs in WAL mode with a busy timeout; PostgreSQL as is."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "is_disconnect",
    "is_sqlite",
    "make_engine",
    "make_sessionmaker",
    "run_unit",
    "session_scope",
    "snapshot_engine",
]

T = TypeVar("T")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; for SQLite, create the parent folder and enable WAL + foreign keys."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy issue BEGIN itself so that BEGIN IMMEDIATE can be used for writes.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Take the write lock up front: avoids SQLITE_BUSY upgrade deadlocks between
            # the API and in-process workers (both write in almost every transaction).
            # Read-only snapshots (snapshot_engine) use a deferred BEGIN and never block writers.
            if conn.get_execution_options().get("dgw_snapshot"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # No pre-ping: it costs one round trip per checkout (11 per document, issue 15). A connection
    # that died with the server fails its first statement instead; SQLAlchemy then sees a
    # disconnect and invalidates the whole pool (every connection older than the failure is
    # replaced at its next checkout), and the unit of work is retried: by ``run_unit`` for the
    # worker's short transactions, by the worker loop or the API client otherwise.
    kwargs.setdefault("pool_pre_ping", False)
    return create_engine(url, **kwargs)


def is_disconnect(exc: BaseException) -> bool:
    """Did ``exc`` come from a connection the database dropped (restart, failover, idle kill)?"""
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def run_unit(factory: sessionmaker[Session], work: Callable[[Session], T], *, attempts: int = 3) -> T:
    """Run ``work`` in one transaction, again on a fresh connection if the first one was dead.

    Only a disconnect is retried (the transaction was rolled back with the connection); any
    other error propagates at once. ``work`` must be safe to run twice: a commit whose answer
    was lost may have happened (the outbox's conditional updates make that harmless).
    """
    for attempt in range(1, attempts + 1):
        try:
            with factory() as session, session.begin():
                return work(session)
        except DBAPIError as exc:
            if not is_disconnect(exc) or attempt == attempts:
                raise
    raise AssertionError("unreachable")


def snapshot_engine(engine: Engine) -> Engine:
    """A view of ``engine`` for long read-only work that must see one consistent snapshot
    (audit verification, exports) without blocking writers: REPEATABLE READ on PostgreSQL,
    a deferred transaction on SQLite (WAL readers see the database as of their first read)."""
    if is_sqlite(engine):
        return engine.execution_options(dgw_snapshot=True)
    return engine.execution_options(isolation_level="REPEATABLE READ")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
