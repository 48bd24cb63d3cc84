"""``/v1/unmatched-persons``: a tenant's client lists its unmatched persons (identifiers decrypted)
and links one; another tenant and the administrator token see nothing of them."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway import persons
from gateway.security.clients import create_api_client, create_tenant
from gateway.security.crypto import KeyRing
from gateway.storage.db import session_scope
from tests.gateway.api.live import Api
from tests.gateway.api.support import ADMIN_TOKEN, bearer


def _keep(session_factory: sessionmaker[Session], keyring: KeyRing, tenant: Any, value: str) -> str:
    with session_scope(session_factory) as session:
        return persons.keep_unmatched(
            session,
            keyring,
            tenant_id=tenant.id,
            essms_finess=tenant.finess,
            source="hospital-adt",
            inbound_id=str(uuid.uuid4()),
            submission_id=None,
            event_type="adt.hospitalised",
            identifiers=[f"urn:oid:1.2.250.1.999.1|{value}"],
        )


def test_list_and_link(client: Api, tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing) -> None:
    kept = _keep(session_factory, keyring, tenant, "IPP-1")
    listed = client.get("/v1/unmatched-persons", headers=bearer(tenant.api_key))
    assert listed.status_code == 200, listed.text
    (entry,) = listed.json()
    assert entry["id"] == kept and entry["identifiers"] == ["urn:oid:1.2.250.1.999.1|IPP-1"]

    with session_scope(session_factory) as session:
        other = create_tenant(session, code="og-other", name="Autre")
        _client, other_key = create_api_client(session, tenant_id=other.id, name="DUI autre")
    assert client.get("/v1/unmatched-persons", headers=bearer(other_key)).json() == []
    refused = client.post(f"/v1/unmatched-persons/{kept}/link", json={"person_ref": "X"}, headers=bearer(other_key))
    assert refused.status_code == 404
    admin = client.get("/v1/unmatched-persons", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert admin.status_code == 403

    done = client.post(
        f"/v1/unmatched-persons/{kept}/link", json={"person_ref": "RES-1"}, headers=bearer(tenant.api_key)
    )
    assert done.status_code == 200, done.text
    assert done.json() == {"linked": 1, "person_ref": "RES-1"}
    assert client.get("/v1/unmatched-persons", headers=bearer(tenant.api_key)).json() == []
    again = client.post(
        f"/v1/unmatched-persons/{kept}/link", json={"person_ref": "RES-2"}, headers=bearer(tenant.api_key)
    )
    assert again.status_code == 404
    bad = client.post(f"/v1/unmatched-persons/{kept}/link", json={"person_ref": ""}, headers=bearer(tenant.api_key))
    assert bad.status_code == 422
    with session_scope(session_factory) as session:
        assert persons.match(session, tenant.id, ["urn:oid:1.2.250.1.999.1|IPP-1"]) == "RES-1"
