"""Engine and session factory. SQLite runs in WAL mode with a busy timeout; PostgreSQL as is."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "NestedWriteTransaction",
    "is_disconnect",
    "is_sqlite",
    "make_engine",
    "make_sessionmaker",
    "run_unit",
    "serving_loop",
    "session_scope",
    "snapshot_engine",
]

T = TypeVar("T")

_log = structlog.get_logger(__name__)

# SQLite has one write lock per database: a transaction that keeps it long stalls every other
# writer (and, past the 30 s busy timeout, fails them). Both sides are logged with the code path
# that began the transaction (module:function:line, never data) so the culprit is named.
SLOW_WRITE_LOCK_SECONDS = 2.0


@dataclass(frozen=True)
class _Held:
    database: str
    site: str
    thread: str
    since: float


_holders: dict[int, _Held] = {}  # id(DB-API connection) -> its write transaction
_holders_lock = threading.Lock()
# the write transaction the current flow of control began (a thread, or a request's context):
# (id of its DB-API connection, its _Held) while it lasts
_flow: ContextVar[tuple[int, _Held] | None] = ContextVar("dgw_sqlite_write", default=None)


class NestedWriteTransaction(RuntimeError):
    """A flow of control that holds SQLite's write lock asked for it again on another connection
    (a second session opened inside the first one's transaction), or asked for it on the event
    loop's thread. Either waits for a lock that only the waiter can release: everything writing to
    the database stalls for the whole busy timeout (30 s), then fails. Refused at once instead."""


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
        seconds = time.monotonic() - held.since
        if seconds >= SLOW_WRITE_LOCK_SECONDS:
            _log.warning("sqlite_write_lock_held_long", seconds=round(seconds, 3), site=held.site, thread=held.thread)


def _begin_immediate(conn: Any, database: str) -> None:
    """BEGIN IMMEDIATE, noting who holds the lock and logging a long wait with who held it."""
    dbapi_conn = conn.connection.dbapi_connection
    site = _call_site()
    mine = _flow.get()
    with _holders_lock:
        before = list(_holders.values())
        outer = _holders.get(mine[0]) if mine is not None and mine[0] != id(dbapi_conn) else None
    if outer is not None and mine is not None and outer is mine[1] and outer.database == database:
        raise NestedWriteTransaction(
            f"{site} began a write transaction inside the one {outer.site} began on another connection:"
            " it would wait for itself (use the outer session, or open this one after it ends)"
        )
    if asyncio_running():
        raise NestedWriteTransaction(
            f"{site} began a write transaction on the event loop's thread: it would block the loop while"
            " it waits for the lock, and the request holding the lock needs the loop to commit (run it in"
            " the thread pool)"
        )
    started = time.monotonic()
    conn.exec_driver_sql("BEGIN IMMEDIATE")
    now = time.monotonic()
    held = _Held(database=database, site=site, thread=threading.current_thread().name, since=now)
    with _holders_lock:
        _holders[id(dbapi_conn)] = held
    _flow.set((id(dbapi_conn), held))
    waited = now - started
    if waited >= SLOW_WRITE_LOCK_SECONDS:
        _log.warning(
            "sqlite_write_lock_waited",
            seconds=round(waited, 3),
            site=site,
            holders=[f"{h.site} ({h.thread}, {now - h.since:.1f} s)" for h in before if h.database == database],
        )


_serving_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def serving_loop(loop: asyncio.AbstractEventLoop, *, serving: bool = True) -> None:
    """Mark (or unmark) the event loop that serves the API: no write transaction may begin on it."""
    if serving:
        _serving_loops.add(loop)
    else:
        _serving_loops.discard(loop)


def asyncio_running() -> bool:
    """Is this thread running the API's event loop (a coroutine calling the database directly)?
    Other loops (a browser driver's in tests, a CLI's) are not the server's and are let be."""
    loop = asyncio._get_running_loop()
    return loop is not None and loop in _serving_loops


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
        # the lock is the file's: every connection of a :memory: database is a database of its own
        database = os.path.realpath(path) if path and path != ":memory:" else f":memory:{id(engine)}"

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
                _begin_immediate(conn, database)

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
