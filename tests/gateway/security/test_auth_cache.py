"""The short-lived memory of authenticated credentials (gateway.security.auth_cache)."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from gateway.security import auth_cache
from gateway.security.auth_cache import TtlCache
from gateway.storage.db import session_scope
from gateway.storage.models import ApiClient, Essms, Submission
from tests.gateway.conftest import ProvisionedTenant


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_ttl_seconds() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(2.0, clock=clock)
    cache.put("k", 1, since=auth_cache.generation())
    clock.now += 1.9
    assert cache.get("k") == 1
    clock.now += 0.1
    assert cache.get("k") is None


def test_ttl_zero_remembers_nothing() -> None:
    cache: TtlCache[str, int] = TtlCache(0)
    cache.put("k", 1, since=auth_cache.generation())
    assert cache.get("k") is None and not cache.enabled


def test_a_look_up_older_than_an_invalidation_is_not_stored() -> None:
    cache: TtlCache[str, int] = TtlCache(60)
    since = auth_cache.generation()
    cache.put("old", 1, since=since)
    auth_cache.invalidate_all()  # a credential changed while a look-up was running
    assert cache.get("old") is None
    cache.put("raced", 2, since=since)
    assert cache.get("raced") is None
    cache.put("fresh", 3, since=auth_cache.generation())
    assert cache.get("fresh") == 3


def test_bounded() -> None:
    cache: TtlCache[int, int] = TtlCache(60, max_entries=3)
    for i in range(5):
        cache.put(i, i, since=auth_cache.generation())
    assert [cache.get(i) for i in range(5)] == [None, None, 2, 3, 4]


def _filled() -> TtlCache[str, str]:
    cache: TtlCache[str, str] = TtlCache(60)
    cache.put("k", "v", since=auth_cache.generation())
    return cache


def test_a_committed_change_to_a_client_or_an_essms_empties_the_caches(
    session_factory: sessionmaker[Session], tenant: ProvisionedTenant
) -> None:
    cache = _filled()
    with session_scope(session_factory) as session:  # ORM flush of a client
        client = session.get(ApiClient, tenant.client_id)
        assert client is not None
        client.active = False
    assert cache.get("k") is None

    cache = _filled()
    with session_scope(session_factory) as session:  # ORM UPDATE statement on the ESSMS
        session.execute(update(Essms).where(Essms.id == tenant.essms_id).values(name="renamed"))
    assert cache.get("k") is None


def test_a_rolled_back_change_or_another_table_keeps_them(
    session_factory: sessionmaker[Session], tenant: ProvisionedTenant
) -> None:
    cache = _filled()
    with session_factory() as session:
        client = session.get(ApiClient, tenant.client_id)
        assert client is not None
        client.active = False
        session.flush()
        session.rollback()
    with session_scope(session_factory) as session:
        session.execute(update(Submission).where(Submission.id == "none").values(status="received"))
    assert cache.get("k") == "v"
