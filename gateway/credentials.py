"""Credentials of the ESSMS, by tenant / FINESS / purpose, handed to connectors in the envelope.

DMP, MSSanté and the SI-SdO authenticate *as the ESSMS* (its organisation certificate, signing
key, VIHF attributes, OAuth client), not as the destination; so credentials are never in the
routing file. Two stores, looked up in this order:

1. the database (``credentials`` table): the material is encrypted under the tenant's data key,
   managed with ``dui-gateway credentials set|list|delete`` (each change audited);
2. a credentials file (``DUI_GATEWAY_CREDENTIALS_FILE``, YAML or JSON) whose secret values are
   references, ``file:/path`` or ``env:NAME``, never literal (a literal secret is refused)::

       credentials:
         - tenant: demo                 # tenant code
           essms: "759900004"           # a FINESS, or "*" for every ESSMS of the tenant
           purpose: dmp
           certificate: file:/etc/dui/essms-chain.pem
           private_key: file:/etc/dui/essms-key.pem
           private_key_password: env:ESSMS_KEY_PASSWORD   # when the PEM key is encrypted
           # or: pkcs12: file:/etc/dui/essms.p12  +  pkcs12_password: env:ESSMS_P12_PASSWORD
           attributes: {vihf_subject_id: "...", mailbox: "..."}

A FINESS entry wins over a ``*`` entry. See docs/credentials.md.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.base import Credentials
from gateway import audit
from gateway.security.crypto import KeyRing, decrypt, encrypt
from gateway.storage.models import CredentialSet, Tenant

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "CredentialMaterial",
    "CredentialsError",
    "CredentialsProvider",
    "audit_expiring",
    "certificate_expiries",
    "delete_credentials",
    "list_credentials",
    "load_material",
    "set_credentials",
]

_PURPOSE = r"^[a-z][a-z0-9_.:-]{0,31}$"


class CredentialsError(ValueError):
    """Credentials cannot be read or are malformed (message names the entry, never a secret)."""


def resolve_ref(ref: str, *, what: str) -> bytes:
    """``file:/path`` or ``env:NAME`` -> bytes; anything else is refused (no literal secrets)."""
    scheme, _, target = ref.partition(":")
    if scheme == "file" and target:
        try:
            return Path(target).read_bytes()
        except OSError as exc:
            raise CredentialsError(f"{what}: cannot read {target} ({exc.strerror})") from None
    if scheme == "env" and target:
        value = os.environ.get(target)
        if value is None:
            raise CredentialsError(f"{what}: environment variable {target} is not set")
        return value.encode()
    raise CredentialsError(f"{what}: must be a reference 'file:/path' or 'env:NAME', not a literal value")


@dataclass(frozen=True, repr=False)
class CredentialMaterial:
    """Decrypted credential material (what is stored encrypted, and what connectors get)."""

    certificate_pem: bytes | None = None
    private_key_pem: bytes | None = None
    signing_certificate_pem: bytes | None = None
    signing_key_pem: bytes | None = None
    username: str | None = None
    password: str | None = None
    secrets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"CredentialMaterial(secrets={sorted(self.secrets)}, attributes={sorted(self.attributes)})"

    def to_json(self) -> bytes:
        def text(b: bytes | None) -> str | None:
            return b.decode("ascii") if b is not None else None

        return json.dumps(
            {
                "certificate_pem": text(self.certificate_pem),
                "private_key_pem": text(self.private_key_pem),
                "signing_certificate_pem": text(self.signing_certificate_pem),
                "signing_key_pem": text(self.signing_key_pem),
                "username": self.username,
                "password": self.password,
                "secrets": {k: list(v) for k, v in self.secrets.items()},
                "attributes": dict(self.attributes),
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CredentialMaterial:
        doc = json.loads(data)

        def raw(name: str) -> bytes | None:
            value = doc.get(name)
            return value.encode("ascii") if isinstance(value, str) else None

        return cls(
            certificate_pem=raw("certificate_pem"),
            private_key_pem=raw("private_key_pem"),
            signing_certificate_pem=raw("signing_certificate_pem"),
            signing_key_pem=raw("signing_key_pem"),
            username=doc.get("username"),
            password=doc.get("password"),
            secrets={str(k): tuple(str(x) for x in v) for k, v in (doc.get("secrets") or {}).items()},
            attributes={str(k): str(v) for k, v in (doc.get("attributes") or {}).items()},
        )

    def for_connector(self, *, tenant: str, essms_finess: str, purpose: str) -> Credentials:
        return Credentials(
            tenant=tenant,
            essms_finess=essms_finess,
            purpose=purpose,
            certificate_pem=self.certificate_pem,
            private_key_pem=self.private_key_pem,
            signing_certificate_pem=self.signing_certificate_pem,
            signing_key_pem=self.signing_key_pem,
            username=self.username,
            password=self.password,
            secrets=dict(self.secrets),
            attributes=dict(self.attributes),
        )


def _unencrypted_key_pem(data: bytes, password: bytes | None, *, what: str) -> bytes:
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise CredentialsError(f"{what}: not a PEM private key, or wrong password ({type(exc).__name__})") from None
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_material(
    *,
    certificate: bytes | None = None,
    private_key: bytes | None = None,
    private_key_password: bytes | None = None,
    pkcs12_data: bytes | None = None,
    pkcs12_password: bytes | None = None,
    signing_certificate: bytes | None = None,
    signing_key: bytes | None = None,
    username: str | None = None,
    password: str | None = None,
    secrets: Mapping[str, tuple[str, ...]] | None = None,
    attributes: Mapping[str, str] | None = None,
    what: str = "credentials",
) -> CredentialMaterial:
    """Check and normalise material: PKCS#12 opened, keys decrypted to PEM, certificate parsed."""
    if pkcs12_data is not None:
        try:
            key, cert, chain = pkcs12.load_key_and_certificates(pkcs12_data, pkcs12_password)
        except (ValueError, TypeError) as exc:
            raise CredentialsError(f"{what}: not a PKCS#12 file, or wrong password ({type(exc).__name__})") from None
        if key is None or cert is None:
            raise CredentialsError(f"{what}: the PKCS#12 file holds no key and certificate")
        private_key = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        certificate = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *(chain or [])])
        private_key_password = None
    if private_key is not None:
        private_key = _unencrypted_key_pem(private_key, private_key_password, what=f"{what}.private_key")
    if signing_key is not None:
        signing_key = _unencrypted_key_pem(signing_key, None, what=f"{what}.signing_key")
    from cryptography import x509

    for name, pem in (("certificate", certificate), ("signing_certificate", signing_certificate)):
        if pem is not None:
            try:
                x509.load_pem_x509_certificates(pem)
            except ValueError:
                raise CredentialsError(f"{what}.{name}: not a PEM certificate") from None
    if (certificate is None) != (private_key is None):
        raise CredentialsError(f"{what}: a certificate needs its private key (and the other way round)")
    if certificate is not None and private_key is not None:
        leaf = x509.load_pem_x509_certificates(certificate)[0]
        key = serialization.load_pem_private_key(private_key, password=None)
        raw = serialization.PublicFormat.SubjectPublicKeyInfo
        if leaf.public_key().public_bytes(serialization.Encoding.DER, raw) != key.public_key().public_bytes(
            serialization.Encoding.DER, raw
        ):
            raise CredentialsError(f"{what}: the private key does not match the (first) certificate")
    return CredentialMaterial(
        certificate_pem=certificate,
        private_key_pem=private_key,
        signing_certificate_pem=signing_certificate,
        signing_key_pem=signing_key,
        username=username,
        password=password,
        secrets=dict(secrets or {}),
        attributes=dict(attributes or {}),
    )


