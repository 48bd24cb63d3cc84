"""Delivery core v2: acknowledgement columns on deliveries, receipts, inbound messages, credentials.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("ack_ref", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("receipt_due_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_deliveries_series_seq", "deliveries", ["series_key", "seq"])
    op.create_index("ix_deliveries_ack_ref", "deliveries", ["ack_ref"])
    op.create_index("ix_deliveries_receipt_due", "deliveries", ["status", "receipt_due_at"])

    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("media_type", sa.String(length=128), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=True),
        sa.Column("content_ct", sa.LargeBinary(), nullable=False),
        sa.Column("data_key_id", sa.String(length=36), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["data_key_id"], ["data_keys.id"], name="fk_inbound_messages_data_key_id_data_keys"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_inbound_messages_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_messages"),
        sa.UniqueConstraint("source", "external_id", name="uq_inbound_source_external_id"),
    )
    op.create_index("ix_inbound_status_received", "inbound_messages", ["status", "received_at"])

    op.create_table(
        "receipts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("inbound_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("remote_id", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"], name="fk_receipts_delivery_id_deliveries"),
        sa.ForeignKeyConstraint(
            ["inbound_id"], ["inbound_messages.id"], name="fk_receipts_inbound_id_inbound_messages"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_receipts"),
    )
    op.create_index("ix_receipts_delivery_id", "receipts", ["delivery_id"])

    op.create_table(
        "credentials",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("essms_finess", sa.String(length=9), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("data_ct", sa.LargeBinary(), nullable=False),
        sa.Column("data_key_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["data_key_id"], ["data_keys.id"], name="fk_credentials_data_key_id_data_keys"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_credentials_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_credentials"),
        sa.UniqueConstraint("tenant_id", "essms_finess", "purpose", name="uq_credentials_owner"),
    )


def downgrade() -> None:
    op.drop_table("credentials")
    op.drop_index("ix_receipts_delivery_id", table_name="receipts")
    op.drop_table("receipts")
    op.drop_index("ix_inbound_status_received", table_name="inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_index("ix_deliveries_receipt_due", table_name="deliveries")
    op.drop_index("ix_deliveries_ack_ref", table_name="deliveries")
    op.drop_index("ix_deliveries_series_seq", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("receipt_due_at")
        batch.drop_column("sent_at")
        batch.drop_column("ack_ref")
