"""Administration API over HTTP: who may administer what, clients and secrets, credentials with
certificate expiry, routing rules versioned and applied without restart; every change audited."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import Session, sessionmaker

from gateway import routing_store
from gateway.credentials import CredentialMaterial, set_credentials
from gateway.routing import RoutingTable, parse_config
from gateway.runtime import Runtime
from gateway.security.clients import create_api_client
from gateway.security.crypto import KeyRing
from gateway.settings import Settings
from gateway.storage.db import session_scope
from mappings.base import RecordFacts
from tests.gateway.api.live import Api
from tests.gateway.api.support import ADMIN_TOKEN, audit_events, bearer
from tests.gateway.security.test_oauth import FORM, basic
from tests.support.pki import certificate_and_key

PLATFORM = bearer(ADMIN_TOKEN)


@pytest.fixture
def tenant_admin(session_factory: sessionmaker[Session], tenant: Any) -> dict[str, str]:
    with session_scope(session_factory) as session:
        _, key = create_api_client(session, tenant_id=tenant.id, name="admin A", scopes="admin")
    return bearer(key)


def test_platform_operator_provisions_a_tenant_end_to_end(client: Api, session_factory: sessionmaker[Session]) -> None:
    created = client.post("/v1/admin/tenants", json={"code": "og-neuf", "name": "OG neuf"}, headers=PLATFORM)
    assert created.status_code == 201, created.text
    tid = created.json()["id"]
    assert client.post("/v1/admin/tenants", json={"code": "og-neuf", "name": "x"}, headers=PLATFORM).status_code == 409
    essms = client.post(f"/v1/admin/tenants/{tid}/essms", json={"finess": "750000036", "name": "SSIAD"},
                        headers=PLATFORM)  # fmt: skip
    assert essms.status_code == 201, essms.text
    bad = client.post(f"/v1/admin/tenants/{tid}/essms", json={"finess": "750000037", "name": "x"}, headers=PLATFORM)
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    made = client.post(f"/v1/admin/tenants/{tid}/clients", json={"name": "DUI", "scopes": "submissions:read"},
                       headers=PLATFORM)  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    body = made.json()
    cid, key, secret = body["client"]["id"], body["api_key"], body["client_secret"]
    # both credentials work, for that tenant only
    assert client.get("/v1/submissions", headers=bearer(key)).status_code == 200
    tok = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=FORM | basic(cid, secret))
    assert tok.status_code == 200 and tok.json()["scope"] == "submissions:read"
    # rotation: the new secret works, the old one too during the grace period
    rotated = client.post(f"/v1/admin/tenants/{tid}/clients/{cid}/secrets", json={"grace_seconds": 600},
                          headers=PLATFORM)  # fmt: skip
    assert rotated.status_code == 201, rotated.text
    new_secret = rotated.json()["client_secret"]
    for s in (secret, new_secret):
        assert client.post("/oauth/token", data={"grant_type": "client_credentials"},
                           headers=FORM | basic(cid, s)).status_code == 200  # fmt: skip
    listed = client.get(f"/v1/admin/tenants/{tid}/clients", headers=PLATFORM).json()
    assert len(listed[0]["secrets"]) == 2 and "hash" not in str(listed) and new_secret not in str(listed)
    # revocation stops key, secret and token at once
    assert client.post(f"/v1/admin/tenants/{tid}/clients/{cid}/revoke", headers=PLATFORM).status_code == 200
    assert client.get("/v1/submissions", headers=bearer(key)).status_code == 401
    assert client.get("/v1/submissions", headers=bearer(tok.json()["access_token"])).status_code == 401
    actions = [e.action for e in audit_events(session_factory, tenant_id=tid)]
    for action in ("tenant_created", "essms_added", "client_created", "client_secret_rotated", "client_revoked"):
        assert action in actions, actions
    [revoked] = audit_events(session_factory, action="client_revoked")
    assert revoked.actor == "admin" and revoked.detail["before"] == {"active": True}


def test_a_tenant_administrator_administers_its_tenant_only(
    client: Api, tenant: Any, other_tenant: Any, tenant_admin: dict[str, str]
) -> None:
    tenants = client.get("/v1/admin/tenants", headers=tenant_admin).json()
    assert [t["id"] for t in tenants] == [tenant.id]
    assert client.get(f"/v1/admin/tenants/{tenant.id}/clients", headers=tenant_admin).status_code == 200
    missing = "00000000-0000-0000-0000-000000000000"
    for tid in (other_tenant.id, missing):  # another tenant looks like no tenant
        for method, path in (
            ("GET", f"/v1/admin/tenants/{tid}/clients"),
            ("GET", f"/v1/admin/tenants/{tid}/essms"),
            ("POST", f"/v1/admin/tenants/{tid}/clients/{other_tenant.client_id}/revoke"),
        ):
            assert client.request(method, path, headers=tenant_admin).status_code == 404, path
    # platform-level administration is not its business
    assert client.post("/v1/admin/tenants", json={"code": "x", "name": "x"}, headers=tenant_admin).status_code == 403
    assert client.get("/v1/admin/routing", headers=tenant_admin).status_code == 403
    # a reader cannot administer at all: the scope is named
    refused = client.get("/v1/admin/tenants", headers=bearer(tenant.api_key))
    assert refused.status_code == 403 and refused.json()["required_scope"] == "admin"


def _certificate(days: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EHPAD de test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM)


def test_credentials_show_certificate_expiry_and_alert_30_days_ahead(
    client: Api, tenant: Any, other_tenant: Any, tenant_admin: dict[str, str],
    session_factory: sessionmaker[Session], keyring: KeyRing,
) -> None:  # fmt: skip
    with session_scope(session_factory) as session:
        for tid, finess, purpose, days in (
            (tenant.id, tenant.finess, "dmp", 10),
            (tenant.id, tenant.finess, "mssante", 200),
            (other_tenant.id, other_tenant.finess, "dmp", 5),
        ):
            set_credentials(session, keyring=keyring, tenant_id=tid, essms_finess=finess, purpose=purpose,
                            material=CredentialMaterial(certificate_pem=_certificate(days), password="s3cret"),
                            actor="test")  # fmt: skip
    response = client.get("/v1/admin/credentials", headers=tenant_admin)
    assert response.status_code == 200, response.text
    items = {i["purpose"]: i for i in response.json()["items"]}
    assert set(items) == {"dmp", "mssante"}  # its own tenant only
    assert items["dmp"]["alert"] is True and items["mssante"]["alert"] is False
    cert = items["dmp"]["certificates"][0]
    assert cert["expiring_soon"] and 8 <= cert["days_left"] <= 10 and "EHPAD de test" in cert["subject"]
    assert "s3cret" not in response.text and "BEGIN CERTIFICATE" not in response.text
    everything = client.get("/v1/admin/credentials", headers=PLATFORM).json()["items"]
    assert len(everything) == 3
    alerts = audit_events(session_factory, action="credential_expiring")
    assert {e.tenant_id for e in alerts} == {tenant.id, other_tenant.id}
    client.get("/v1/admin/credentials", headers=PLATFORM)  # once a day per certificate, not per call
    assert len(audit_events(session_factory, action="credential_expiring")) == len(alerts)
    ready = client.get("/readyz").json()
    checks = ready.get("checks", ready.get("extra", {}).get("checks", {}))
    assert checks["credentials"]["expiring_soon"] == 2
    metrics = client.get("/metrics").text
    assert "dui_gateway_credential_certificate_days_left" in metrics


ROUTING = {
    "destinations": {
        "dmp": {"connector": "dmp", "category": "dmp"},
        "hook": {"connector": "webhook", "category": "webhook"},
    },
    "rules": [{"name": "all to hook", "document_types": ["test-note"], "destinations": ["hook"]}],
}


def _decide(runtime: Runtime) -> tuple[str, ...]:
    table = routing_store.current_table(runtime)
    facts = RecordFacts(person_ref="P", essms_finess="750000010", ins_qualified=True)
    return table.decide(tenant_code="og-test", tenant_id="t", document_type="test-note", facts=facts).destinations


def test_routing_rules_are_validated_versioned_audited_and_hot_reloaded(
    client: Api, runtime: Runtime, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    runtime.routing = RoutingTable(config=parse_config(ROUTING), source="routing.yaml")
    # a second process on the same database (a worker), started before the change
    worker_settings = Settings(**{**runtime.settings.model_dump(), "routing_refresh_seconds": 0})
    worker = Runtime(settings=worker_settings, engine=runtime.engine, session_factory=session_factory, keyring=keyring)
    worker.routing = RoutingTable(config=parse_config(ROUTING), source="routing.yaml")
    assert _decide(runtime) == _decide(worker) == ("hook",)

    current = client.get("/v1/admin/routing", headers=PLATFORM).json()
    assert current["version"] == 0 and current["destinations"] == ["dmp", "hook"]
    invalid = client.request("PUT", "/v1/admin/routing", headers=PLATFORM,
                         json={"rules": [{"document_types": ["test-note"], "destinations": ["nowhere"]}]})  # fmt: skip
    assert invalid.status_code == 422 and "nowhere" in invalid.text
    new_rules = [{"name": "notes to DMP", "document_types": ["test-note"], "destinations": ["dmp", "hook"]}]
    change = {"rules": new_rules, "comment": "DMP opens", "expected_version": 0}
    changed = client.request("PUT", "/v1/admin/routing", json=change, headers=PLATFORM)
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 1
    stale = client.request(
        "PUT", "/v1/admin/routing", json={"rules": new_rules, "expected_version": 0}, headers=PLATFORM
    )
    assert stale.status_code == 409
    # applied without restart: in this process at once, in the other one at its next decision
    assert _decide(runtime) == ("dmp", "hook")
    assert _decide(worker) == ("dmp", "hook")
    [event] = audit_events(session_factory, action="routing_changed")
    assert event.actor == "admin"
    assert json.loads(event.detail["before"])[0]["destinations"] == ["hook"]
    assert json.loads(event.detail["after"])[0]["destinations"] == ["dmp", "hook"]
    versions = client.get("/v1/admin/routing/versions", headers=PLATFORM).json()
    assert [v["version"] for v in versions] == [1] and versions[0]["comment"] == "DMP opens"


def test_a_process_inside_its_own_write_transaction_still_picks_up_new_rules(
    runtime: Runtime, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    """The admin routes read the stored rules in the request's transaction, then ask for the table
    in force. On SQLite that transaction holds the write lock: a refresh that opened a second write
    transaction waited for itself for the whole busy timeout (30 s), then kept the old rules."""
    runtime.routing = RoutingTable(config=parse_config(ROUTING), source="routing.yaml")
    worker_settings = Settings(**{**runtime.settings.model_dump(), "routing_refresh_seconds": 0})
    worker = Runtime(settings=worker_settings, engine=runtime.engine, session_factory=session_factory, keyring=keyring)
    worker.routing = RoutingTable(config=parse_config(ROUTING), source="routing.yaml")
    assert _decide(worker) == ("hook",)
    new_rules = [{"name": "notes to DMP", "document_types": ["test-note"], "destinations": ["dmp", "hook"]}]
    with session_scope(session_factory) as session:
        routing_store.save_rules(session, runtime=runtime, rules=new_rules, actor="admin", expected_version=0)
    with session_factory() as session, session.begin():
        assert routing_store.latest(session) is not None  # this transaction now holds SQLite's write lock
        table = routing_store.current_table(worker)
    facts = RecordFacts(person_ref="P", essms_finess="750000010", ins_qualified=True)
    decided = table.decide(tenant_code="og-test", tenant_id="t", document_type="test-note", facts=facts)
    assert decided.destinations == ("dmp", "hook")


def test_tenant_essms_edits_and_credential_uploads_are_audited_before_after(
    client: Api, tenant: Any, other_tenant: Any, tenant_admin: dict[str, str],
    session_factory: sessionmaker[Session],
) -> None:  # fmt: skip
    renamed = client.request("PATCH", f"/v1/admin/tenants/{tenant.id}", json={"name": "OG renommé"},
                             headers=tenant_admin)  # fmt: skip
    assert renamed.status_code == 200 and renamed.json()["name"] == "OG renommé", renamed.text
    [essms] = client.get(f"/v1/admin/tenants/{tenant.id}/essms", headers=tenant_admin).json()
    edited = client.request("PATCH", f"/v1/admin/tenants/{tenant.id}/essms/{essms['id']}",
                            json={"name": "EHPAD Les Tilleuls", "category": "500"}, headers=tenant_admin)  # fmt: skip
    assert edited.status_code == 200 and edited.json()["finess"] == essms["finess"], edited.text
    [event] = audit_events(session_factory, action="essms_updated")
    assert event.detail["before"]["essms_name"] == essms["name"]
    assert event.detail["after"] == {"essms_name": "EHPAD Les Tilleuls", "category": "500"}
    # another tenant (or its ESSMS) does not exist for a tenant administrator
    assert client.request("PATCH", f"/v1/admin/tenants/{other_tenant.id}", json={"name": "x"},
                          headers=tenant_admin).status_code == 404  # fmt: skip
    assert client.request("PATCH", f"/v1/admin/tenants/{tenant.id}/essms/{other_tenant.id}",
                          json={"name": "x"}, headers=tenant_admin).status_code == 404  # fmt: skip

    cert, key = certificate_and_key(20)
    path = f"/v1/admin/tenants/{tenant.id}/credentials/{tenant.finess}/dmp"
    stored = client.request("PUT", path, json={"certificate_pem": cert, "private_key_pem": key}, headers=tenant_admin)
    assert stored.status_code == 200, stored.text
    assert "PRIVATE KEY" not in stored.text and "CERTIFICATE" not in stored.text
    listed = client.get("/v1/admin/credentials", headers=tenant_admin).json()["items"]
    assert [(i["purpose"], i["alert"]) for i in listed] == [("dmp", True)]
    cert2, key2 = certificate_and_key(300)
    assert client.request("PUT", path, json={"certificate_pem": cert2, "private_key_pem": key2},
                          headers=tenant_admin).status_code == 200  # fmt: skip
    first, second = audit_events(session_factory, action="credentials_set")
    assert first.detail["before"] is None and second.detail["replaced"] is True
    assert second.detail["before"]["certificates"] == first.detail["after"]["certificates"]
    assert second.detail["after"]["certificates"]["certificate"]["not_after"] > first.detail["after"]["certificates"][
        "certificate"]["not_after"]  # fmt: skip
    assert "PRIVATE KEY" not in json.dumps([first.detail, second.detail])
    # a key that does not match the form, an ESSMS of another tenant, another tenant: refused
    bad = client.request("PUT", path, json={"certificate_pem": cert, "private_key_pem": "nope"}, headers=tenant_admin)
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    elsewhere = f"/v1/admin/tenants/{tenant.id}/credentials/{other_tenant.finess}/dmp"
    assert client.request("PUT", elsewhere, json={"certificate_pem": cert, "private_key_pem": key},
                          headers=tenant_admin).status_code == 422  # fmt: skip
    other = f"/v1/admin/tenants/{other_tenant.id}/credentials/{other_tenant.finess}/dmp"
    assert client.request("PUT", other, json={"certificate_pem": cert, "private_key_pem": key},
                          headers=tenant_admin).status_code == 404  # fmt: skip
