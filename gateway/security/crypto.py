"""Envelope encryption of personal data at rest (AES-256-GCM).

* Each tenant has data keys (``data_keys`` rows, one version per rotation). A data key is 32
  random bytes, stored only *wrapped*: AES-256-GCM-encrypted under a master key, with the master
  key id kept next to it (``master_key_id``) and the data key's own id and tenant as AAD, so a
  wrapped key copied to another row does not unwrap.
* Master keys come from ``Settings.master_keys`` ("id:base64key,id2:base64key"); the first one
  wraps new data keys, the others are kept only to unwrap keys not yet re-wrapped.
* Ciphertext layout: ``b"\\x01" | nonce (12 random bytes) | AES-GCM ciphertext+tag``. The AAD is
  the data key id plus the caller's AAD (e.g. the submission id), binding a ciphertext to its row.

Rotation (docs/security.md): put the new master key first, run ``dui-gateway keys rewrap``
(online, small transactions), then drop the old one. ``rotate_data_key`` starts a new data key
version for new writes; older versions stay readable.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.errors import GatewayError
from gateway.settings import Settings
from gateway.storage.models import DataKey

__all__ = [
    "DecryptionError",
    "KeyRing",
    "KeyUnavailable",
    "decrypt",
    "encrypt",
    "generate_master_key",
    "parse_key_spec",
    "rewrap_all",
    "rotate_data_key",
]

_FORMAT_V1 = b"\x01"
_NONCE_BYTES = 12
_KEY_BYTES = 32


class DecryptionError(GatewayError):
    """Ciphertext or wrapped key does not authenticate (wrong key, wrong AAD, or tampered).

    ``str(exc)`` is the operator's diagnostic (key ids, never data); the API answers a 500 problem
    with a fixed ``detail``, as this is the gateway's state, not the caller's fault."""

    status = 500
    title = "Stored data cannot be decrypted"
    type_suffix = "decryption"

    def __init__(self, message: str) -> None:
        super().__init__("The gateway cannot decrypt stored data for this request; an operator must check its keys")
        self.args = (message,)


class KeyUnavailable(DecryptionError):
    """The key needed is not available here (master key not configured, data key row missing or not
    unwrapping): the gateway's configuration, not the stored data, is at fault; try again later."""


def generate_master_key() -> str:
    """A fresh master key, base64url-encoded (for ``DUI_GATEWAY_MASTER_KEYS``)."""
    return base64.urlsafe_b64encode(os.urandom(_KEY_BYTES)).decode("ascii")


def parse_key_spec(spec: str) -> list[tuple[str, bytes]]:
    """Parse ``"id:base64key,id2:base64key"`` into (id, 32-byte key) pairs, in order."""
    pairs: list[tuple[str, bytes]] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key_id, sep, b64 = item.partition(":")
        if not sep:
            raise ValueError("keys must be written id:base64key")
        pairs.append((key_id.strip(), _decode_key(b64)))
    return pairs


