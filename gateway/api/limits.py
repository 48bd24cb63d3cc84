"""Back-pressure: refuse work the gateway cannot take now, and say when to come back.

- :class:`QueueGuard`: new submissions are refused (503 ``overloaded``, ``Retry-After``) while the
  queue (submissions waiting in ``received`` plus due pending deliveries, as ``/metrics`` counts it)
  is deeper than ``Settings.max_queue_depth``; the count is cached a second per process.
- :class:`RateLimiter`: a token bucket per API client (or the administrator token) and per process:
  ``rate_limit_per_second`` sustained, ``rate_limit_burst`` at once; over it, 429 with ``Retry-After``.
  With N API processes a client gets up to N times the rate: size it per process.

A saturated database (pool exhausted, locked, unreachable) is answered 503 by the error handlers
(:mod:`gateway.api.problems`); the request's transaction is rolled back, so nothing was accepted.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import ServiceUnavailable, TooManyRequests
from gateway.storage.models import Delivery, Submission

__all__ = ["QueueGuard", "RateLimiter", "queue_depth"]


def queue_depth(session: Session) -> int:
    """Work waiting: submissions in ``received`` plus pending deliveries already due."""
    waiting = session.scalar(select(func.count()).select_from(Submission).where(Submission.status == "received"))
    due = session.scalar(
        select(func.count())
        .select_from(Delivery)
        .where(Delivery.status == "pending", Delivery.next_attempt_at <= datetime.now(UTC))
    )
    return int(waiting or 0) + int(due or 0)


class QueueGuard:
    """Refuses new work while the queue is deeper than ``max_depth`` (0: never)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        max_depth: int,
        cache_seconds: float = 1.0,
        retry_after: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session_factory = session_factory
        self.max_depth = max_depth
        self.cache_seconds = cache_seconds
        self.retry_after = retry_after
        self._clock = clock
        self._lock = threading.Lock()
        self._depth = 0
        self._at = -math.inf

    def depth(self) -> int:
        with self._lock:
            now = self._clock()
            if now - self._at >= self.cache_seconds:
                with self._session_factory() as session:
                    self._depth = queue_depth(session)
                    session.rollback()
                self._at = now
            return self._depth

    def check_cached(self) -> bool:
        """:meth:`check` without I/O: True when it could decide from the cached depth (raising
        :class:`ServiceUnavailable` as ``check`` would), False when the depth must be read again
        (then call ``check``, from a thread: it queries the database)."""
        if self.max_depth <= 0:
            return True
        with self._lock:
            if self._clock() - self._at >= self.cache_seconds:
                return False
            depth = self._depth
        self._refuse_over(depth)
        return True

    def _refuse_over(self, depth: int) -> None:
        if depth >= self.max_depth:
            raise ServiceUnavailable(
                "the gateway's queue is full; nothing was stored: send it again later",
                retry_after=self.retry_after,
                type_suffix="overloaded",
            )

    def check(self) -> None:
        """Raise :class:`ServiceUnavailable` when the queue is too deep to take more."""
        if self.max_depth <= 0:
            return
        self._refuse_over(self.depth())


class RateLimiter:
    """A token bucket per key (an API client), ``rate`` tokens per second up to ``burst``."""

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def check(self, key: str) -> None:
        """Take one token for ``key``, or raise :class:`TooManyRequests` saying when one is back."""
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > 100_000:  # forget idle clients (full buckets) to stay bounded
                self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self.burst}
        wait = max(1, math.ceil((1 - tokens) / self.rate))
        raise TooManyRequests(f"too many requests from this client: at most {self.rate:g} per second", retry_after=wait)
