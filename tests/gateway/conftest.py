"""Gateway fixtures: migrated databases (SQLite always, PostgreSQL when reachable), a key ring,
and a provisioned tenant.

Cheap by construction: the migration runs once per session (into a SQLite file that is then
copied; on PostgreSQL, recorded and replayed into a new schema per test), so every test gets its
own empty, migrated database in milliseconds.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from gateway.security.clients import add_essms, create_api_client, create_tenant
from gateway.security.crypto import KeyRing, generate_master_key
from gateway.settings import get_settings
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.migrate import alembic_config, upgrade

# Valid FINESS géographique numbers (Luhn key) used by the tests; not real establishments.
TEST_FINESS = "750000010"
TEST_FINESS_2 = "750000028"


# -- SQLite ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")  # the engine is disposed: WAL checkpointed, one file to copy
    return path


@pytest.fixture
def sqlite_url(_sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite file database in tmp_path."""
    path = tmp_path / "gateway.db"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


# -- PostgreSQL ------------------------------------------------------------------------------
# Each test (or module) gets its own schema in the server's database, selected through the URL
# (``?options=-csearch_path=<schema>``), so the URL also works in subprocesses. CREATE/DROP
# DATABASE force checkpoints and take seconds on a busy server; a schema takes milliseconds.
# The migration is run once for real (Alembic, into a scratch schema) while recording the DDL/DML
# it sends; each new schema then replays exactly those statements in one transaction.
def _admin_conninfo(pg_url: str) -> str:
    return make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _url_for_schema(pg_url: str, schema: str) -> str:
    return (
        make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    )


def _admin(pg_url: str, sql: str) -> None:
    with psycopg.connect(_admin_conninfo(pg_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


Statements = list[tuple[str, Any]]


@dataclass
class _PgSchemas:
    pg_url: str
    script: Statements
    created: list[str]

    def new(self) -> str:
        name = f"dgw_s_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(_admin_conninfo(self.pg_url), connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')  # type: ignore[arg-type]
            conn.execute(f'SET LOCAL search_path TO "{name}"')  # type: ignore[arg-type]
            for statement, params in self.script:
                conn.execute(statement, params)  # type: ignore[arg-type]
        self.created.append(name)
        return _url_for_schema(self.pg_url, name)


@pytest.fixture(scope="session")
def _pg_schemas(pg_url: str) -> Iterator[_PgSchemas]:
    try:
        with psycopg.connect(_admin_conninfo(pg_url), autocommit=True, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {type(exc).__name__}")
    scratch = f"dgw_s_{uuid.uuid4().hex[:12]}"
    _admin(pg_url, f'CREATE SCHEMA "{scratch}"')
    schemas = _PgSchemas(pg_url=pg_url, script=[], created=[scratch])
    try:
        engine = make_engine(_url_for_schema(pg_url, scratch))

        @event.listens_for(engine, "before_cursor_execute")
        def _record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
            if not statement.lstrip().upper().startswith(("SELECT", "SHOW")):
                schemas.script.append((statement, parameters))

        try:
            with engine.begin() as conn:
                command.upgrade(alembic_config(conn), "head")
        finally:
            engine.dispose()
        assert any("CREATE TABLE audit_events" in s for s, _ in schemas.script)
        yield schemas
    finally:
        # A connection a failed test left open may still hold locks: never wait forever on it.
        # DROP ... CASCADE takes one lock per object in one transaction; the server's lock table
        # is shared (max_locks_per_transaction x connections, 6,400 by default): 10 schemas of
        # ~140 objects each stay well under it, 50 did not once the schema grew (out of shared memory).
        for i in range(0, len(schemas.created), 10):
            names = ", ".join(f'"{n}"' for n in schemas.created[i : i + 10])
            try:
                _admin(pg_url, f"SET lock_timeout = '15s'; DROP SCHEMA IF EXISTS {names} CASCADE")
            except psycopg.errors.LockNotAvailable:
                print(f"could not drop test schemas (still locked): {names}")


@pytest.fixture(scope="module")
def pg_url_fresh(_pg_schemas: _PgSchemas) -> str:
    """A fresh, migrated PostgreSQL schema for this test module (its own search_path in the URL)."""
    return _pg_schemas.new()


@pytest.fixture
def pg_url_empty(_pg_schemas: _PgSchemas) -> str:
    """A fresh, empty (not migrated) PostgreSQL schema: for migration tests."""
    name = f"dgw_s_{uuid.uuid4().hex[:12]}"
    _admin(_pg_schemas.pg_url, f'CREATE SCHEMA "{name}"')
    _pg_schemas.created.append(name)
    return _url_for_schema(_pg_schemas.pg_url, name)


@pytest.fixture
def pg_url_test(_pg_schemas: _PgSchemas) -> str:
    """A fresh, migrated PostgreSQL schema for this one test."""
    return _pg_schemas.new()


# -- either backend --------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh, migrated, empty database for this test: SQLite, then PostgreSQL (skipped when unavailable)."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url_test"))


@pytest.fixture
def session_factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


@pytest.fixture
def master_keys_spec() -> str:
    """A random master key in DUI_GATEWAY_MASTER_KEYS form ("test-1:<base64>")."""
    return f"test-1:{generate_master_key()}"


@pytest.fixture
def keyring(master_keys_spec: str) -> KeyRing:
    """A key ring with one random master key ("test-1"), the one in ``master_keys_spec``."""
    return KeyRing.parse(master_keys_spec)


@pytest.fixture
def gateway_env(monkeypatch: pytest.MonkeyPatch, db_url: str, master_keys_spec: str) -> Iterator[str]:
    """Environment for code that reads ``get_settings()`` (CLIs): dev profile, ``db_url``, the test
    master key, no audit keys. The settings cache is cleared before and after. Yields db_url."""
    for name in list(os.environ):
        if name.startswith("DUI_GATEWAY_") and name != "DUI_GATEWAY_TEST_PG_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("DUI_GATEWAY_PROFILE", "dev")
    monkeypatch.setenv("DUI_GATEWAY_DATABASE_URL", db_url)
    monkeypatch.setenv("DUI_GATEWAY_MASTER_KEYS", master_keys_spec)
    get_settings.cache_clear()
    yield db_url
    get_settings.cache_clear()


@dataclass(frozen=True)
class ProvisionedTenant:
    id: str
    code: str
    finess: str
    essms_id: str
    client_id: str
    api_key: str  # plaintext, as the DUI vendor would hold it


@pytest.fixture
def tenant(session_factory: sessionmaker[Session]) -> ProvisionedTenant:
    """A tenant with one ESSMS (FINESS 750000010, EHPAD) and one API client (scopes submit read)."""
    with session_scope(session_factory) as session:
        t = create_tenant(session, code="og-test", name="Organisme gestionnaire de test")
        essms = add_essms(session, tenant_id=t.id, finess=TEST_FINESS, name="EHPAD de test", category="500")
        client, key = create_api_client(session, tenant_id=t.id, name="DUI de test")
        return ProvisionedTenant(
            id=t.id, code=t.code, finess=essms.finess, essms_id=essms.id, client_id=client.id, api_key=key
        )
