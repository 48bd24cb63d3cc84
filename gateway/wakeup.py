"""Waking idle worker threads when work is stored, instead of having them poll for it.

PostgreSQL: whoever stores work for the workers (intake's commit) also runs
``pg_notify('dui_gateway_work', '')`` in the same transaction (:func:`notify_work`; delivered to
listeners at the commit, dropped with a rollback). Each ``dui-gateway worker`` process keeps one
connection listening on that channel (:class:`Listener`) and wakes one of its idle threads per
notification; a thread that found work wakes the next idle one, so a burst fans out over the
threads without every thread racing for every row. SQLite (a single process): the API wakes the
embedded workers directly (:meth:`gateway.runtime.Runtime.wake_workers`).

Polling stays as the safety net (retries coming due, a dead worker's expired lease, work stored
by a path that does not notify, a notification lost while the listener reconnects), but an idle
thread backs off exponentially, up to a few seconds, while a listener is connected.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

__all__ = ["CHANNEL", "Listener", "Waker", "notify_work"]

CHANNEL = "dui_gateway_work"
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', '')")

_log = structlog.get_logger(__name__)


def notify_work(session: Session) -> None:
    """Tell the listening workers that work was stored, when this transaction commits (PostgreSQL;
    nothing on SQLite, whose workers are woken in-process)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_NOTIFY)


class Waker:
    """Idle threads wait here; :meth:`wake` releases one of them, :meth:`wake_all` every one.

    A wake-up that comes while no thread is waiting is not lost: it bumps a generation that a
    thread reads before it looks for work (:attr:`generation`) and checks before it sleeps.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def wake(self, n: int = 1) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify(n)

    def pass_on(self) -> None:
        """Release one thread that is waiting now, if any (no generation bump: a thread busy
        finding nothing does not look again because another one found something)."""
        with self._cond:
            self._cond.notify(1)

    def wake_all(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> bool:
        """Sleep up to ``timeout`` unless woken since ``seen`` was read; True if woken."""
        with self._cond:
            if self._generation != seen:
                return True
            return self._cond.wait(timeout)


class Listener:
    """One connection per worker process ``LISTEN``-ing on :data:`CHANNEL` (PostgreSQL only),
    calling ``on_notify()`` per notification and ``on_connect()`` once listening (notifications
    sent while it was not are lost: the caller looks for work then). Reconnects after a failure;
    :attr:`listening` says whether notifications are arriving right now."""

    def __init__(self, engine: Engine, *, on_notify: Callable[[], None], on_connect: Callable[[], None]) -> None:
        self._engine = engine
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = False

    def start(self) -> None:
        if self._thread is None and self._engine.dialect.name == "postgresql":
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="dui-work-listener", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.listening = False

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._listen()
                delay = 0.5
            except Exception as exc:  # the database is away: poll meanwhile, try again later
                _log.warning("work_listener_failed", error_type=type(exc).__name__)
            self.listening = False
            self._stop.wait(delay)
            delay = min(delay * 2, 30.0)

    def _listen(self) -> None:
        # a connection of its own (the engine's settings), never returned to the pool: it listens
        raw = self._engine.raw_connection()
        try:
            conn = raw.driver_connection
            raw.detach()
            conn.autocommit = True  # type: ignore[union-attr]
            conn.execute(f"LISTEN {CHANNEL}")  # type: ignore[union-attr]
            self.listening = True
            self._on_connect()
            while not self._stop.is_set():
                started = time.monotonic()
                got = 0
                # returns after the timeout with nothing received, so that stop() is seen
                for _ in conn.notifies(timeout=1.0):  # type: ignore[union-attr]
                    got += 1
                    self._on_notify()
                    if self._stop.is_set() or time.monotonic() - started >= 1.0:
                        break
                if not got:
                    conn.execute("SELECT 1")  # type: ignore[union-attr]  # a dead connection shows here
        finally:
            self.listening = False
            raw.close()
