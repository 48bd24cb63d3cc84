"""Tenants (organismes gestionnaires), their ESSMS (FINESS géographique) and API clients.

API keys look like ``dgw_<prefix>_<secret>``: the 8-hex-digit prefix finds the client row, the
secret (256 random bits) is checked against its SHA-256 with a constant-time comparison. Only
the hash is stored; the plaintext key is shown once, at creation. A fast hash is enough here
because the secret is random and long (no dictionary to try), unlike a password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.errors import Conflict, NotFound, ValidationFailed
from gateway.security.authz import LEGACY_SCOPES, SCOPES
from gateway.storage.models import ApiClient, Essms, Tenant

__all__ = [
    "KEY_PREFIX",
    "add_essms",
    "authenticate",
    "check_essms_restriction",
    "check_scopes",
    "create_api_client",
    "create_tenant",
    "essms_of_tenant",
    "is_valid_finess",
    "revoke_api_client",
    "tenant_by_code",
]

KEY_PREFIX = "dgw"
_KEY_RE = re.compile(r"^dgw_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
_CODE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_FINESS_RE = re.compile(r"^(?:[0-9]{2}|2A|2B)[0-9]{7}$")
_KNOWN_SCOPES = frozenset(SCOPES) | frozenset(LEGACY_SCOPES)


def _now() -> datetime:
    return datetime.now(UTC)


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def is_valid_finess(finess: str) -> bool:
    """Nine characters (two-digit or 2A/2B department, then digits) whose last digit is the Luhn key.

    Corsican numbers (2A/2B) are checked for shape only: we have no authoritative statement of how
    their key is computed, and refusing a real ESSMS would be worse than accepting a typo there.
    """
    if not _FINESS_RE.match(finess):
        return False
    if finess[:2] in ("2A", "2B"):
        return True
    digits = [int(c) for c in finess]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def create_tenant(session: Session, *, code: str, name: str) -> Tenant:
    """Create a tenant (organisme gestionnaire). ``code`` is a short lowercase slug, unique."""
    if not _CODE_RE.match(code):
        raise ValidationFailed("tenant code must be lowercase letters, digits and dashes (max 64)")
    if not name.strip():
        raise ValidationFailed("tenant name must not be empty")
    if session.scalar(select(Tenant.id).where(Tenant.code == code)) is not None:
        raise Conflict(f"tenant {code!r} already exists")
    tenant = Tenant(id=str(uuid.uuid4()), code=code, name=name.strip(), created_at=_now())
    session.add(tenant)
    session.flush()
    return tenant


def tenant_by_code(session: Session, code: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.code == code))
    if tenant is None:
        raise NotFound(f"no tenant {code!r}")
    return tenant


def add_essms(session: Session, *, tenant_id: str, finess: str, name: str, category: str = "") -> Essms:
    """Attach an ESSMS (FINESS géographique, Luhn-checked) to a tenant."""
    finess = finess.strip().upper()
    if not is_valid_finess(finess):
        raise ValidationFailed(f"{finess!r} is not a valid FINESS number (9 characters, Luhn key)")
    if session.get(Tenant, tenant_id) is None:
        raise NotFound(f"no tenant {tenant_id}")
    if session.scalar(select(Essms.id).where(Essms.finess == finess)) is not None:
        raise Conflict(f"FINESS {finess} is already registered")
    essms = Essms(id=str(uuid.uuid4()), tenant_id=tenant_id, finess=finess, name=name.strip(), category=category)
    session.add(essms)
    session.flush()
    return essms


def essms_of_tenant(session: Session, tenant_id: str) -> set[str]:
    """The FINESS numbers of the tenant's ESSMS."""
    return set(session.scalars(select(Essms.finess).where(Essms.tenant_id == tenant_id)))


def check_scopes(scopes: str) -> list[str]:
    """The scope names of a space-separated string; 422 when empty or unknown."""
    scope_set = list(dict.fromkeys(scopes.split()))
    unknown = set(scope_set) - _KNOWN_SCOPES
    if unknown or not scope_set:
        raise ValidationFailed(f"unknown or empty scopes: {sorted(unknown)}; known: {sorted(SCOPES)}")
    return scope_set


def check_essms_restriction(session: Session, *, tenant_id: str, essms: list[str] | None) -> str | None:
    """The stored form of an ESSMS restriction: FINESS of this tenant only (422 otherwise)."""
    if essms is None:
        return None
    wanted = sorted({f.strip().upper() for f in essms if f.strip()})
    if not wanted:
        raise ValidationFailed("an ESSMS restriction names at least one FINESS (or is left out)")
    foreign = set(wanted) - essms_of_tenant(session, tenant_id)
    if foreign:
        raise ValidationFailed(f"not ESSMS of this tenant: {sorted(foreign)}")
    return " ".join(wanted)


def create_api_client(
    session: Session,
    *,
    tenant_id: str,
    name: str,
    scopes: str = "submit read",
    essms: list[str] | None = None,
) -> tuple[ApiClient, str]:
    """Create an API client; returns it with its plaintext key, which is not stored anywhere."""
    scope_set = check_scopes(scopes)
    if not name.strip():
        raise ValidationFailed("an API client needs a name")
    if session.get(Tenant, tenant_id) is None:
        raise NotFound(f"no tenant {tenant_id}")
    restriction = check_essms_restriction(session, tenant_id=tenant_id, essms=essms)
    while True:
        prefix = secrets.token_hex(4)
        if session.scalar(select(ApiClient.id).where(ApiClient.key_prefix == prefix)) is None:
            break
    secret = secrets.token_urlsafe(32)  # 43 characters, 256 bits
    client = ApiClient(
        id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        name=name.strip(),
        key_prefix=prefix,
        key_hash=_hash_secret(secret),
        scopes=" ".join(scope_set),
        active=True,
        created_at=_now(),
        essms=restriction,
    )
    session.add(client)
    session.flush()
    return client, f"{KEY_PREFIX}_{prefix}_{secret}"


def revoke_api_client(session: Session, *, key_prefix: str) -> ApiClient:
    """Deactivate the client whose key starts with ``dgw_<key_prefix>_``; its key stops working at once."""
    client = session.scalar(select(ApiClient).where(ApiClient.key_prefix == key_prefix))
    if client is None:
        raise NotFound(f"no API client with key prefix {key_prefix!r}")
    client.active = False
    session.flush()
    return client


_DUMMY_HASH = _hash_secret("x" * 43)


def authenticate(session: Session, api_key: str) -> ApiClient | None:
    """The active client owning ``api_key``, or None (malformed, unknown, revoked or wrong secret)."""
    match = _KEY_RE.match(api_key.strip()) if api_key else None
    if match is None:
        return None
    prefix, secret = match.groups()
    client = session.scalar(select(ApiClient).where(ApiClient.key_prefix == prefix))
    # Compare even when the prefix is unknown, so timing does not tell which prefixes exist.
    expected = client.key_hash if client is not None else _DUMMY_HASH
    ok = hmac.compare_digest(expected, _hash_secret(secret))
    if client is None or not ok or not client.active:
        return None
    return client
