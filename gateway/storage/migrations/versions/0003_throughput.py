"""Throughput: partial indexes that the claims walk in order, whatever the table size or statistics.

* ``ix_submissions_queue`` (created_at, id) over the queued submissions: the pipeline's claim
  reads the queue in arrival order from it (no sort of the queue);
* ``ix_submissions_queue_series``: "an older submission of the same series is still queued";
* ``ix_deliveries_pending_due`` (next_attempt_at, seq) over pending deliveries and
  ``ix_deliveries_lease`` (lease_until) over in-flight ones: the delivery claims;
* ``ix_submissions_status_created`` goes: the planner preferred it for a sort of the whole queue;
* ``ix_deliveries_open_series`` (destination, series_key, seq) over open deliveries: "an earlier
  version to the same destination has not ended" (holds only the open rows, stays small).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_QUEUED_SUBMISSION = "status IN ('received', 'processing')"
_PENDING_DELIVERY = "status = 'pending'"
_IN_FLIGHT_DELIVERY = "status = 'in_flight'"
_OPEN_DELIVERY = "status IN ('pending', 'in_flight', 'sent')"

_INDEXES: list[tuple[str, str, list[str], str]] = [
    ("ix_submissions_queue", "submissions", ["created_at", "id"], _QUEUED_SUBMISSION),
    (
        "ix_submissions_queue_series",
        "submissions",
        ["tenant_id", "person_ref", "essms_finess", "document_type", "created_at"],
        _QUEUED_SUBMISSION,
    ),
    ("ix_deliveries_pending_due", "deliveries", ["next_attempt_at", "seq"], _PENDING_DELIVERY),
    ("ix_deliveries_lease", "deliveries", ["lease_until"], _IN_FLIGHT_DELIVERY),
    ("ix_deliveries_open_series", "deliveries", ["destination", "series_key", "seq"], _OPEN_DELIVERY),
]


def upgrade() -> None:
    for name, table, columns, where in _INDEXES:
        op.create_index(name, table, columns, sqlite_where=sa.text(where), postgresql_where=sa.text(where))
    # Without planner statistics (a fresh or fast-growing database) PostgreSQL used this one to
    # gather the whole queue and sort it; ix_submissions_queue serves every status filter it did.
    op.drop_index("ix_submissions_status_created", table_name="submissions")


def downgrade() -> None:
    op.create_index("ix_submissions_status_created", "submissions", ["status", "created_at"])
    for name, table, _columns, _where in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
