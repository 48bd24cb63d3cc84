"""The audit exports (``/v1/audit-events``, FHIR ``AuditEvent``) answer 503 + Retry-After while an
audit append stays in flight past the reader's wait, instead of a page that could skip its event
(PostgreSQL; SQLite commits events in seq order and needs no wait)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit import append, horizon
from tests.gateway.api.live import Api
from tests.gateway.api.support import bearer


def test_audit_pages_wait_for_appends_in_flight(
    client: Api, tenant: Any, auditor_key: str, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    if session_factory.kw["bind"].dialect.name != "postgresql":
        pytest.skip("SQLite: a transaction holding an append holds the database's write lock (readers append too)")
    with session_factory() as s, s.begin():
        append(s, actor="w", action="attempt", entity_type="d", entity_id="before", tenant_id=tenant.id)
    stuck = session_factory()
    try:
        held = append(stuck, actor="w", action="attempt", entity_type="d", entity_id="in-flight", tenant_id=tenant.id)
        monkeypatch.setattr(horizon, "SETTLE_TIMEOUT_SECONDS", 0.3)
        answers: dict[str, Any] = {
            url: client.get(url, headers=bearer(auditor_key)) for url in ("/v1/audit-events", "/fhir/r4/AuditEvent")
        }
        for url, response in answers.items():
            assert response.status_code == 503, (url, response.text)
            assert response.headers["retry-after"] == "1"
            assert "did not settle" in response.text
    finally:
        stuck.commit()
        stuck.close()
    seqs = []
    url = "/v1/audit-events?limit=2"  # each page read appends one "exported" event
    while url:
        page = client.get(url, headers=bearer(auditor_key)).json()
        seqs += [
            int(d["valueString"])
            for e in page.get("entry", [])
            for d in e["resource"]["entity"][0]["detail"]
            if d["type"] == "seq"
        ]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), "")
        url = url.replace(client.base_url, "")
    assert held.seq in seqs and seqs == sorted(seqs)