def _decode_key(value: str) -> bytes:
    value = value.strip()
    padded = value + "=" * (-len(value) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a master key is not valid base64") from exc
    if len(raw) != _KEY_BYTES:
        raise ValueError(f"a master key must be {_KEY_BYTES} bytes (AES-256), got {len(raw)}")
    return raw


def _wrap_aad(data_key_id: str, tenant_id: str) -> bytes:
    return f"dui-gateway/data-key/{data_key_id}/{tenant_id}".encode()


def _data_aad(data_key_id: str, aad: bytes) -> bytes:
    return b"dui-gateway/data/" + data_key_id.encode() + b"/" + aad


class KeyRing:
    """Master keys (first = current) and a per-process cache of unwrapped data keys.

    Thread-safe. Unwrapped data keys live only in memory; the cache survives master key
    rotation, because re-wrapping does not change a data key itself.
    """

    def __init__(self, master_keys: list[tuple[str, bytes]]) -> None:
        if not master_keys:
            raise ValueError("at least one master key is required")
        ids = [key_id for key_id, _ in master_keys]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate master key id")
        for key_id, key in master_keys:
            if not key_id or ":" in key_id or "," in key_id or len(key_id) > 64:
                raise ValueError(f"invalid master key id {key_id!r}")
            if len(key) != _KEY_BYTES:
                raise ValueError(f"master key {key_id!r} must be {_KEY_BYTES} bytes")
        self._masters: dict[str, AESGCM] = {key_id: AESGCM(key) for key_id, key in master_keys}
        self.current_id: str = master_keys[0][0]
        self._cache: dict[str, AESGCM] = {}
        # tenant id -> (data key id for new writes, monotonic time it was read): one query per
        # tenant and ``current_ttl`` instead of one per encryption (issue 15)
        self._current: dict[str, tuple[str, float]] = {}
        self.current_ttl = _CURRENT_TTL_SECONDS
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        """Build from ``"id:base64key,id2:base64key"`` (the first wraps new data keys)."""
        return cls(parse_key_spec(spec))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        return cls.parse(settings.master_keys.get_secret_value())

    @property
    def master_key_ids(self) -> list[str]:
        return list(self._masters)

    def __repr__(self) -> str:  # never show key material
        return f"KeyRing(current={self.current_id!r}, masters={self.master_key_ids!r})"

    # -- wrapping --------------------------------------------------------------------------
    def wrap(self, data_key: bytes, *, data_key_id: str, tenant_id: str) -> tuple[str, bytes]:
        """Wrap a data key under the current master key: (master_key_id, wrapped bytes)."""
        nonce = os.urandom(_NONCE_BYTES)
        aead = self._masters[self.current_id]
        return self.current_id, nonce + aead.encrypt(nonce, data_key, _wrap_aad(data_key_id, tenant_id))

    def unwrap(self, row: DataKey) -> bytes:
        aead = self._masters.get(row.master_key_id)
        if aead is None:
            raise KeyUnavailable(
                f"data key {row.id} is wrapped by master key {row.master_key_id!r}, which is not configured"
            )
        wrapped = bytes(row.wrapped_key)
        try:
            return aead.decrypt(wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _wrap_aad(row.id, row.tenant_id))
        except InvalidTag as exc:
            raise KeyUnavailable(f"data key {row.id} does not unwrap (wrong master key or tampered)") from exc

    # -- data key cache -------------------------------------------------------------------
    def _cached(self, data_key_id: str) -> AESGCM | None:
        return self._cache.get(data_key_id)

    def _remember(self, data_key_id: str, key: bytes) -> AESGCM:
        aead = AESGCM(key)
        with self._lock:
            return self._cache.setdefault(data_key_id, aead)

    def forget(self) -> None:
        """Drop every cached data key (tests; or after revoking a key)."""
        with self._lock:
            self._cache.clear()
            self._current.clear()

    def _current_cached(self, tenant_id: str) -> str | None:
        entry = self._current.get(tenant_id)
        if entry is None or time.monotonic() - entry[1] > self.current_ttl:
            return None
        return entry[0]

    def _remember_current(self, tenant_id: str, data_key_id: str) -> None:
        with self._lock:
            self._current[tenant_id] = (data_key_id, time.monotonic())

    def _forget_current(self, tenant_id: str) -> None:
        with self._lock:
            self._current.pop(tenant_id, None)

    def data_key(self, session: Session, data_key_id: str) -> AESGCM:
        """The AEAD for a data key, unwrapping (and caching) it on first use."""
        cached = self._cached(data_key_id)
        if cached is not None:
            return cached
        row = session.get(DataKey, data_key_id)
        if row is None:
            raise KeyUnavailable(f"unknown data key {data_key_id}")
        return self._remember(data_key_id, self.unwrap(row))


def _now() -> datetime:
    return datetime.now(UTC)


# How long a process keeps using the data key it last read as a tenant's current one: a
# rotation done by another process reaches this one's new writes within this delay (the
# previous version stays readable, so nothing breaks meanwhile). The rotating process itself
# switches at once.
_CURRENT_TTL_SECONDS = 30.0
# Session.info key: data keys this session's (uncommitted) transaction created; never cached as
# a tenant's current key before they are committed, or a rollback would leave the cache
# pointing at a key that does not exist.
_NEW_KEYS_INFO = "dui_gateway.new_data_keys"


def _new_data_key(session: Session, *, tenant_id: str, version: int, keyring: KeyRing) -> DataKey:
    key = AESGCM.generate_key(bit_length=256)
    key_id = str(uuid.uuid4())
    master_id, wrapped = keyring.wrap(key, data_key_id=key_id, tenant_id=tenant_id)
    row = DataKey(
        id=key_id,
        tenant_id=tenant_id,
        version=version,
        master_key_id=master_id,
        wrapped_key=wrapped,
        active=True,
        created_at=_now(),
    )
    # A concurrent writer may create the same version first: the unique (tenant_id, version)
    # constraint makes one of us fail, inside a savepoint so the caller's transaction survives.
    with session.begin_nested():
        session.add(row)
        session.flush()
    keyring._remember(key_id, key)
    session.info.setdefault(_NEW_KEYS_INFO, set()).add(key_id)
    keyring._forget_current(tenant_id)
    return row


def _active_key(session: Session, tenant_id: str) -> DataKey | None:
    stmt = (
        select(DataKey)
        .where(DataKey.tenant_id == tenant_id, DataKey.active.is_(True))
        .order_by(DataKey.version.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def current_data_key(session: Session, *, tenant_id: str, keyring: KeyRing) -> DataKey:
    """The tenant's data key for new writes, created (version 1) if the tenant has none."""
    row = _active_key(session, tenant_id)
    if row is not None:
        return row
    try:
        return _new_data_key(session, tenant_id=tenant_id, version=1, keyring=keyring)
    except IntegrityError:
        row = _active_key(session, tenant_id)
        if row is None:
            raise
        return row


def _current_key_id(session: Session, *, tenant_id: str, keyring: KeyRing) -> str:
    """The id of the tenant's data key for new writes, from the key ring's cache when fresh."""
    cached = keyring._current_cached(tenant_id)
    if cached is not None:
        return cached
    row = current_data_key(session, tenant_id=tenant_id, keyring=keyring)
    if row.id not in session.info.get(_NEW_KEYS_INFO, ()):
        keyring._remember_current(tenant_id, row.id)
    return row.id


def encrypt(
    session: Session, *, tenant_id: str, plaintext: bytes, keyring: KeyRing, aad: bytes = b""
) -> tuple[bytes, str]:
    """Encrypt under the tenant's current data key: (ciphertext incl. nonce, data_key_id)."""
    key_id = _current_key_id(session, tenant_id=tenant_id, keyring=keyring)
    aead = keyring.data_key(session, key_id)
    nonce = os.urandom(_NONCE_BYTES)
    return _FORMAT_V1 + nonce + aead.encrypt(nonce, plaintext, _data_aad(key_id, aad)), key_id


def encrypt_many(
    session: Session,
    *,
    tenant_id: str,
    items: Sequence[tuple[bytes, bytes]],
    keyring: KeyRing,
    data_key_id: str | None = None,
) -> tuple[list[bytes], str]:
    """``encrypt`` of several (plaintext, aad) pairs under one lookup of the current data key
    (or under ``data_key_id``, a key of this tenant the caller looked up recently)."""
    key_id = data_key_id or _current_key_id(session, tenant_id=tenant_id, keyring=keyring)
    aead = keyring.data_key(session, key_id)
    out = []
    for plaintext, aad in items:
        nonce = os.urandom(_NONCE_BYTES)
        out.append(_FORMAT_V1 + nonce + aead.encrypt(nonce, plaintext, _data_aad(key_id, aad)))
    return out, key_id


def decrypt(session: Session, *, data_key_id: str, ciphertext: bytes, keyring: KeyRing, aad: bytes = b"") -> bytes:
    """Decrypt what ``encrypt`` produced; raises DecryptionError if anything does not authenticate."""
    blob = bytes(ciphertext)
    if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != _FORMAT_V1:
        raise DecryptionError("not a dui-gateway ciphertext (unknown format)")
    aead = keyring.data_key(session, data_key_id)
    try:
        return aead.decrypt(blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :], _data_aad(data_key_id, aad))
    except InvalidTag as exc:
        raise DecryptionError("ciphertext does not authenticate (wrong row/AAD, wrong key, or tampered)") from exc


def rotate_data_key(session: Session, *, tenant_id: str, keyring: KeyRing) -> DataKey:
    """Start a new data key version for the tenant's new writes; older versions stay readable."""
    latest = session.scalar(select(func.max(DataKey.version)).where(DataKey.tenant_id == tenant_id)) or 0
    row = _new_data_key(session, tenant_id=tenant_id, version=latest + 1, keyring=keyring)
    for old in session.scalars(
        select(DataKey).where(DataKey.tenant_id == tenant_id, DataKey.id != row.id, DataKey.active.is_(True))
    ):
        old.active = False
    session.flush()
    return row


def rewrap_all(session_factory: Callable[[], Session], *, keyring: KeyRing, batch_size: int = 50) -> int:
    """Re-wrap every data key not under the current master key, a few keys per transaction.

    Online: readers keep working throughout, since the old master key stays in the key ring
    until the operator removes it, and a data key's plaintext never changes. Returns the
    number of keys re-wrapped. Running it again after success does nothing (returns 0).
    """
    count = 0
    after = ""
    while True:
        with session_factory() as session, session.begin():
            stmt = (
                select(DataKey)
                .where(DataKey.master_key_id != keyring.current_id, DataKey.id > after)
                .order_by(DataKey.id)
                .limit(batch_size)
            )
            if session.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=False)
            rows = list(session.scalars(stmt))
            if not rows:
                return count
            for row in rows:
                plain = keyring.unwrap(row)
                row.master_key_id, row.wrapped_key = keyring.wrap(plain, data_key_id=row.id, tenant_id=row.tenant_id)
                count += 1
            after = rows[-1].id
