"""Programmatic Alembic: ``upgrade(url)`` brings a database to the newest schema.

The migrations ship inside the package (``gateway/storage/migrations``), so an installed
gateway can migrate without an ``alembic.ini``. The whole upgrade runs in one transaction:

* SQLite: the engine opens it with ``BEGIN IMMEDIATE``, which also serialises two processes.
* PostgreSQL: a transaction-level advisory lock is taken first, so several API/worker
  processes starting at once migrate one after the other; the later ones find the database
  already at head and do nothing. DDL is transactional, so a failed upgrade leaves no trace.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from gateway.storage.db import make_engine

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Arbitrary constant shared by every gateway process: "dui-gw" in ASCII.
_ADVISORY_LOCK_KEY = 0x6475692D6777


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config pointing at the packaged migrations (no ini file needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migration found in the package")
    return head


def current_revision(url: str) -> str | None:
    """The revision the database is at (None for an empty database)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (default: head). Idempotent, concurrency-safe."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_KEY})
            command.upgrade(alembic_config(conn), revision)
    finally:
        engine.dispose()
