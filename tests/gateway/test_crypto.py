"""Envelope encryption: round trip, AAD binding, tamper detection, data key rotation."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.security.crypto import DecryptionError, KeyRing, decrypt, encrypt, rotate_data_key
from gateway.storage.db import session_scope
from gateway.storage.models import DataKey


def test_round_trip_and_first_key_created(session_factory: sessionmaker[Session], keyring: KeyRing, tenant) -> None:
    with session_scope(session_factory) as s:
        assert s.scalars(select(DataKey).where(DataKey.tenant_id == tenant.id)).all() == []
        ct, key_id = encrypt(s, tenant_id=tenant.id, plaintext=b"payload \xc3\xa9", keyring=keyring, aad=b"sub-1")
        ct2, key_id2 = encrypt(s, tenant_id=tenant.id, plaintext=b"payload \xc3\xa9", keyring=keyring, aad=b"sub-1")
    assert key_id == key_id2
    assert ct != ct2  # random nonces
    assert b"payload" not in ct
    keyring.forget()  # force unwrapping from the database
    with session_scope(session_factory) as s:
        assert decrypt(s, data_key_id=key_id, ciphertext=ct, keyring=keyring, aad=b"sub-1") == b"payload \xc3\xa9"
        row = s.get(DataKey, key_id)
        assert row is not None and row.master_key_id == "test-1" and row.version == 1
        assert len(row.wrapped_key) == 12 + 32 + 16


def test_wrong_aad_tampering_and_wrong_master_key_fail(
    session_factory: sessionmaker[Session], keyring: KeyRing, tenant
) -> None:
    with session_scope(session_factory) as s:
        ct, key_id = encrypt(s, tenant_id=tenant.id, plaintext=b"secret", keyring=keyring, aad=b"sub-1")
        with pytest.raises(DecryptionError):
            decrypt(s, data_key_id=key_id, ciphertext=ct, keyring=keyring, aad=b"sub-2")
        for i in (0, 5, len(ct) - 1):
            bad = bytearray(ct)
            bad[i] ^= 0x01
            with pytest.raises(DecryptionError):
                decrypt(s, data_key_id=key_id, ciphertext=bytes(bad), keyring=keyring, aad=b"sub-1")
        with pytest.raises(DecryptionError):
            decrypt(s, data_key_id=key_id, ciphertext=ct[:10], keyring=keyring, aad=b"sub-1")
    other = KeyRing([("test-1", os.urandom(32))])  # same id, other key material
    with session_scope(session_factory) as s, pytest.raises(DecryptionError):
        decrypt(s, data_key_id=key_id, ciphertext=ct, keyring=other, aad=b"sub-1")


def test_rotate_data_key_keeps_old_readable(session_factory: sessionmaker[Session], keyring: KeyRing, tenant) -> None:
    with session_scope(session_factory) as s:
        ct1, k1 = encrypt(s, tenant_id=tenant.id, plaintext=b"one", keyring=keyring)
    with session_scope(session_factory) as s:
        new = rotate_data_key(s, tenant_id=tenant.id, keyring=keyring)
        assert new.version == 2
    with session_scope(session_factory) as s:
        ct2, k2 = encrypt(s, tenant_id=tenant.id, plaintext=b"two", keyring=keyring)
    assert k2 == new.id != k1
    keyring.forget()
    with session_scope(session_factory) as s:
        assert decrypt(s, data_key_id=k1, ciphertext=ct1, keyring=keyring) == b"one"
        assert decrypt(s, data_key_id=k2, ciphertext=ct2, keyring=keyring) == b"two"
        # a ciphertext cannot be replayed under another data key id
        with pytest.raises(DecryptionError):
            decrypt(s, data_key_id=k2, ciphertext=ct1, keyring=keyring)
        active = s.scalars(select(DataKey.version).where(DataKey.tenant_id == tenant.id, DataKey.active)).all()
        assert active == [2]
