"""Workers: threads that run the pipeline and the delivery engine until asked to drain.

``WorkerPool(runtime)`` is used in-process by the embedded mode (``Runtime.start_workers``) and
by ``dui-gateway worker`` through :func:`run_worker_process`, which turns SIGTERM/SIGINT into a
graceful drain: stop claiming, let every in-flight send finish and record its outcome, return 0.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from gateway import inbound, pipeline, wakeup
from gateway.delivery import outbox
from gateway.delivery.engine import Backoff, deliver_next

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = ["WorkerPool", "run_worker_process", "worker_id_prefix"]

_log = structlog.get_logger(__name__)
_pool_counter = itertools.count(1)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def worker_id_prefix() -> str:
    """``hostname:pid`` (the hostname cut so that ids fit the 64-character lease columns)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


class WorkerPool:
    """``settings.worker_concurrency`` threads looping: one submission, one delivery, sleep if idle."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        concurrency: int | None = None,
        clock: Callable[[], datetime] = _utcnow,
        backoff: Backoff | None = None,
        poll_interval: float | None = None,
    ) -> None:
        self.runtime = runtime
        self.concurrency = max(1, concurrency if concurrency is not None else runtime.settings.worker_concurrency)
        self.poll_interval = float(
            poll_interval if poll_interval is not None else runtime.settings.poll_interval_seconds
        )
        self._clock = clock
        self._backoff = backoff
        self._stop = threading.Event()
        self._waker = wakeup.Waker()
        self._listener = wakeup.Listener(runtime.engine, on_notify=self._waker.wake, on_connect=self._waker.wake_all)
        self._threads: list[threading.Thread] = []
        pool_no = next(_pool_counter)
        self._prefix = f"{worker_id_prefix()}:{pool_no}" if pool_no > 1 else worker_id_prefix()
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._sources: inbound.SourceRunner | None = None
        self._next_receipt_sweep = 0.0

    @property
    def worker_ids(self) -> list[str]:
        return [f"{self._prefix}:{n}" for n in range(self.concurrency)]

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    @property
    def listening(self) -> bool:
        """Whether this process is receiving the work notifications (PostgreSQL, :mod:`gateway.wakeup`)."""
        return self._listener.listening

    @property
    def busy(self) -> int:
        """How many threads are inside a unit of work right now."""
        return self._busy

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        self._listener.start()
        for worker_id in self.worker_ids:
            thread = threading.Thread(target=self._loop, args=(worker_id,), name=f"dui-worker-{worker_id}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.runtime.settings.run_sources and self.runtime.sources:
            self._sources = inbound.SourceRunner(self.runtime)
            self._sources.start()
        _log.info("workers_started", count=self.concurrency, prefix=self._prefix)

    def wake(self) -> None:
        """Cut an idle thread's sleep short (e.g. right after a submission is accepted); a thread
        that then finds work wakes the next one."""
        self._waker.wake()

    def idle_delay(self, idle_rounds: int, failures: int) -> float:
        """How long a thread sleeps after finding nothing to do.

        After a failure: ``poll_interval`` doubled per failure, up to 60 of them. Idle while
        notifications arrive (PostgreSQL, :mod:`gateway.wakeup`): ``poll_interval`` doubled per
        idle round, up to 8 of them (4 s by default; the poll is left for retries coming due and
        expired leases); otherwise (SQLite, the listener reconnecting) ``poll_interval``.
        """
        if failures:
            return self.poll_interval * min(1 << min(failures, 6), 60)
        if self._listener.listening:
            return self.poll_interval * (1 << min(idle_rounds, 3))
        return self.poll_interval

    def stop(self, timeout: float = 30.0) -> bool:
        """Drain: stop claiming, wait up to ``timeout`` for in-flight work; True if all threads ended."""
        self._stop.set()
        self._waker.wake_all()
        self._listener.stop()
        if self._sources is not None:
            self._sources.stop()
            self._sources = None
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            _log.warning("workers_not_drained", threads=alive)
        else:
            _log.info("workers_drained", count=len(self._threads))
        self._threads = []
        return not alive

    def run_once(self, worker_id: str) -> bool:
        """One unit of work: at most one submission, one delivery and one inbound message (and, every
        few seconds, overdue receipts). True if anything was done."""
        did = pipeline.process_next(self.runtime, worker_id=worker_id, clock=self._clock)
        if self._stop.is_set():
            return did
        outcome = deliver_next(self.runtime, worker_id=worker_id, clock=self._clock, backoff=self._backoff)
        did = did or outcome is not None
        if self._stop.is_set():
            return did
        did = inbound.process_next_inbound(self.runtime, worker_id=worker_id, clock=self._clock) or did
        if time.monotonic() >= self._next_receipt_sweep:
            self._next_receipt_sweep = time.monotonic() + 5.0
            with self.runtime.session_factory() as session, session.begin():
                did = outbox.expire_receipts(session, now=self._clock()) > 0 or did
        return did

    def _loop(self, worker_id: str) -> None:
        structlog.contextvars.bind_contextvars(worker=worker_id)
        failures = 0
        idle_rounds = 0
        while not self._stop.is_set():
            seen = self._waker.generation
            with self._busy_lock:
                self._busy += 1
            try:
                did = self.run_once(worker_id)
                failures = 0
            except Exception as exc:
                # A database outage or a bug: log the type only (messages may quote records),
                # back off a little, keep going. Claimed work is released by its lease.
                failures += 1
                did = False
                _log.error("worker_iteration_failed", error_type=type(exc).__name__, failures=failures)
            finally:
                with self._busy_lock:
                    self._busy -= 1
            if did:
                idle_rounds = 0
                # there may be more: let one idle thread look too (a burst fans out thread by thread)
                self._waker.pass_on()
            else:
                woken = self._waker.wait(seen, self.idle_delay(idle_rounds, failures))
                idle_rounds = 0 if woken else idle_rounds + 1


def run_worker_process(runtime: Runtime, *, drain_timeout: float | None = None) -> int:
    """Run a worker pool in the foreground until SIGTERM/SIGINT, then drain. Returns the exit code (0)."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        _log.info("worker_signal", signal=signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    pool = WorkerPool(runtime)
    try:
        pool.start()
        while not stop.wait(1.0):
            pass
    finally:
        # a send in flight may run until its deadline (max_send_seconds); its lease is kept alive
        # meanwhile, so leaving earlier would only get it sent again by another worker
        default = float(runtime.settings.max_send_seconds + runtime.settings.lease_seconds)
        timeout = drain_timeout if drain_timeout is not None else default
        pool.stop(timeout=timeout)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
