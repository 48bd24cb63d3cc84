"""Administration use cases: tenants, ESSMS, API clients and their secrets, every change audited.

Who may do what is decided by :mod:`gateway.security.authz`: the platform operator administers
every tenant and creates tenants; a tenant's administrator (an API client with scope ``admin``)
administers its own tenant only. A tenant the principal may not administer does not exist for it
(``NotFound``), so tenant ids cannot be probed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway import audit, credentials, routing_store
from gateway.errors import FieldError, Forbidden, NotFound, ValidationFailed
from gateway.security import clients
from gateway.security.authz import Kind, Principal, can_administer, can_read_metadata
from gateway.security.oauth import create_client_secret
from gateway.storage.models import ApiClient, ApiClientSecret, CredentialSet, Delivery, Essms, Submission, Tenant

if TYPE_CHECKING:
    from gateway.runtime import Runtime
    from gateway.security.crypto import KeyRing

__all__ = [
    "add_essms",
    "administered_tenant",
    "change_routing",
    "client_secrets",
    "create_client",
    "create_tenant",
    "credential_expiries",
    "flow_counts",
    "list_clients",
    "list_essms",
    "list_tenants",
    "put_credentials",
    "revoke_client",
    "rotate_secret",
    "routing_history",
    "routing_in_force",
    "update_essms",
    "update_tenant",
]


def list_tenants(session: Session, *, principal: Principal) -> list[Tenant]:
    stmt = select(Tenant).order_by(Tenant.code)
    if not can_administer(principal, None):
        stmt = stmt.where(Tenant.id.in_(sorted(principal.tenants()) or [""]))
    return [t for t in session.scalars(stmt) if can_administer(principal, t.id)]


def administered_tenant(session: Session, *, principal: Principal, tenant_id: str) -> Tenant:
    """The tenant if the principal administers it; otherwise it does not exist (404)."""
    tenant = session.get(Tenant, tenant_id) if len(tenant_id) <= 36 else None
    if tenant is None or not can_administer(principal, tenant.id):
        raise NotFound(f"no tenant {tenant_id}")
    return tenant


def create_tenant(session: Session, *, principal: Principal, code: str, name: str) -> Tenant:
    if not can_administer(principal, None):
        raise Forbidden("creating tenants is reserved to the platform operator")
    tenant = clients.create_tenant(session, code=code, name=name)
    audit.append(session, actor=principal.subject, action="tenant_created", entity_type="tenant",
                 entity_id=tenant.id, tenant_id=tenant.id, detail={"code": tenant.code})  # fmt: skip
    return tenant


def update_tenant(session: Session, *, principal: Principal, tenant_id: str, name: str) -> Tenant:
    """Rename a tenant (its code is its stable identifier and does not change); audited before/after."""
    tenant = administered_tenant(session, principal=principal, tenant_id=tenant_id)
    if not name.strip():
        raise ValidationFailed("tenant name must not be empty", [FieldError("/name", "must not be empty", "required")])
    before, tenant.name = tenant.name, name.strip()
    session.flush()
    audit.append(session, actor=principal.subject, action="tenant_updated", entity_type="tenant",
                 entity_id=tenant.id, tenant_id=tenant.id,
                 detail={"before": {"tenant_name": before}, "after": {"tenant_name": tenant.name}})  # fmt: skip
    return tenant


def list_essms(session: Session, *, principal: Principal, tenant_id: str) -> list[Essms]:
    tenant = administered_tenant(session, principal=principal, tenant_id=tenant_id)
    return list(session.scalars(select(Essms).where(Essms.tenant_id == tenant.id).order_by(Essms.finess)))


def add_essms(
    session: Session, *, principal: Principal, tenant_id: str, finess: str, name: str, category: str = ""
) -> Essms:
    tenant = administered_tenant(session, principal=principal, tenant_id=tenant_id)
    essms = clients.add_essms(session, tenant_id=tenant.id, finess=finess, name=name, category=category)
    audit.append(session, actor=principal.subject, action="essms_added", entity_type="essms", entity_id=essms.id,
                 tenant_id=tenant.id, detail={"finess": essms.finess})  # fmt: skip
    return essms


def update_essms(
    session: Session, *, principal: Principal, tenant_id: str, essms_id: str, name: str, category: str
) -> Essms:
    """Rename an ESSMS or change its category (its FINESS identifies it and does not change); audited
    before/after."""
    tenant = administered_tenant(session, principal=principal, tenant_id=tenant_id)
    essms = session.get(Essms, essms_id) if len(essms_id) <= 36 else None
    if essms is None or essms.tenant_id != tenant.id:
        raise NotFound(f"no ESSMS {essms_id}")
    if not name.strip():
        raise ValidationFailed("ESSMS name must not be empty", [FieldError("/name", "must not be empty", "required")])
    if len(category) > 16:
        raise ValidationFailed("category too long", [FieldError("/category", "at most 16 characters", "too_long")])
    before = {"essms_name": essms.name, "category": essms.category}
    essms.name, essms.category = name.strip(), category.strip()
    session.flush()
    after = {"essms_name": essms.name, "category": essms.category}
    audit.append(session, actor=principal.subject, action="essms_updated", entity_type="essms", entity_id=essms.id,
                 tenant_id=tenant.id, detail={"finess": essms.finess, "before": before, "after": after})  # fmt: skip
    return essms


def list_clients(session: Session, *, principal: Principal, tenant_id: str) -> list[ApiClient]:
    tenant = administered_tenant(session, principal=principal, tenant_id=tenant_id)
    return list(session.scalars(select(ApiClient).where(ApiClient.tenant_id == tenant.id).order_by(ApiClient.name)))


def client_secrets(session: Session, *, client_id: str) -> list[ApiClientSecret]:
    """The client's secrets (hashes are never shown): prefix, dates, state."""
    return list(
        session.scalars(
            select(ApiClientSecret)
            .where(ApiClientSecret.client_id == client_id)
            .order_by(ApiClientSecret.created_at.desc())
        )
    )


