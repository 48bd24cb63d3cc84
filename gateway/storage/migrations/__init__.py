"""Alembic migrations, shipped as package data and run by gateway.storage.migrate.upgrade."""
