"""Settings refuse insecure defaults outside the dev profile, and malformed keys everywhere,
without echoing secrets in the error."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from gateway.security.crypto import generate_master_key
from gateway.settings import DEV_MASTER_KEY, Settings

GOOD_KEY = f"k1:{generate_master_key()}"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DUI_GATEWAY_"):
            monkeypatch.delenv(name)


def _errors(**kwargs: object) -> str:
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, **kwargs)  # type: ignore[call-arg]
    return str(info.value)


def test_dev_profile_accepts_defaults() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.profile == "dev" and DEV_MASTER_KEY in s.master_keys.get_secret_value()


@pytest.mark.parametrize("profile", ["test", "prod"])
def test_dev_master_key_refused_outside_dev(profile: str) -> None:
    assert "still holds the development key" in _errors(profile=profile, admin_token="t")
    # even when it is only kept as an old key
    assert "development key" in _errors(
        profile=profile, admin_token="t", master_keys=f"{GOOD_KEY},dev:{DEV_MASTER_KEY}"
    )


def test_tls_verify_off_refused_outside_dev() -> None:
    assert "TLS_VERIFY=false" in _errors(profile="test", master_keys=GOOD_KEY, tls_verify=False)
    assert Settings(_env_file=None, profile="dev", tls_verify=False).tls_verify is False  # type: ignore[call-arg]


def test_prod_requires_admin_token() -> None:
    assert "ADMIN_TOKEN is required" in _errors(profile="prod", master_keys=GOOD_KEY)
    ok = Settings(_env_file=None, profile="prod", master_keys=GOOD_KEY, admin_token="s3cret", audit_keys=GOOD_KEY)  # type: ignore[call-arg]
    assert ok.profile == "prod"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUI_GATEWAY_PROFILE", "prod")
    monkeypatch.setenv("DUI_GATEWAY_MASTER_KEYS", f"dev:{DEV_MASTER_KEY}")
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert "development key" in str(info.value) and "ADMIN_TOKEN" in str(info.value)


@pytest.mark.parametrize(
    "master_keys,message",
    [
        ("nocolon", "id:base64key"),
        ("k1:c2hvcnQ=", "32 bytes"),
        ("k1:!!!notbase64!!!", "not valid base64"),
        (f"{GOOD_KEY},{GOOD_KEY}", "duplicate master key id"),
        ("", "at least one master key"),
    ],
)
def test_malformed_master_keys_refused_without_echo(master_keys: str, message: str) -> None:
    text = _errors(master_keys=master_keys)
    assert message in text
    secret = master_keys.partition(":")[2]
    if secret:
        assert secret[:12] not in text


def test_audit_keys_checked() -> None:
    assert "audit" in _errors(audit_keys=",").lower()
    assert "32 bytes" in _errors(audit_keys="a1:c2hvcnQ=")
    s = Settings(_env_file=None, audit_keys=f"a1:{generate_master_key()}")  # type: ignore[call-arg]
    assert s.audit_keys is not None and "a1:" not in repr(s)


@pytest.mark.parametrize("profile", ["test", "prod"])
def test_audit_sealing_keys_are_required_outside_dev(profile: str) -> None:
    # a plain SHA-256 chain can be rewritten consistently by anyone who can write to the database
    assert "DUI_GATEWAY_AUDIT_KEYS is required" in _errors(profile=profile, master_keys=GOOD_KEY, admin_token="t")
    audit_keys = f"a1:{generate_master_key()}"
    ok = Settings(_env_file=None, profile=profile, master_keys=GOOD_KEY, admin_token="t", audit_keys=audit_keys)  # type: ignore[call-arg]
    assert ok.audit_keys is not None
    assert Settings(_env_file=None).audit_keys is None  # dev may run a plain chain
