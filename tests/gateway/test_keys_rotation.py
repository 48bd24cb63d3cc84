"""Master key rotation without downtime: data keys are re-wrapped while other threads keep
reading and writing encrypted data; afterwards the old master key can be dropped."""

from __future__ import annotations

import os
import threading

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.security.clients import create_tenant
from gateway.security.crypto import DecryptionError, KeyRing, decrypt, encrypt, rewrap_all, rotate_data_key
from gateway.storage.db import session_scope
from gateway.storage.models import DataKey

Record = tuple[str, bytes, bytes, bytes]  # data_key_id, ciphertext, aad, plaintext


def _seed(factory: sessionmaker[Session], keyring: KeyRing, tenants: int, versions: int) -> list[Record]:
    records: list[Record] = []
    with session_scope(factory) as s:
        for t in range(tenants):
            tenant = create_tenant(s, code=f"og-{t}", name=f"OG {t}")
            for v in range(versions):
                if v:
                    rotate_data_key(s, tenant_id=tenant.id, keyring=keyring)
                aad = f"sub-{t}-{v}".encode()
                plain = os.urandom(64)
                ct, key_id = encrypt(s, tenant_id=tenant.id, plaintext=plain, keyring=keyring, aad=aad)
                records.append((key_id, ct, aad, plain))
    return records


def _read_all(factory: sessionmaker[Session], spec: str, records: list[Record]) -> set[str]:
    """Decrypt every record with a fresh key ring (no cache: unwraps from the database)."""
    ring = KeyRing.parse(spec)
    with session_scope(factory) as s:
        for key_id, ct, aad, plain in records:
            assert decrypt(s, data_key_id=key_id, ciphertext=ct, keyring=ring, aad=aad) == plain
        return set(s.scalars(select(DataKey.master_key_id)))


def _spec(*keys: tuple[str, bytes]) -> str:
    import base64

    return ",".join(f"{k}:{base64.b64encode(v).decode()}" for k, v in keys)


def test_rewrap_online_then_drop_old_master_key(session_factory: sessionmaker[Session]) -> None:
    old = ("m-2025", os.urandom(32))
    new = ("m-2026", os.urandom(32))
    records = _seed(session_factory, KeyRing.parse(_spec(old)), tenants=3, versions=4)
    assert len(records) == 12

    during = _spec(new, old)  # step 1: every process gets the new key first, the old one kept
    stop = threading.Event()
    cond = threading.Condition()
    gen = {"requested": 0, "served": 0}
    errors: list[BaseException] = []
    seen_states: list[set[str]] = []
    written: list[Record] = []

    def reader_writer() -> None:
        ring = KeyRing.parse(during)
        try:
            while not stop.is_set():
                with cond:
                    started_for = gen["requested"]
                seen_states.append(_read_all(session_factory, during, records + written))
                with session_scope(session_factory) as s:
                    tenant_id = s.scalars(select(DataKey.tenant_id)).first()
                    assert tenant_id is not None
                    aad = f"new-{len(written)}".encode()
                    ct, key_id = encrypt(
                        s, tenant_id=tenant_id, plaintext=b"written during rewrap", keyring=ring, aad=aad
                    )
                written.append((key_id, ct, aad, b"written during rewrap"))
                with cond:
                    gen["served"] = started_for
                    cond.notify_all()
        except BaseException as exc:
            errors.append(exc)
            with cond:
                gen["served"] = 10**9
                cond.notify_all()

    # Hand rewrap_all a session factory that, before each of its transactions, waits for one full
    # read+write pass of the other thread that *started* after the previous transaction committed,
    # so reads provably interleave with the rotation (the other thread otherwise runs freely).
    def interleaved() -> Session:
        with cond:
            gen["requested"] += 1
            target = gen["requested"]
            assert cond.wait_for(lambda: gen["served"] >= target, timeout=30), "reader thread stalled"
        return session_factory()

    thread = threading.Thread(target=reader_writer)
    thread.start()
    try:
        count = rewrap_all(interleaved, keyring=KeyRing.parse(during), batch_size=2)
    finally:
        stop.set()
        thread.join(60)
    assert errors == []
    assert count == 12
    assert any(state == {old[0], new[0]} for state in seen_states), "no read observed a half-rotated database"
    assert len(written) >= 6

    # step 3: the old master key is removed; everything still reads (fresh key ring, no cache)
    assert _read_all(session_factory, _spec(new), records + written) == {new[0]}
    assert rewrap_all(session_factory, keyring=KeyRing.parse(_spec(new))) == 0
    # and the old key alone can no longer unwrap anything
    with session_scope(session_factory) as s, pytest.raises(DecryptionError):
        key_id, ct, aad, _ = records[0]
        decrypt(s, data_key_id=key_id, ciphertext=ct, keyring=KeyRing.parse(_spec(old)), aad=aad)


def test_wrapped_key_moved_to_another_row_does_not_unwrap(
    session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    records = _seed(session_factory, keyring, tenants=2, versions=1)
    with session_scope(session_factory) as s:
        a, b = (s.get(DataKey, r[0]) for r in records)
        assert a is not None and b is not None
        b.wrapped_key = a.wrapped_key  # an attacker swaps wrapped keys between tenants
    keyring.forget()
    with session_scope(session_factory) as s, pytest.raises(DecryptionError, match="does not unwrap"):
        key_id, ct, aad, _ = records[1]
        decrypt(s, data_key_id=key_id, ciphertext=ct, keyring=keyring, aad=aad)


def test_unknown_master_key_is_reported(session_factory: sessionmaker[Session]) -> None:
    records = _seed(session_factory, KeyRing([("gone", os.urandom(32))]), tenants=1, versions=1)
    with session_scope(session_factory) as s, pytest.raises(DecryptionError, match=r"'gone'.*not configured"):
        key_id, ct, aad, _ = records[0]
        decrypt(s, data_key_id=key_id, ciphertext=ct, keyring=KeyRing([("other", os.urandom(32))]), aad=aad)


def test_first_data_key_race_creates_one_key(db_url: str) -> None:
    """Two writers encrypt for a tenant with no data key at once: one key version 1, both decrypt."""
    from gateway.storage.db import make_engine, make_sessionmaker

    ring_spec = _spec(("m", os.urandom(32)))
    setup_engine = make_engine(db_url)
    factory = make_sessionmaker(setup_engine)
    with session_scope(factory) as s:
        tenant_id = create_tenant(s, code="og-race", name="Race").id
    barrier = threading.Barrier(2)
    results: list[tuple[str, bytes]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        engine = make_engine(db_url)
        try:
            f = make_sessionmaker(engine)
            barrier.wait()
            with session_scope(f) as s:
                ct, key_id = encrypt(s, tenant_id=tenant_id, plaintext=b"x", keyring=KeyRing.parse(ring_spec))
                results.append((key_id, ct))
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        with session_scope(factory) as s:
            keys = s.scalars(select(DataKey).where(DataKey.tenant_id == tenant_id)).all()
            assert [k.version for k in keys] == [1]
            for key_id, ct in results:
                assert key_id == keys[0].id
                assert decrypt(s, data_key_id=key_id, ciphertext=ct, keyring=KeyRing.parse(ring_spec)) == b"x"
    finally:
        setup_engine.dispose()
