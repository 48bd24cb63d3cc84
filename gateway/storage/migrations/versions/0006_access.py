"""Access control: OAuth2 client secrets, ESSMS restriction of API clients, versioned routing rules.

Revision ID: 0006
Revises: 0005 (written on 0002; re-chained after main gained 0004_hl7v2 and 0005_indicators)
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_clients") as batch:
        batch.add_column(sa.Column("essms", sa.String(length=255), nullable=True))
    op.create_table(
        "api_client_secrets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("client_id", sa.String(length=36), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"], ["api_clients.id"], name=op.f("fk_api_client_secrets_client_id_api_clients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_client_secrets")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_client_secrets_prefix")),
    )
    op.create_index(op.f("ix_api_client_secrets_client_id"), "api_client_secrets", ["client_id"])
    op.create_table(
        "routing_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_routing_versions")),
    )


def downgrade() -> None:
    op.drop_table("routing_versions")
    op.drop_index(op.f("ix_api_client_secrets_client_id"), table_name="api_client_secrets")
    op.drop_table("api_client_secrets")
    with op.batch_alter_table("api_clients") as batch:
        batch.drop_column("essms")
