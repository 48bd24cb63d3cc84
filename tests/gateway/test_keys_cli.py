"""``dui-gateway keys`` and ``dui-gateway tenants`` against a real database."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from gateway.audit import iter_events, verify
from gateway.security.cli import app, tenants_app
from gateway.security.clients import authenticate, essms_of_tenant, tenant_by_code
from gateway.security.crypto import KeyRing, decrypt, encrypt
from gateway.settings import get_settings
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.models import DataKey


def test_provision_rotate_and_rewrap(gateway_env: str, master_keys_spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    assert runner.invoke(tenants_app, ["create", "og-cli", "OG en ligne de commande"]).exit_code == 0
    result = runner.invoke(tenants_app, ["add-essms", "og-cli", "750000010", "EHPAD", "--category", "500"])
    assert result.exit_code == 0, result.output
    bad = runner.invoke(tenants_app, ["add-essms", "og-cli", "750000011", "typo"])
    assert bad.exit_code == 1 and "not a valid FINESS" in bad.stderr
    assert runner.invoke(tenants_app, ["create-client", "nope", "x"]).exit_code == 1
    result = runner.invoke(tenants_app, ["create-client", "og-cli", "DUI", "--scopes", "submit"])
    assert result.exit_code == 0, result.output
    api_key = result.stdout.strip()
    assert api_key.startswith("dgw_") and api_key not in result.stderr

    engine = make_engine(gateway_env)
    factory = make_sessionmaker(engine)
    try:
        ring = KeyRing.parse(master_keys_spec)
        with session_scope(factory) as s:
            tenant = tenant_by_code(s, "og-cli")
            client = authenticate(s, api_key)
            assert client is not None and client.tenant_id == tenant.id and client.scopes == "submit"
            assert essms_of_tenant(s, tenant.id) == {"750000010"}
            ct1, k1 = encrypt(s, tenant_id=tenant.id, plaintext=b"v1", keyring=ring)

        result = runner.invoke(app, ["rotate-data-key", "--tenant", "og-cli"])
        assert result.exit_code == 0 and "version 2" in result.stdout
        with session_scope(factory) as s:
            ct2, k2 = encrypt(s, tenant_id=tenant.id, plaintext=b"v2", keyring=ring)
        assert k2 != k1

        # master key rotation: new key first, rewrap, then the old key goes
        generated = runner.invoke(app, ["generate", "test-2"])
        assert generated.exit_code == 0
        new_key = generated.stdout.strip()
        assert new_key.startswith("test-2:")
        monkeypatch.setenv("DUI_GATEWAY_MASTER_KEYS", f"{new_key},{master_keys_spec}")
        get_settings.cache_clear()
        result = runner.invoke(app, ["rewrap"])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "re-wrapped 2 data keys under master key 'test-2'"
        assert runner.invoke(app, ["rewrap"]).stdout.strip().startswith("re-wrapped 0 ")

        prefix = api_key.split("_")[1]
        assert runner.invoke(tenants_app, ["revoke-client", "00000000"]).exit_code == 1
        result = runner.invoke(tenants_app, ["revoke-client", prefix, "--actor", "alice"])
        assert result.exit_code == 0, result.output
        with session_scope(factory) as s:
            assert authenticate(s, api_key) is None
            trail = [(e.action, e.actor) for e in iter_events(s)]
        assert trail == [
            ("tenant_created", "user:admin"),
            ("essms_added", "user:admin"),
            ("client_created", "user:admin"),
            ("data_key_rotated", "user:admin"),
            ("keys_rewrapped", "user:admin"),
            ("keys_rewrapped", "user:admin"),
            ("client_revoked", "user:alice"),
        ]
        with session_scope(factory) as s:
            assert verify(s).ok

        only_new = KeyRing.parse(new_key)
        with session_scope(factory) as s:
            assert set(s.scalars(select(DataKey.master_key_id))) == {"test-2"}
            assert decrypt(s, data_key_id=k1, ciphertext=ct1, keyring=only_new) == b"v1"
            assert decrypt(s, data_key_id=k2, ciphertext=ct2, keyring=only_new) == b"v2"
    finally:
        engine.dispose()