def _client(session: Session, *, principal: Principal, tenant_id: str, client_id: str) -> ApiClient:
    tenant = administered_tenant(session, principal=principal, tenant_id=tenant_id)
    client = session.get(ApiClient, client_id) if len(client_id) <= 36 else None
    if client is None or client.tenant_id != tenant.id:
        raise NotFound(f"no API client {client_id}")
    return client


def create_client(
    session: Session,
    *,
    principal: Principal,
    tenant_id: str,
    name: str,
    scopes: str,
    essms: list[str] | None = None,
    with_secret: bool = True,
) -> tuple[ApiClient, str, str | None]:
    """A new API client: (row, static API key, OAuth client secret or None), plaintexts shown once."""
    tenant = administered_tenant(session, principal=principal, tenant_id=tenant_id)
    client, key = clients.create_api_client(session, tenant_id=tenant.id, name=name, scopes=scopes, essms=essms)
    secret = create_client_secret(session, client_id=client.id)[1] if with_secret else None
    audit.append(session, actor=principal.subject, action="client_created", entity_type="api_client",
                 entity_id=client.id, tenant_id=tenant.id,
                 detail={"scopes": client.scopes, "essms": client.essms, "key_prefix": client.key_prefix,
                         "oauth": with_secret})  # fmt: skip
    return client, key, secret


def rotate_secret(
    session: Session, *, principal: Principal, tenant_id: str, client_id: str, grace_seconds: int
) -> tuple[ApiClientSecret, str]:
    """A new client secret; the previous one stays valid ``grace_seconds`` (rotation without downtime)."""
    client = _client(session, principal=principal, tenant_id=tenant_id, client_id=client_id)
    if not client.active:
        raise NotFound(f"no API client {client_id}")
    row, secret = create_client_secret(session, client_id=client.id, grace=timedelta(seconds=grace_seconds))
    audit.append(session, actor=principal.subject, action="client_secret_rotated", entity_type="api_client",
                 entity_id=client.id, tenant_id=client.tenant_id,
                 detail={"prefix": row.prefix, "grace_seconds": grace_seconds})  # fmt: skip
    return row, secret


def revoke_client(session: Session, *, principal: Principal, tenant_id: str, client_id: str) -> ApiClient:
    """Deactivate the client: its key, secrets and tokens are refused from the next request on."""
    client = _client(session, principal=principal, tenant_id=tenant_id, client_id=client_id)
    before = client.active
    client.active = False
    session.flush()
    audit.append(session, actor=principal.subject, action="client_revoked", entity_type="api_client",
                 entity_id=client.id, tenant_id=client.tenant_id,
                 detail={"key_prefix": client.key_prefix, "before": {"active": before},
                         "after": {"active": False}})  # fmt: skip
    return client


