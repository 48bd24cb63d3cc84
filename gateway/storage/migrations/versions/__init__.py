"""Alembic revisions (one module per revision, written by hand and reviewed)."""
