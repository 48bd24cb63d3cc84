"""OAuth2 client credentials (RFC 6749 §4.4): client secrets and the signed access tokens.

**Secrets** look like ``dgs_<8 hex prefix>_<43-char secret>``: the prefix finds the row, the
whole secret is checked against its argon2id hash (only the hash is stored; the plaintext is shown
once). A client has at most two valid secrets: rotating creates a new one and gives the previous
one an expiry (``grace``), so a DUI can switch without downtime; older ones are revoked at once.

**Tokens** are JWTs signed with Ed25519 (``EdDSA``), ``kid`` in the header, claims ``iss``,
``aud``, ``sub`` (the client id), ``tid`` (its tenant), ``scope``, ``iat``, ``exp``, ``jti``.
Signing keys come from ``DUI_GATEWAY_TOKEN_SIGNING_KEYS`` (``kid:base64 32-byte seed`` pairs,
comma-separated): the first signs, every listed key verifies, so a key is rotated without
downtime by listing the new one second (published in the JWKS), then first, then dropping the old
one once the longest token lifetime has passed. Unset, one key is derived from the first master
key (HKDF), which is enough for a single deployment but cannot be rotated on its own.

Verification accepts ``EdDSA`` only (never ``none`` nor an HMAC algorithm keyed with the public
key), a known ``kid``, the configured issuer and audience, and an unexpired token.
"""

from __future__ import annotations

import base64
import functools
import re
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.profiles import RFC_9106_LOW_MEMORY
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.errors import NotFound
from gateway.security.crypto import parse_key_spec
from gateway.storage.models import ApiClient, ApiClientSecret

__all__ = [
    "SECRET_PREFIX",
    "InvalidToken",
    "TokenClaims",
    "TokenSigner",
    "authenticate_client",
    "create_client_secret",
    "looks_like_jwt",
]

SECRET_PREFIX = "dgs"  # noqa: S105 - a marker, not a secret
_SECRET_RE = re.compile(r"^dgs_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
_JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
ALGORITHM = "EdDSA"

# argon2id, RFC 9106 "low memory" parameters (t=3, m=64 MiB, p=4): the secrets are random, the
# hash protects them if the table leaks; the cost is paid once per token, not per API call.
_HASHER = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)
# Each verification takes 64 MiB for tens of milliseconds: bound how many run at once, so a flood
# of token requests queues instead of exhausting memory (the API's thread pool has 40 threads).
_VERIFY_SLOTS = threading.BoundedSemaphore(4)


@functools.cache
def _dummy_hash() -> str:
    """What an unknown client's secret is checked against; computed on first use, not at import
    (64 MiB and ≈ 0.3 s of CPU in every process that imports this, token endpoint or not)."""
    return _HASHER.hash("dgs_00000000_" + "x" * 43)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def looks_like_jwt(token: str) -> bool:
    return len(token) <= 8192 and _JWT_RE.match(token) is not None


def create_client_secret(
    session: Session, *, client_id: str, grace: timedelta = timedelta(hours=24)
) -> tuple[ApiClientSecret, str]:
    """A new secret for the client (plaintext returned once). The newest previous secret stays
    valid for ``grace`` (rotation without downtime); any older one is revoked now."""
    client = session.get(ApiClient, client_id)
    if client is None:
        raise NotFound(f"no API client {client_id}")
    now = _now()
    previous = list(
        session.scalars(
            select(ApiClientSecret)
            .where(ApiClientSecret.client_id == client_id, ApiClientSecret.revoked_at.is_(None))
            .order_by(ApiClientSecret.created_at.desc(), ApiClientSecret.id)
        )
    )
    for i, old in enumerate(previous):
        if i == 0:
            until = now + grace
            if old.expires_at is None or _aware(old.expires_at) > until:
                old.expires_at = until
        else:
            old.revoked_at = now
    while True:
        prefix = secrets.token_hex(4)
        if session.scalar(select(ApiClientSecret.id).where(ApiClientSecret.prefix == prefix)) is None:
            break
    plaintext = f"{SECRET_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiClientSecret(
        id=str(uuid.uuid4()),
        client_id=client_id,
        prefix=prefix,
        secret_hash=_HASHER.hash(plaintext),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row, plaintext