def flow_counts(session: Session, *, principal: Principal, tenant_id: str | None = None) -> dict[str, Any]:
    """Metadata only (counts by tenant, status, document type, destination), never a person or a
    document: what the platform operator sees across tenants, a tenant's administrator for its own."""
    if tenant_id is not None:
        if not can_read_metadata(principal, tenant_id):
            raise NotFound(f"no tenant {tenant_id}")
        tenant_ids: list[str] | None = [tenant_id]
    elif principal.kind is Kind.PLATFORM_OPERATOR:
        tenant_ids = None
    else:
        tenant_ids = sorted(t for t in principal.tenants() if can_read_metadata(principal, t))
    subs = select(Submission.tenant_id, Submission.status, Submission.document_type, func.count()).group_by(
        Submission.tenant_id, Submission.status, Submission.document_type
    )
    dels = select(Delivery.tenant_id, Delivery.destination, Delivery.status, func.count()).group_by(
        Delivery.tenant_id, Delivery.destination, Delivery.status
    )
    if tenant_ids is not None:
        subs = subs.where(Submission.tenant_id.in_(tenant_ids or [""]))
        dels = dels.where(Delivery.tenant_id.in_(tenant_ids or [""]))
    return {
        "submissions": [
            {"tenant_id": t, "status": s, "document_type": d, "count": n} for t, s, d, n in session.execute(subs)
        ],
        "deliveries": [
            {"tenant_id": t, "destination": d, "status": s, "count": n} for t, d, s, n in session.execute(dels)
        ],
    }


def credential_expiries(
    session: Session, *, principal: Principal, keyring: KeyRing, tenant_id: str | None = None
) -> list[dict[str, Any]]:
    """The connector credentials the principal administers (every tenant's for the platform operator
    when ``tenant_id`` is None), with each certificate's expiry; alerts are audited (never the material)."""
    if tenant_id is not None:
        tenant_id = administered_tenant(session, principal=principal, tenant_id=tenant_id).id
    elif not can_administer(principal, None):
        tenant_id = principal.tenant_id
        if tenant_id is None:
            raise Forbidden("name the tenant")
        tenant_id = administered_tenant(session, principal=principal, tenant_id=tenant_id).id
    entries = credentials.certificate_expiries(session, keyring=keyring, tenant_id=tenant_id)
    credentials.audit_expiring(session, entries)
    return entries


def put_credentials(
    session: Session,
    *,
    principal: Principal,
    keyring: KeyRing,
    tenant_id: str,
    essms_finess: str,
    purpose: str,
    material: credentials.CredentialMaterial,
) -> CredentialSet:
    """Store or replace an ESSMS's credentials for one purpose, encrypted under the tenant's data key
    (:func:`gateway.credentials.set_credentials`, audited with the certificates before/after)."""
    tenant = administered_tenant(session, principal=principal, tenant_id=tenant_id)
    if essms_finess != "*":
        essms = session.scalars(select(Essms).where(Essms.finess == essms_finess)).first()
        if essms is None or essms.tenant_id != tenant.id:
            raise ValidationFailed(
                f"the tenant has no ESSMS {essms_finess}",
                [FieldError("/essms", "not an ESSMS of the tenant", "unknown")],
            )
    try:
        return credentials.set_credentials(
            session,
            keyring=keyring,
            tenant_id=tenant.id,
            essms_finess=essms_finess,
            purpose=purpose,
            material=material,
            actor=principal.subject,
        )
    except (credentials.CredentialsError, UnicodeError) as exc:
        field = "/purpose" if "purpose" in str(exc) else "/essms" if "essms" in str(exc) else "/certificate_pem"
        raise ValidationFailed("the credentials were refused", [FieldError(field, str(exc))]) from None


def _platform_only(principal: Principal) -> None:
    if not can_administer(principal, None):
        raise Forbidden("the routing rules are administered by the platform operator")


def routing_in_force(session: Session, *, principal: Principal) -> routing_store.StoredRules | None:
    """The newest stored version of the rules (None: the routing file's rules are in force)."""
    _platform_only(principal)
    return routing_store.latest(session)


def routing_history(session: Session, *, principal: Principal) -> list[routing_store.StoredRules]:
    """Every stored version, newest first."""
    _platform_only(principal)
    return routing_store.history(session)


def change_routing(
    session: Session,
    *,
    principal: Principal,
    runtime: Runtime,
    rules: list[dict[str, Any]],
    comment: str = "",
    expected_version: int | None = None,
) -> routing_store.StoredRules:
    """Validate and store a new version of the rules, audited before/after; the caller commits, then
    calls :func:`gateway.routing_store.apply` (every other process picks it up on its own)."""
    _platform_only(principal)
    return routing_store.save_rules(
        session, runtime=runtime, rules=rules, actor=principal.subject, comment=comment,
        expected_version=expected_version,
    )  # fmt: skip
