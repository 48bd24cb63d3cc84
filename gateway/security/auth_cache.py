"""A short-lived, per-process memory of what authenticating a request read from the database.

Each authenticated request used to read its API client (and, at intake, its organisation's
ESSMS) in a transaction of its own: a round trip or three per request, and on SQLite a
``BEGIN IMMEDIATE`` taking the write lock from the intake committer. :class:`TtlCache` keeps such
a look-up for ``ttl`` seconds (``DUI_GATEWAY_AUTH_CACHE_SECONDS``, default 2; 0 turns it off).

What makes it safe:

- An API key is cached under the SHA-256 of the whole presented key, never the key itself; another
  secret (even with the same prefix) is another entry, checked against the database as before.
- A change committed **in this process** to an API client, its secrets, an ESSMS or a tenant
  (revocation, rotation, scopes, restriction: any ORM flush or ORM ``UPDATE``/``DELETE`` touching
  those tables) empties every cache when it commits: revocation is immediate here.
- A change committed by **another process** (another ``serve --workers`` process, the CLI)
  reaches this one within ``ttl`` seconds: a revoked key may still be accepted that long.
- A look-up that started before such a commit is not stored (a generation counter), so a stale
  read cannot outlive the invalidation.
- Bounded: ``max_entries``; the oldest entry goes first.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from gateway.storage.models import ApiClient, ApiClientSecret, Essms, Tenant

__all__ = ["INVALIDATING_MODELS", "AuthCaches", "TtlCache", "generation", "invalidate_all"]

K = TypeVar("K")
V = TypeVar("V")

# a committed change to any of these empties the caches of this process
INVALIDATING_MODELS: tuple[type[Any], ...] = (ApiClient, ApiClientSecret, Essms, Tenant)
_INVALIDATING_TABLES = frozenset(model.__table__.name for model in INVALIDATING_MODELS)
_DIRTY_INFO = "dui_gateway.auth_cache_dirty"

_caches: weakref.WeakSet[TtlCache[Any, Any]] = weakref.WeakSet()
_generation_lock = threading.Lock()
_generation = 0


def generation() -> int:
    """The invalidation counter: read it before a look-up, pass it to :meth:`TtlCache.put`."""
    return _generation


def invalidate_all() -> None:
    """Forget every cached look-up of this process (a credential, ESSMS or tenant changed)."""
    global _generation
    with _generation_lock:
        _generation += 1
        for cache in list(_caches):
            cache.clear()


class TtlCache(Generic[K, V]):
    """``key -> value`` for ``ttl`` seconds, emptied by :func:`invalidate_all`; thread-safe."""

    def __init__(self, ttl: float, *, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        _caches.add(self)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def get(self, key: K) -> V | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() >= entry[0]:
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: K, value: V, *, since: int) -> None:
        """Remember ``value``, unless an invalidation happened after generation ``since``."""
        if self.ttl <= 0:
            return
        with self._lock:
            if since != _generation:
                return
            self._entries[key] = (self._clock() + self.ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class AuthCaches:
    """The caches of one runtime: callers by API key digest, API clients by id (access tokens),
    ESSMS (FINESS numbers) by tenant."""

    def __init__(self, ttl: float) -> None:
        self.callers: TtlCache[str, Any] = TtlCache(ttl)
        self.clients: TtlCache[str, ApiClient] = TtlCache(ttl)
        self.tenant_essms: TtlCache[str, frozenset[str]] = TtlCache(ttl)


def _touches_credentials(objects: Any) -> bool:
    return any(isinstance(obj, INVALIDATING_MODELS) for obj in objects)


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _flush_context: UOWTransaction) -> None:
    if any(_touches_credentials(objects) for objects in (session.new, session.dirty, session.deleted)):
        session.info[_DIRTY_INFO] = True


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) in _INVALIDATING_TABLES:
        state.session.info[_DIRTY_INFO] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_DIRTY_INFO, False):
        invalidate_all()
