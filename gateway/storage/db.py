"""Engine and session factory. SQLite runs in WAL mode with a busy timeout; PostgreSQL as is."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import structlog
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

_log = structlog.get_logger(__name__)

# SQLite has one write lock per database: a transaction that keeps it long stalls every other
# writer (and, past the 30 s busy timeout, fails them). Both sides are logged with the code path
# that began the transaction (module:function:line, never data) so the culprit is named.
SLOW_WRITE_LOCK_SECONDS = 2.0
_holders: dict[int, tuple[str, str, int, float]] = {}  # id(DB-API conn) -> (site, thread, ident, since)
_holders_lock = threading.Lock()


def _call_site() -> str:
    """The first frame outside SQLAlchemy and this module: who began the transaction."""
    frame = sys._getframe(2)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if not (module.startswith(("sqlalchemy", "contextlib")) or module == __name__):
            return f"{module}:{frame.f_code.co_name}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


def _lock_released(dbapi_conn: Any) -> None:
    with _holders_lock:
        held = _holders.pop(id(dbapi_conn), None)
    if held is not None:
        seconds = time.monotonic() - held[3]
        if seconds >= SLOW_WRITE_LOCK_SECONDS:
            _log.warning("sqlite_write_lock_held_long", seconds=round(seconds, 3), site=held[0], thread=held[1])


def _begin_immediate(conn: Any) -> None:
    """BEGIN IMMEDIATE, noting who holds the lock and logging a long wait with who held it."""
    dbapi_conn = conn.connection.dbapi_connection
    site = _call_site()
    with _holders_lock:
        before = list(_holders.values())
    started = time.monotonic()
    conn.exec_driver_sql("BEGIN IMMEDIATE")
    now = time.monotonic()
    me = threading.current_thread()
    with _holders_lock:
        _holders[id(dbapi_conn)] = (site, me.name, me.ident or 0, now)
    waited = now - started
    if waited >= SLOW_WRITE_LOCK_SECONDS:
        _log.warning(
            "sqlite_write_lock_waited",
            seconds=round(waited, 3),
            site=site,
            holders=[f"{h[0]} ({h[1]}, {now - h[3]:.1f} s)" for h in before],
            # the lock was held by a transaction this very thread began: it waited for itself
            self_wait=any(h[2] == me.ident for h in before),
        )


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
                _begin_immediate(conn)

        @event.listens_for(engine, "commit")
        @event.listens_for(engine, "rollback")
        def _sqlite_end(conn: Any) -> None:
            _lock_released(conn.connection.dbapi_connection)

        @event.listens_for(engine.pool, "reset")
        @event.listens_for(engine.pool, "close")
        def _sqlite_reset(dbapi_conn: Any, *_args: Any) -> None:
            _lock_released(dbapi_conn)

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
