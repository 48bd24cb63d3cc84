"""Administration use cases: tenants, ESSMS, API clients and their secrets, every change audited.

Who may do what is decided by :mod:`gateway.security.authz`: the platform operator administers
every tenant and creates tenants; a tenant's administrator (an API client with scope ``admin``)
administers its own tenant only. A tenant the principal may not administer does not exist for it
(``NotFound``), so tenant ids cannot be probed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway import audit
from gateway.errors import Forbidden, NotFound
from gateway.security import clients
from gateway.security.authz import Kind, Principal, can_administer, can_read_metadata
from gateway.security.oauth import create_client_secret
from gateway.storage.models import ApiClient, ApiClientSecret, Delivery, Essms, Submission, Tenant

__all__ = [
    "add_essms",
    "administered_tenant",
    "client_secrets",
    "create_client",
    "create_tenant",
    "flow_counts",
    "list_clients",
    "list_essms",
    "list_tenants",
    "revoke_client",
    "rotate_secret",
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
