"""Shared fixtures. Package-specific fixtures live in each tests/<package>/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def kit_dir() -> Path:
    """The CI-SIS kit directory (CISIS_KIT_DIR); tests needing it skip when it is absent."""
    value = os.environ.get("CISIS_KIT_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("CISIS_KIT_DIR not set or missing: the CI-SIS kit is needed for this test")
    return Path(value)


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A reachable PostgreSQL URL (DUI_GATEWAY_TEST_PG_URL); tests needing it skip otherwise."""
    value = os.environ.get("DUI_GATEWAY_TEST_PG_URL")
    if not value:
        pytest.skip("DUI_GATEWAY_TEST_PG_URL not set: no PostgreSQL for scale-out tests")
    return value