class _FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(min_length=1)
    essms: str = Field(pattern=r"^(\*|[0-9]{9})$")
    purpose: str = Field(pattern=_PURPOSE)
    certificate: str | None = None
    private_key: str | None = None
    private_key_password: str | None = None
    pkcs12: str | None = None
    pkcs12_password: str | None = None
    signing_certificate: str | None = None
    signing_key: str | None = None
    username: str | None = None
    password: str | None = None
    secrets: dict[str, list[str]] = Field(default_factory=dict)
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("essms", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    credentials: list[_FileEntry] = Field(default_factory=list)


def _load_file(path: Path) -> dict[tuple[str, str, str], CredentialMaterial]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read the credentials file ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        parsed = _File.model_validate(data or {})
    except (ValueError, yaml.YAMLError, ValidationError) as exc:
        errors = exc.errors(include_input=False) if isinstance(exc, ValidationError) else []
        where = "; ".join("/" + "/".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in errors)
        raise CredentialsError(f"{path}: invalid credentials file {where or type(exc).__name__}") from None
    out: dict[tuple[str, str, str], CredentialMaterial] = {}
    for i, entry in enumerate(parsed.credentials):
        what = f"{path}#/credentials/{i}"

        def ref(value: str | None, name: str, *, entry_what: str = what) -> bytes | None:
            return resolve_ref(value, what=f"{entry_what}/{name}") if value is not None else None

        password = ref(entry.password, "password")
        out[(entry.tenant, entry.essms, entry.purpose)] = load_material(
            certificate=ref(entry.certificate, "certificate"),
            private_key=ref(entry.private_key, "private_key"),
            private_key_password=ref(entry.private_key_password, "private_key_password"),
            pkcs12_data=ref(entry.pkcs12, "pkcs12"),
            pkcs12_password=ref(entry.pkcs12_password, "pkcs12_password"),
            signing_certificate=ref(entry.signing_certificate, "signing_certificate"),
            signing_key=ref(entry.signing_key, "signing_key"),
            username=entry.username,
            password=password.decode() if password is not None else None,
            secrets={
                name: tuple(resolve_ref(r, what=f"{what}/secrets/{name}").decode().strip() for r in refs)
                for name, refs in entry.secrets.items()
            },
            attributes=entry.attributes,
            what=what,
        )
    return out


class CredentialsProvider:
    """Looks credentials up (database, then file); decrypted database entries are cached briefly."""

    def __init__(
        self,
        *,
        keyring: KeyRing,
        file_entries: Mapping[tuple[str, str, str], CredentialMaterial] | None = None,
        cache_seconds: float = 30.0,
    ) -> None:
        self._keyring = keyring
        self._file = dict(file_entries or {})
        self._cache_seconds = cache_seconds
        self._cache: dict[tuple[str, str, str], tuple[float, CredentialMaterial | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any, keyring: KeyRing) -> CredentialsProvider:
        path = getattr(settings, "credentials_file", None)
        return cls(keyring=keyring, file_entries=_load_file(Path(path)) if path is not None else None)

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    def get(self, session: Session, *, tenant_id: str, essms_finess: str, purpose: str) -> Credentials | None:
        """The ESSMS's credentials for ``purpose`` (a FINESS entry wins over ``*``), or None."""
        import time

        key = (tenant_id, essms_finess, purpose)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self._cache_seconds:
            material = cached[1]
        else:
            material = self._lookup(session, tenant_id=tenant_id, essms_finess=essms_finess, purpose=purpose)
            with self._lock:
                self._cache[key] = (now, material)
        if material is None:
            return None
        tenant = session.get(Tenant, tenant_id)
        return material.for_connector(
            tenant=tenant.code if tenant is not None else tenant_id, essms_finess=essms_finess, purpose=purpose
        )

    def _lookup(
        self, session: Session, *, tenant_id: str, essms_finess: str, purpose: str
    ) -> CredentialMaterial | None:
        rows = session.scalars(
            select(CredentialSet).where(
                CredentialSet.tenant_id == tenant_id,
                CredentialSet.purpose == purpose,
                CredentialSet.essms_finess.in_((essms_finess, "*")),
            )
        ).all()
        row = next((r for r in rows if r.essms_finess == essms_finess), None) or next(iter(rows), None)
        if row is not None:
            plain = decrypt(
                session, data_key_id=row.data_key_id, ciphertext=row.data_ct, keyring=self._keyring, aad=row.id.encode()
            )
            return CredentialMaterial.from_json(plain)
        if not self._file:
            return None
        tenant = session.get(Tenant, tenant_id)
        names = {tenant_id, tenant.code if tenant is not None else tenant_id}
        for finess in (essms_finess, "*"):
            for name in names:
                found = self._file.get((name, finess, purpose))
                if found is not None:
                    return found
        return None


def set_credentials(
    session: Session,
    *,
    keyring: KeyRing,
    tenant_id: str,
    essms_finess: str,
    purpose: str,
    material: CredentialMaterial,
    actor: str,
    now: datetime | None = None,
) -> CredentialSet:
    """Store (or replace) encrypted credentials; audited (which owner and purpose, never the material)."""
    import re

    if not re.match(_PURPOSE, purpose):
        raise CredentialsError(f"invalid purpose {purpose!r}")
    if essms_finess != "*" and not (len(essms_finess) == 9 and essms_finess.isdigit()):
        raise CredentialsError("essms must be a 9-digit FINESS or '*'")
    now = now or datetime.now(UTC)
    row = session.scalars(
        select(CredentialSet).where(
            CredentialSet.tenant_id == tenant_id,
            CredentialSet.essms_finess == essms_finess,
            CredentialSet.purpose == purpose,
        )
    ).first()
    before: dict[str, Any] | None = None
    if row is not None:
        try:
            previous = CredentialMaterial.from_json(
                decrypt(
                    session, data_key_id=row.data_key_id, ciphertext=row.data_ct, keyring=keyring, aad=row.id.encode()
                )
            )
            before = _summary(previous)
        except Exception as exc:  # an unreadable previous entry is replaced all the same
            before = {"error": type(exc).__name__}
    row_id = row.id if row is not None else str(uuid.uuid4())
    ciphertext, key_id = encrypt(
        session, tenant_id=tenant_id, plaintext=material.to_json(), keyring=keyring, aad=row_id.encode()
    )
    if row is None:
        row = CredentialSet(
            id=row_id,
            tenant_id=tenant_id,
            essms_finess=essms_finess,
            purpose=purpose,
            created_at=now,
            updated_at=now,
            data_ct=ciphertext,
            data_key_id=key_id,
        )
        session.add(row)
    row.data_ct, row.data_key_id, row.updated_at = ciphertext, key_id, now
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="credentials_set",
        entity_type="credentials",
        entity_id=row.id,
        tenant_id=tenant_id,
        detail={"essms": essms_finess, "purpose": purpose, "fields": _fields(material), "replaced": before is not None,
                "before": before, "after": _summary(material)},
        at=now,
    )  # fmt: skip
    return row


def _summary(material: CredentialMaterial) -> dict[str, Any]:
    """What the audit trail keeps of credentials: which fields, each certificate's expiry and
    fingerprint (SHA-256 of the DER), never a key or a secret."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    certificates: dict[str, Any] = {}
    for name, pem in _certificates(material):
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            certificates[name] = {"error": "not a PEM certificate"}
            continue
        certificates[name] = {
            "not_after": cert.not_valid_after_utc.isoformat(),
            "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        }
    return {"fields": _fields(material), "certificates": certificates}


def _fields(material: CredentialMaterial) -> list[str]:
    names = ["certificate_pem", "private_key_pem", "signing_certificate_pem", "signing_key_pem", "username", "password"]
    present = [n for n in names if getattr(material, n)]
    return (
        present
        + [f"secrets.{k}" for k in sorted(material.secrets)]
        + [f"attributes.{k}" for k in sorted(material.attributes)]
    )


def list_credentials(session: Session, *, tenant_id: str | None = None) -> list[dict[str, Any]]:
    """What is stored (owner, purpose, dates), never the material."""
    query = select(CredentialSet).order_by(CredentialSet.tenant_id, CredentialSet.essms_finess, CredentialSet.purpose)
    if tenant_id is not None:
        query = query.where(CredentialSet.tenant_id == tenant_id)
    return [
        {
            "id": r.id,
            "tenant_id": r.tenant_id,
            "essms": r.essms_finess,
            "purpose": r.purpose,
            "updated_at": r.updated_at.isoformat(),
        }
        for r in session.scalars(query).all()
    ]


def delete_credentials(session: Session, *, tenant_id: str, essms_finess: str, purpose: str, actor: str) -> bool:
    row = session.scalars(
        select(CredentialSet).where(
            CredentialSet.tenant_id == tenant_id,
            CredentialSet.essms_finess == essms_finess,
            CredentialSet.purpose == purpose,
        )
    ).first()
    if row is None:
        return False
    session.delete(row)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="credentials_deleted",
        entity_type="credentials",
        entity_id=row.id,
        tenant_id=tenant_id,
        detail={"essms": essms_finess, "purpose": purpose},
    )
    return True


EXPIRY_WARNING_DAYS = 30


def _certificates(material: CredentialMaterial) -> list[tuple[str, bytes]]:
    return [
        (name, pem)
        for name, pem in (
            ("certificate", material.certificate_pem),
            ("signing_certificate", material.signing_certificate_pem),
        )
        if pem
    ]


def certificate_expiries(
    session: Session,
    *,
    keyring: KeyRing,
    tenant_id: str | None = None,
    now: datetime | None = None,
    warn_days: int = EXPIRY_WARNING_DAYS,
) -> list[dict[str, Any]]:
    """Each stored credential with the expiry of the certificates it holds (the leaf of each PEM
    chain), and whether it is expired or expires within ``warn_days``. Never the material."""
    from cryptography import x509

    now = now or datetime.now(UTC)
    out: list[dict[str, Any]] = []
    query = select(CredentialSet).order_by(CredentialSet.tenant_id, CredentialSet.essms_finess, CredentialSet.purpose)
    if tenant_id is not None:
        query = query.where(CredentialSet.tenant_id == tenant_id)
    for row in session.scalars(query).all():
        certificates: list[dict[str, Any]] = []
        try:
            plain = decrypt(
                session, data_key_id=row.data_key_id, ciphertext=row.data_ct, keyring=keyring, aad=row.id.encode()
            )
            material = CredentialMaterial.from_json(plain)
        except Exception as exc:  # a key not loaded here, a corrupt row: show it, do not fail the listing
            out.append(_expiry_row(row, [], error=type(exc).__name__))
            continue
        for name, pem in _certificates(material):
            try:
                cert = x509.load_pem_x509_certificate(pem)
            except ValueError:
                certificates.append({"field": name, "error": "not a PEM certificate"})
                continue
            not_after = cert.not_valid_after_utc
            days_left = (not_after - now).total_seconds() / 86400
            certificates.append(
                {
                    "field": name,
                    "subject": cert.subject.rfc4514_string(),
                    "not_after": not_after.isoformat(),
                    "days_left": int(days_left // 1),
                    "expired": days_left <= 0,
                    "expiring_soon": 0 < days_left <= warn_days,
                }
            )
        out.append(_expiry_row(row, certificates))
    return out


def _expiry_row(row: CredentialSet, certificates: list[dict[str, Any]], *, error: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": row.id,
        "tenant_id": row.tenant_id,
        "essms": row.essms_finess,
        "purpose": row.purpose,
        "updated_at": row.updated_at.isoformat(),
        "certificates": certificates,
        "alert": any(c.get("expired") or c.get("expiring_soon") for c in certificates),
    }
    if error is not None:
        entry["error"] = error
    return entry


def audit_expiring(session: Session, entries: list[dict[str, Any]], *, actor: str = "system:credentials") -> int:
    """Append one ``credential_expiring`` audit event per certificate in alert, at most once a day
    per credential and expiry date (so polling /readyz does not flood the trail). Returns the count."""
    from datetime import timedelta

    from gateway.storage.models import AuditEvent

    since = datetime.now(UTC) - timedelta(days=1)
    count = 0
    for entry in entries:
        for cert in entry["certificates"]:
            if not (cert.get("expired") or cert.get("expiring_soon")):
                continue
            recent = session.scalars(
                select(AuditEvent).where(
                    AuditEvent.entity_type == "credentials",
                    AuditEvent.entity_id == entry["id"],
                    AuditEvent.action == "credential_expiring",
                    AuditEvent.recorded_at >= since,
                )
            ).all()
            if any((e.detail or {}).get("not_after") == cert["not_after"] for e in recent):
                continue
            audit.append(
                session,
                actor=actor,
                action="credential_expiring",
                entity_type="credentials",
                entity_id=entry["id"],
                tenant_id=entry["tenant_id"],
                outcome="failure" if cert["expired"] else "success",
                detail={k: entry[k] for k in ("essms", "purpose")}
                | {k: cert[k] for k in ("field", "not_after", "days_left", "expired")},
            )
            count += 1
    return count
