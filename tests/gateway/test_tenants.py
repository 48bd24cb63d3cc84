"""Tenants, ESSMS and API clients: FINESS validation, key issuance and authentication."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import Conflict, ValidationFailed
from gateway.security.clients import (
    add_essms,
    authenticate,
    create_api_client,
    create_tenant,
    essms_of_tenant,
    is_valid_finess,
)
from gateway.storage.db import session_scope
from gateway.storage.models import ApiClient


def test_finess_luhn() -> None:
    assert is_valid_finess("750803447")  # the idNat_Struct example 1750803447 from the ANS samples
    assert not is_valid_finess("750803448")
    assert not is_valid_finess("75080344")
    assert not is_valid_finess("7508034470")
    assert not is_valid_finess("75O803447")


def test_provisioning_and_authentication(session_factory: sessionmaker[Session], tenant) -> None:
    assert tenant.api_key.startswith("dgw_")
    with session_scope(session_factory) as s:
        client = authenticate(s, tenant.api_key)
        assert client is not None and client.id == tenant.client_id and client.tenant_id == tenant.id
        stored = s.get(ApiClient, tenant.client_id)
        assert stored is not None
        secret = tenant.api_key.split("_", 2)[2]
        assert secret not in stored.key_hash and stored.key_hash != tenant.api_key
        assert essms_of_tenant(s, tenant.id) == {tenant.finess}

        prefix = tenant.api_key[: len("dgw_") + 8]
        wrong_secret = prefix + "_" + ("A" * 43)
        assert authenticate(s, wrong_secret) is None
        assert authenticate(s, "dgw_00000000_" + secret) is None
        assert authenticate(s, "") is None
        assert authenticate(s, tenant.api_key + "x") is None
        stored.active = False
    with session_scope(session_factory) as s:
        assert authenticate(s, tenant.api_key) is None


def test_validation_and_conflicts(session_factory: sessionmaker[Session], tenant) -> None:
    with session_scope(session_factory) as s:
        with pytest.raises(Conflict):
            create_tenant(s, code=tenant.code, name="again")
        with pytest.raises(ValidationFailed):
            create_tenant(s, code="Bad Code", name="x")
        with pytest.raises(ValidationFailed):
            add_essms(s, tenant_id=tenant.id, finess="750000001", name="bad key")
        with pytest.raises(Conflict):
            add_essms(s, tenant_id=tenant.id, finess=tenant.finess, name="duplicate")
        with pytest.raises(ValidationFailed):
            create_api_client(s, tenant_id=tenant.id, name="x", scopes="everything")
        other = create_tenant(s, code="og-2", name="Autre")
        add_essms(s, tenant_id=other.id, finess="750000028", name="IME", category="183")
        _, key2 = create_api_client(s, tenant_id=other.id, name="DUI 2", scopes="read")
    with session_scope(session_factory) as s:
        c2 = authenticate(s, key2)
        assert c2 is not None and c2.tenant_id != tenant.id and c2.scopes == "read"
        assert essms_of_tenant(s, tenant.id) == {tenant.finess}
