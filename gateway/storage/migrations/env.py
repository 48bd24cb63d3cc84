"""Alembic environment: runs on the connection handed over by gateway.storage.migrate.

The caller owns the connection and its transaction (and, on PostgreSQL, the advisory lock),
so this module only configures the migration context and runs the revisions.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from gateway.storage.models import Base

target_metadata = Base.metadata


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run migrations through gateway.storage.migrate.upgrade(url)")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite DDL is transactional too (pysqlite in autocommit mode, BEGIN IMMEDIATE issued by the engine)
        transactional_ddl=True,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) mode is not supported; run `dui-gateway migrate`")
_run_online()
