"""HL7 v2: the person identifier index, sharing choices learnt from peers, unmatched persons.

Revision ID: 0004
Revises: 0003 (re-chained after 0003_throughput landed next to it)
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "person_identifiers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=128), nullable=False),
        sa.Column("person_ref", sa.String(length=128), nullable=False),
        sa.Column("essms_finess", sa.String(length=9), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_person_identifiers_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_person_identifiers"),
        sa.UniqueConstraint("tenant_id", "digest", name="uq_person_identifiers_digest"),
    )
    op.create_index("ix_person_identifiers_person", "person_identifiers", ["tenant_id", "person_ref"])
    op.create_table(
        "sharing_choices",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("person_ref", sa.String(length=128), nullable=False),
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column("refused", sa.Boolean(), nullable=False),
        sa.Column("origin", sa.String(length=64), nullable=False),
        sa.Column("inbound_id", sa.String(length=36), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_sharing_choices_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_sharing_choices"),
        sa.UniqueConstraint("tenant_id", "person_ref", "family", name="uq_sharing_choices_person_family"),
    )
    op.create_table(
        "unmatched_persons",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("essms_finess", sa.String(length=9), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("inbound_id", sa.String(length=36), nullable=False),
        sa.Column("submission_id", sa.String(length=36), nullable=True),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("digests", sa.JSON(), nullable=True),
        sa.Column("identifiers_ct", sa.LargeBinary(), nullable=False),
        sa.Column("data_key_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("person_ref", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_unmatched_persons_tenant_id_tenants"),
        sa.ForeignKeyConstraint(["data_key_id"], ["data_keys.id"], name="fk_unmatched_persons_data_key_id_data_keys"),
        sa.PrimaryKeyConstraint("id", name="pk_unmatched_persons"),
    )
    op.create_index("ix_unmatched_persons_status", "unmatched_persons", ["tenant_id", "status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_unmatched_persons_status", table_name="unmatched_persons")
    op.drop_table("unmatched_persons")
    op.drop_table("sharing_choices")
    op.drop_index("ix_person_identifiers_person", table_name="person_identifiers")
    op.drop_table("person_identifiers")
