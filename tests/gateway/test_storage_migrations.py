"""Migrations: an empty database goes to head, the result matches the models, re-running is a no-op,
and concurrent upgrades on PostgreSQL serialise on the advisory lock."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text

from gateway.storage.db import make_engine
from gateway.storage.migrate import current_revision, head_revision, upgrade
from gateway.storage.models import AuditHead, Base

EXPECTED_TABLES = {
    "tenants",
    "users",
    "user_roles",
    "essms",
    "api_clients",
    "data_keys",
    "submissions",
    "renditions",
    "deliveries",
    "attempts",
    "receipts",
    "inbound_messages",
    "person_identifiers",
    "sharing_choices",
    "unmatched_persons",
    "credentials",
    "audit_events",
    "audit_head",
    "stay_events",
    "reporting_configs",
    "indicator_reports",
    "api_client_secrets",
    "routing_versions",
    "alembic_version",
}


def _check_schema(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == EXPECTED_TABLES
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
            assert diff == [], f"migrations and models differ: {diff}"
            head = conn.execute(select(AuditHead.id, AuditHead.last_seq, AuditHead.last_hash)).all()
            assert head == [(0, 0, "0" * 64)]  # chain 0's head; the others are created on first use
    finally:
        engine.dispose()


def test_sqlite_upgrade_from_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'g.db'}"
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == head_revision()
    _check_schema(url)
    upgrade(url)  # idempotent
    _check_schema(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        engine.dispose()


def test_postgresql_upgrade_from_empty_concurrently(pg_url_empty: str) -> None:
    """Three processes' worth of upgrades at once: the advisory lock makes them take turns."""
    url = pg_url_empty
    assert current_revision(url) is None
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert current_revision(url) == head_revision()
    _check_schema(url)


def test_sqlite_concurrent_upgrades_take_turns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    _check_schema(url)


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    from alembic import command

    from gateway.storage.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'g.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
    assert current_revision(url) is None
    upgrade(url)
    _check_schema(url)


def test_fixture_databases_are_migrated_and_empty(db_url: str) -> None:
    _check_schema(db_url)
