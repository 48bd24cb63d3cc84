"""Audit chains: several hash chains (partitions) instead of one, so appends do not all queue on
one head row (docs/audit.md).

* ``audit_events`` gains ``chain`` and ``chain_seq`` (its position in the chain, the integrity
  field); existing events become chain 0 with ``chain_seq = seq`` (they keep their version-1
  hashes, which ``verify`` accepts at the start of chain 0 only).
* ``audit_head`` holds one row per chain: the single head (id 1) becomes chain 0's.
* PostgreSQL: the ``audit_event_seq`` sequence hands out the global ``seq``, starting after the
  existing events.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("chain", sa.Integer(), nullable=True))
    op.add_column("audit_events", sa.Column("chain_seq", sa.BigInteger(), nullable=True))
    op.execute("UPDATE audit_events SET chain = 0, chain_seq = seq")
    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column("chain", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("chain_seq", existing_type=sa.BigInteger(), nullable=False)
    op.create_index("ix_audit_chain_position", "audit_events", ["chain", "chain_seq"], unique=True)
    op.execute("UPDATE audit_head SET id = 0 WHERE id = 1")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE audit_event_seq AS bigint")
        op.execute("SELECT setval('audit_event_seq', (SELECT coalesce(max(seq), 0) + 1 FROM audit_events), false)")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM audit_events")).scalar():
        # Events appended since 0008 are hashed with their chain and position (format 2), which
        # the older code cannot check: refuse rather than leave a trail it would report as forged.
        raise RuntimeError("cannot downgrade below 0008 with audit events in the database")
    if bind.dialect.name == "postgresql":
        op.execute("DROP SEQUENCE audit_event_seq")
    op.execute("DELETE FROM audit_head WHERE id <> 0")
    op.execute("UPDATE audit_head SET id = 1 WHERE id = 0")
    op.drop_index("ix_audit_chain_position", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("chain_seq")
        batch.drop_column("chain")
