"""The console's own queries (counts, filters, dashboard, timeline, dead letters) on PostgreSQL:
the HTTP tests that exercise them, run again on a migrated PostgreSQL schema (skipped without
DUI_GATEWAY_TEST_PG_URL)."""

from __future__ import annotations

import pytest

from tests.gateway.console.test_console_http import (  # noqa: F401 - collected again here, on PostgreSQL
    test_bulk_retry_of_dead_letters,
    test_detail_shows_attempts_receipts_and_is_an_audited_read,
    test_flows_list_filters_and_counts,
    test_platform_operator_sees_metrics_of_every_tenant_never_documents,
    test_tenant_isolation,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_url(pg_url_test: str) -> str:
    return pg_url_test