def authenticate_client(session: Session, *, client_id: str, client_secret: str) -> ApiClient | None:
    """The active client when ``client_secret`` is one of its valid secrets, else None.

    An argon2 verification runs in every case (unknown client, malformed secret), so the answer
    time does not tell which clients or prefixes exist."""
    match = _SECRET_RE.match(client_secret) if len(client_secret) < 128 else None
    row = None
    if match is not None:
        row = session.scalar(select(ApiClientSecret).where(ApiClientSecret.prefix == match.group(1)))
    ok = False
    with _VERIFY_SLOTS:
        try:
            ok = _HASHER.verify(row.secret_hash if row is not None else _dummy_hash(), client_secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            pass
    if not ok or row is None or row.client_id != client_id or row.revoked_at is not None:
        return None
    if row.expires_at is not None and _aware(row.expires_at) <= _now():
        return None
    client = session.get(ApiClient, client_id)
    if client is None or not client.active:
        return None
    return client


class InvalidToken(Exception):
    """A bearer JWT that must be refused (the message says why, for logs; never shown verbatim)."""


@dataclass(frozen=True)
class TokenClaims:
    client_id: str
    tenant_id: str
    scopes: frozenset[str]
    jti: str
    expires_at: datetime


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


class TokenSigner:
    """Issues and verifies access tokens with the configured Ed25519 keys (first one signs)."""

    def __init__(
        self, keys: list[tuple[str, Ed25519PrivateKey]], *, issuer: str, audience: str, ttl_seconds: int
    ) -> None:
        if not keys:
            raise ValueError("at least one token signing key is needed")
        self._keys = keys
        self._public: dict[str, Ed25519PublicKey] = {kid: key.public_key() for kid, key in keys}
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds

    @classmethod
    def from_settings(cls, settings: Any) -> TokenSigner:
        spec = settings.token_signing_keys
        if spec is not None:
            pairs = parse_key_spec(spec.get_secret_value())
            keys = [(kid, Ed25519PrivateKey.from_private_bytes(seed)) for kid, seed in pairs]
        else:
            master_id, master = parse_key_spec(settings.master_keys.get_secret_value())[0]
            seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"dui-gateway token signing v1").derive(
                master
            )
            keys = [(f"derived-{master_id}", Ed25519PrivateKey.from_private_bytes(seed))]
        return cls(
            keys,
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            ttl_seconds=settings.token_ttl_seconds,
        )

    @property
    def current_kid(self) -> str:
        return self._keys[0][0]

    def issue(self, *, client_id: str, tenant_id: str, scopes: frozenset[str], now: datetime | None = None) -> str:
        now = now or _now()
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client_id,
            "tid": tenant_id,
            "scope": " ".join(sorted(scopes)),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.ttl_seconds)).timestamp()),
            "jti": str(uuid.uuid4()),
        }
        kid, key = self._keys[0]
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "at+jwt"})

    def verify(self, token: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("unexpected algorithm")
        kid = header.get("kid")
        key = self._public.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("unknown key id")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=5,
                options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from exc
        sub, tid, scope, jti = claims.get("sub"), claims.get("tid"), claims.get("scope", ""), claims.get("jti")
        if not all(isinstance(v, str) for v in (sub, tid, scope, jti)):
            raise InvalidToken("malformed claims")
        return TokenClaims(
            client_id=str(sub),
            tenant_id=str(tid),
            scopes=frozenset(str(scope).split()),
            jti=str(jti),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )

    def jwks(self) -> dict[str, Any]:
        """The public keys (RFC 7517), every verifying key, so resource servers can check tokens."""
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": ALGORITHM,
                    "use": "sig",
                    "kid": kid,
                    "x": _b64url(pub.public_bytes(Encoding.Raw, PublicFormat.Raw)),
                }
                for kid, pub in self._public.items()
            ]
        }
