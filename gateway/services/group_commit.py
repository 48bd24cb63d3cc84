"""Group commit for intake: the submissions that arrive together share one transaction.

Each accepted submission must be durable before its ``202``: one commit (one fsync on
PostgreSQL, one WAL sync on SQLite) and one turn on the audit chain's head per request caps
intake at the commit rate. Here the requests of one API process hand their already validated
submission (:func:`gateway.services.intake.prepare`, done in the request) to one committer
thread, which writes every submission waiting at that moment in one transaction and commits
once; each request is answered only after that commit returned. No request waits for others
to arrive: a lone request is a batch of one.

Jobs are either functions of the shared session (``submit``) or items written together by one
function (``submit_item``: intake's submissions, one multi-row INSERT per transaction).
``run_item`` is ``submit_item`` awaited from an event loop: the outcomes of one batch go back to
that loop in one thread-safe call (one wake-up of the loop per batch, not one per request).

A job that raises a :class:`~gateway.errors.GatewayError` (``Forbidden``, ``Conflict``: raised
before anything is written) fails alone. Any other error, or a failed commit, rolls the batch
back and runs each of its jobs again in a transaction of its own, so one job never decides the
fate of another.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar, cast

from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import GatewayError
from gateway.logging import get_logger

__all__ = ["GroupCommitter"]

T = TypeVar("T")
_log = get_logger("gateway.intake")


class _Job(Generic[T]):
    """A job and where its outcome goes: a thread-safe future, or an asyncio future of ``loop``."""

    __slots__ = ("batch_fn", "fn", "future", "item", "loop", "settled")

    def __init__(
        self,
        fn: Callable[[Session], T] | None,
        batch_fn: Callable[[Session, list[Any]], Sequence[Any]] | None = None,
        item: Any = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.fn = fn
        self.batch_fn = batch_fn
        self.item = item
        self.loop = loop
        self.future: Future[T] | asyncio.Future[T] = Future() if loop is None else loop.create_future()
        self.settled = False


def _settle(future: Future[Any] | asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # an awaiting request that was cancelled (its client went away)
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _settle_all(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        _settle(future, ok, value)


class GroupCommitter:
    """One thread writing the jobs handed to it, as many per transaction as are waiting."""

    def __init__(self, session_factory: sessionmaker[Session], *, max_batch: int = 64) -> None:
        self.session_factory = session_factory
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.batches = 0  # for tests and metrics: how many transactions were committed
        self.jobs = 0

    def submit(self, fn: Callable[[Session], T]) -> Future[T]:
        """Run ``fn(session)`` in a shared transaction; the future resolves after the commit."""
        job: _Job[T] = _Job(fn)
        self._enqueue(job)
        return cast(Future[T], job.future)

    def submit_item(self, batch_fn: Callable[[Session, list[Any]], Sequence[Any]], item: Any) -> Future[Any]:
        """Hand over ``item``; the items of one transaction handed with the same ``batch_fn`` are
        written by one call ``batch_fn(session, items)``, which returns one outcome per item, in
        order: a value, or a :class:`~gateway.errors.GatewayError` for an item that wrote nothing
        (its future raises it). The future resolves after the commit."""
        job: _Job[Any] = _Job(None, batch_fn, item)
        self._enqueue(job)
        return cast(Future[Any], job.future)

    async def run_item(self, batch_fn: Callable[[Session, list[Any]], Sequence[Any]], item: Any) -> Any:
        """:meth:`submit_item` awaited on the running event loop: its outcome, after the commit."""
        job: _Job[Any] = _Job(None, batch_fn, item, asyncio.get_running_loop())
        self._enqueue(job)
        return await cast(asyncio.Future[Any], job.future)

    def _enqueue(self, job: _Job[Any]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the intake committer is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="intake-group-commit", daemon=True)
                self._thread.start()
            self._queue.put(job)

    def close(self, timeout: float = 30.0) -> None:
        """Finish the jobs already handed over, then stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch: list[_Job[Any]] = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            try:
                self._run(batch)
            except BaseException as exc:  # never leave a request waiting forever
                self._deliver([(job, False, exc) for job in batch if not job.settled])
            if stop:
                return

    def _run(self, batch: list[_Job[Any]]) -> None:
        outcomes: dict[int, tuple[bool, Any]] = {}
        session = self.session_factory()
        try:
            groups: dict[Callable[[Session, list[Any]], Sequence[Any]], list[int]] = {}
            for n, job in enumerate(batch):
                if job.batch_fn is not None:
                    groups.setdefault(job.batch_fn, []).append(n)
                    continue
                assert job.fn is not None
                try:
                    outcomes[n] = (True, job.fn(session))
                except GatewayError as exc:  # raised before the job wrote anything
                    outcomes[n] = (False, exc)
            for batch_fn, members in groups.items():
                results = batch_fn(session, [batch[n].item for n in members])
                if len(results) != len(members):
                    raise RuntimeError(f"a batch function returned {len(results)} outcomes for {len(members)} items")
                for n, result in zip(members, results, strict=True):
                    outcomes[n] = (not isinstance(result, GatewayError), result)
            session.commit()
        except Exception as exc:
            session.rollback()
            session.close()
            if len(batch) == 1:
                self._deliver([(batch[0], False, exc)])
                return
            _log.warning("intake_group_commit_split", size=len(batch), error_type=type(exc).__name__)
            for job in batch:
                self._run([job])
            return
        finally:
            session.close()
        self.batches += 1
        self.jobs += len(batch)
        self._deliver([(job, *outcomes[n]) for n, job in enumerate(batch)])

    @staticmethod
    def _deliver(results: list[tuple[_Job[Any], bool, Any]]) -> None:
        """Hand each job its outcome: a thread-safe future at once, an event loop's futures in one
        call on that loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, ok, value in results:
            job.settled = True
            if job.loop is None:
                _settle(job.future, ok, value)
            else:
                assert isinstance(job.future, asyncio.Future)
                by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, outcomes in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, outcomes)
            except RuntimeError:  # that loop is closed: nobody awaits these any more
                pass
