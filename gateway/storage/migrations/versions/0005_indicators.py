"""Indicators (issue #11): stay events (encrypted), reporting configuration, reported periods.

Revision ID: 0005
Revises: 0004 (hl7v2, on main when this was rebased)
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "stay_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("essms_finess", sa.String(length=9), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("person_ref", sa.String(length=128), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("payload_ct", sa.LargeBinary(), nullable=False),
        sa.Column("data_key_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_stay_events_tenant_id_tenants"),
        sa.ForeignKeyConstraint(["data_key_id"], ["data_keys.id"], name="fk_stay_events_data_key_id_data_keys"),
        sa.PrimaryKeyConstraint("id", name="pk_stay_events"),
        sa.UniqueConstraint("tenant_id", "essms_finess", "event_id", "version", name="uq_stay_event_version"),
    )
    op.create_index("ix_stay_events_essms_time", "stay_events", ["tenant_id", "essms_finess", "occurred_at"])
    op.create_index("ix_stay_events_person", "stay_events", ["tenant_id", "essms_finess", "person_ref"])
    op.create_table(
        "reporting_configs",
        sa.Column("essms_finess", sa.String(length=9), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("capacities", sa.JSON(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_reporting_configs_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("essms_finess", name="pk_reporting_configs"),
    )
    op.create_index("ix_reporting_configs_tenant_id", "reporting_configs", ["tenant_id"])
    op.create_table(
        "indicator_reports",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("essms_finess", sa.String(length=9), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dataset_sha256", sa.String(length=64), nullable=False),
        sa.Column("submission_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_indicator_reports_tenant_id_tenants"),
        sa.ForeignKeyConstraint(
            ["submission_id"], ["submissions.id"], name="fk_indicator_reports_submission_id_submissions"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_indicator_reports"),
    )
    op.create_index("ix_indicator_reports_essms", "indicator_reports", ["tenant_id", "essms_finess", "period_start"])


def downgrade() -> None:
    op.drop_index("ix_indicator_reports_essms", table_name="indicator_reports")
    op.drop_table("indicator_reports")
    op.drop_index("ix_reporting_configs_tenant_id", table_name="reporting_configs")
    op.drop_table("reporting_configs")
    op.drop_index("ix_stay_events_person", table_name="stay_events")
    op.drop_index("ix_stay_events_essms_time", table_name="stay_events")
    op.drop_table("stay_events")
