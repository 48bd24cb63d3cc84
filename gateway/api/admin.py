"""``/v1/admin``: tenants, ESSMS, API clients, connector credentials and routing rules.

Scope ``admin``. The platform operator (administrator token) administers every tenant, creates
tenants and changes the routing rules; a tenant's administrator client administers its own
tenant (another tenant answers 404). Nothing here returns clinical content; plaintext keys and
secrets are returned once, at creation. Every change is audited (before/after where it applies).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway import routing_store
from gateway.api.deps import Caller, RuntimeDep, SessionDep, require_scope
from gateway.api.problems import problem_responses
from gateway.credentials import EXPIRY_WARNING_DAYS, CredentialsError, load_material
from gateway.errors import FieldError, ValidationFailed
from gateway.routing import RoutingTable
from gateway.services import admin
from gateway.services.queries import as_utc
from gateway.storage.models import ApiClient, ApiClientSecret, Essms, Tenant

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])

Administrator = Annotated[Caller, Depends(require_scope("admin"))]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantIn(_In):
    code: str = Field(max_length=64, examples=["og-exemple"])
    name: str = Field(max_length=255)


class TenantOut(BaseModel):
    id: str
    code: str
    name: str
    created_at: datetime

    @classmethod
    def of(cls, t: Tenant) -> TenantOut:
        return cls(id=t.id, code=t.code, name=t.name, created_at=as_utc(t.created_at))


class EssmsIn(_In):
    finess: str = Field(max_length=9, description="FINESS géographique (Luhn-checked)")
    name: str = Field(max_length=255)
    category: str = Field(default="", max_length=16, description="FINESS category, e.g. 500 (EHPAD)")


class TenantPatch(_In):
    name: str = Field(min_length=1, max_length=255)


class EssmsPatch(_In):
    name: str = Field(min_length=1, max_length=255)
    category: str = Field(default="", max_length=16)


class CredentialsIn(_In):
    certificate_pem: str = Field(max_length=64 * 1024, description="PEM certificate chain (leaf first)")
    private_key_pem: str = Field(max_length=64 * 1024, description="its PEM private key (stored encrypted)")
    private_key_password: str | None = Field(default=None, max_length=1024, description="when the key is encrypted")
    attributes: dict[str, str] = Field(default_factory=dict, max_length=50, description="not secret: mailbox...")


class CredentialsOut(BaseModel):
    id: str
    essms: str
    purpose: str
    updated_at: datetime


class EssmsOut(BaseModel):
    id: str
    finess: str
    name: str
    category: str

    @classmethod
    def of(cls, e: Essms) -> EssmsOut:
        return cls(id=e.id, finess=e.finess, name=e.name, category=e.category)


class ClientIn(_In):
    name: str = Field(max_length=255)
    scopes: str = Field(
        default="submissions:write submissions:read fhir:read",
        max_length=255,
        description="space-separated: submissions:write submissions:read fhir:read audit:read admin",
    )
    essms: list[str] | None = Field(default=None, max_length=50, description="restrict to these FINESS")
    oauth: bool = Field(default=True, description="also create an OAuth2 client secret")


class SecretOut(BaseModel):
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, s: ApiClientSecret) -> SecretOut:
        return cls(
            prefix=s.prefix,
            created_at=as_utc(s.created_at),
            expires_at=as_utc(s.expires_at) if s.expires_at else None,
            revoked_at=as_utc(s.revoked_at) if s.revoked_at else None,
        )


class ClientOut(BaseModel):
    id: str
    tenant_id: str
    name: str
    scopes: list[str]
    essms: list[str] | None
    active: bool
    key_prefix: str
    created_at: datetime
    secrets: list[SecretOut] = []

    @classmethod
    def of(cls, c: ApiClient, secrets: list[ApiClientSecret] | None = None) -> ClientOut:
        return cls(
            id=c.id,
            tenant_id=c.tenant_id,
            name=c.name,
            scopes=c.scopes.split(),
            essms=c.essms.split() if c.essms else None,
            active=c.active,
            key_prefix=c.key_prefix,
            created_at=as_utc(c.created_at),
            secrets=[SecretOut.of(s) for s in secrets or []],
        )


class ClientCreated(BaseModel):
    client: ClientOut
    api_key: str = Field(description="static API key (Bearer), shown once")
    client_secret: str | None = Field(description="OAuth2 client secret for POST /oauth/token, shown once")


class RotateIn(_In):
    grace_seconds: int = Field(default=86400, ge=0, le=30 * 86400, description="how long the previous one stays valid")


class SecretCreated(BaseModel):
    client_id: str
    client_secret: str = Field(description="shown once")
    secret: SecretOut


class RoutingIn(_In):
    rules: list[dict[str, Any]] = Field(max_length=1000, description="the rules, as in the routing file")
    comment: str = Field(default="", max_length=1000)
    expected_version: int | None = Field(default=None, ge=0, description="refuse (409) if another change came first")


class RoutingOut(BaseModel):
    version: int = Field(description="0: the routing file's rules, no version stored")
    rules: list[dict[str, Any]]
    sha256: str | None = None
    actor: str | None = None
    comment: str = ""
    created_at: datetime | None = None
    destinations: list[str]


def _routing_out(stored: routing_store.StoredRules | None, table: RoutingTable) -> RoutingOut:
    destinations = sorted(table.config.destinations)
    if stored is None:
        rules = [r.model_dump(mode="json", exclude_none=True) for r in table.config.rules]
        return RoutingOut(version=0, rules=rules, destinations=destinations)
    return RoutingOut(
        version=stored.version,
        rules=stored.rules,
        sha256=stored.sha256,
        actor=stored.actor,
        comment=stored.comment,
        created_at=stored.created_at,
        destinations=destinations,
    )


@router.get("/tenants", response_model=list[TenantOut], responses=problem_responses(401, 403))
def list_tenants(session: SessionDep, caller: Administrator) -> list[TenantOut]:
    """The tenants the caller administers (every one for the platform operator)."""
    return [TenantOut.of(t) for t in admin.list_tenants(session, principal=caller.principal)]


@router.post(
    "/tenants", status_code=201, response_model=TenantOut, responses=problem_responses(400, 401, 403, 409, 413, 422)
)
def create_tenant(body: TenantIn, session: SessionDep, caller: Administrator) -> TenantOut:
    """Create a tenant (organisme gestionnaire): platform operator only."""
    return TenantOut.of(admin.create_tenant(session, principal=caller.principal, code=body.code, name=body.name))


@router.patch("/tenants/{tenant_id}", response_model=TenantOut, responses=problem_responses(400, 401, 403, 404, 422))
def update_tenant(tenant_id: str, body: TenantPatch, session: SessionDep, caller: Administrator) -> TenantOut:
    """Rename a tenant (audited before/after; its code does not change)."""
    return TenantOut.of(admin.update_tenant(session, principal=caller.principal, tenant_id=tenant_id, name=body.name))


@router.get("/tenants/{tenant_id}/essms", response_model=list[EssmsOut], responses=problem_responses(401, 403, 404))
def list_essms(tenant_id: str, session: SessionDep, caller: Administrator) -> list[EssmsOut]:
    """The tenant's ESSMS (FINESS géographique)."""
    return [EssmsOut.of(e) for e in admin.list_essms(session, principal=caller.principal, tenant_id=tenant_id)]


@router.post(
    "/tenants/{tenant_id}/essms",
    status_code=201,
    response_model=EssmsOut,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422),
)
def add_essms(tenant_id: str, body: EssmsIn, session: SessionDep, caller: Administrator) -> EssmsOut:
    """Attach an ESSMS to the tenant (the FINESS is checked)."""
    essms = admin.add_essms(
        session,
        principal=caller.principal,
        tenant_id=tenant_id,
        finess=body.finess,
        name=body.name,
        category=body.category,
    )
    return EssmsOut.of(essms)


@router.patch(
    "/tenants/{tenant_id}/essms/{essms_id}",
    response_model=EssmsOut,
    responses=problem_responses(400, 401, 403, 404, 422),
)
def update_essms(
    tenant_id: str, essms_id: str, body: EssmsPatch, session: SessionDep, caller: Administrator
) -> EssmsOut:
    """Rename an ESSMS or change its category (audited before/after; its FINESS does not change)."""
    essms = admin.update_essms(
        session,
        principal=caller.principal,
        tenant_id=tenant_id,
        essms_id=essms_id,
        name=body.name,
        category=body.category,
    )
    return EssmsOut.of(essms)


@router.get("/tenants/{tenant_id}/clients", response_model=list[ClientOut], responses=problem_responses(401, 403, 404))
def list_clients(tenant_id: str, session: SessionDep, caller: Administrator) -> list[ClientOut]:
    """The tenant's API clients with their secrets' state (never a hash or a plaintext)."""
    rows = admin.list_clients(session, principal=caller.principal, tenant_id=tenant_id)
    return [ClientOut.of(c, admin.client_secrets(session, client_id=c.id)) for c in rows]


@router.post(
    "/tenants/{tenant_id}/clients",
    status_code=201,
    response_model=ClientCreated,
    responses=problem_responses(400, 401, 403, 404, 413, 422),
)
def create_client(
    tenant_id: str, body: ClientIn, session: SessionDep, caller: Administrator, response: Response
) -> ClientCreated:
    """Create an API client: its static key and (by default) an OAuth2 client secret, shown once."""
    client, key, secret = admin.create_client(
        session,
        principal=caller.principal,
        tenant_id=tenant_id,
        name=body.name,
        scopes=body.scopes,
        essms=body.essms,
        with_secret=body.oauth,
    )
    response.headers["Cache-Control"] = "no-store"
    return ClientCreated(
        client=ClientOut.of(client, admin.client_secrets(session, client_id=client.id)),
        api_key=key,
        client_secret=secret,
    )


@router.post(
    "/tenants/{tenant_id}/clients/{client_id}/secrets",
    status_code=201,
    response_model=SecretCreated,
    responses=problem_responses(400, 401, 403, 404, 413, 422),
)
def rotate_secret(
    tenant_id: str, client_id: str, session: SessionDep, caller: Administrator, response: Response,
    body: RotateIn | None = None,
) -> SecretCreated:  # fmt: skip
    """Rotate the client's OAuth2 secret: the previous one stays valid for ``grace_seconds``."""
    grace = (body or RotateIn()).grace_seconds
    row, secret = admin.rotate_secret(
        session, principal=caller.principal, tenant_id=tenant_id, client_id=client_id, grace_seconds=grace
    )
    response.headers["Cache-Control"] = "no-store"
    return SecretCreated(client_id=client_id, client_secret=secret, secret=SecretOut.of(row))


@router.post(
    "/tenants/{tenant_id}/clients/{client_id}/revoke",
    response_model=ClientOut,
    responses=problem_responses(401, 403, 404),
)
def revoke_client(tenant_id: str, client_id: str, session: SessionDep, caller: Administrator) -> ClientOut:
    """Revoke the client: its key, secrets and access tokens are refused from now on."""
    client = admin.revoke_client(session, principal=caller.principal, tenant_id=tenant_id, client_id=client_id)
    return ClientOut.of(client, admin.client_secrets(session, client_id=client.id))


@router.get("/credentials", responses=problem_responses(401, 403, 404, 422))
def list_credentials(
    session: SessionDep,
    runtime: RuntimeDep,
    caller: Administrator,
    tenant_id: Annotated[str | None, Query(max_length=36)] = None,
) -> dict[str, Any]:
    """Connector credentials stored for the ESSMS (never the material), with each certificate's
    expiry; ``alert`` is true when one is expired or expires within 30 days (also audited)."""
    entries = admin.credential_expiries(
        session, principal=caller.principal, keyring=runtime.keyring, tenant_id=tenant_id
    )
    return {"warning_days": EXPIRY_WARNING_DAYS, "items": entries}


@router.put(
    "/tenants/{tenant_id}/credentials/{essms}/{purpose}",
    response_model=CredentialsOut,
    responses=problem_responses(400, 401, 403, 404, 413, 422),
)
def put_credentials(
    tenant_id: str, essms: str, purpose: str, body: CredentialsIn, session: SessionDep, runtime: RuntimeDep,
    caller: Administrator,
) -> CredentialsOut:  # fmt: skip
    """Store or replace an ESSMS's certificate and key for one purpose (``essms``: a FINESS of the
    tenant or ``*``), encrypted under the tenant's key, audited before/after; never returned."""
    try:
        material = load_material(
            certificate=body.certificate_pem.encode(),
            private_key=body.private_key_pem.encode(),
            private_key_password=body.private_key_password.encode() if body.private_key_password else None,
            attributes=body.attributes,
        )
    except CredentialsError as exc:
        raise ValidationFailed(
            "the certificate or key is not usable", [FieldError("/certificate_pem", str(exc))]
        ) from None
    except UnicodeEncodeError:
        raise ValidationFailed("PEM text must be ASCII", [FieldError("/certificate_pem", "not ASCII")]) from None
    row = admin.put_credentials(
        session,
        principal=caller.principal,
        keyring=runtime.keyring,
        tenant_id=tenant_id,
        essms_finess=essms,
        purpose=purpose,
        material=material,
    )
    if runtime.credentials is not None:  # this process's cache; the others' expire within seconds
        runtime.credentials.forget()
    return CredentialsOut(id=row.id, essms=row.essms_finess, purpose=row.purpose, updated_at=as_utc(row.updated_at))


@router.get("/flows", responses=problem_responses(401, 403, 404, 422))
def flows(
    session: SessionDep, caller: Administrator, tenant_id: Annotated[str | None, Query(max_length=36)] = None
) -> dict[str, Any]:
    """Counts of submissions (by status, document type) and deliveries (by destination, status) per
    tenant: metadata only. Every tenant's for the platform operator, its own for a tenant admin."""
    return admin.flow_counts(session, principal=caller.principal, tenant_id=tenant_id)


@router.get("/routing", response_model=RoutingOut, responses=problem_responses(401, 403))
def get_routing(session: SessionDep, runtime: RuntimeDep, caller: Administrator) -> RoutingOut:
    """The routing rules in force (the newest stored version, else the routing file's)."""
    stored = admin.routing_in_force(session, principal=caller.principal)
    return _routing_out(stored, routing_store.current_table(runtime))


@router.get("/routing/versions", response_model=list[RoutingOut], responses=problem_responses(401, 403))
def routing_versions(session: SessionDep, runtime: RuntimeDep, caller: Administrator) -> list[RoutingOut]:
    """Every stored version of the rules, newest first (the audit trail has each change's before/after)."""
    versions = admin.routing_history(session, principal=caller.principal)
    table = routing_store.current_table(runtime)
    return [_routing_out(v, table) for v in versions]


@router.put("/routing", response_model=RoutingOut, responses=problem_responses(400, 401, 403, 409, 413, 422))
def put_routing(body: RoutingIn, session: SessionDep, runtime: RuntimeDep, caller: Administrator) -> RoutingOut:
    """Replace the routing rules: validated against the configured destinations, stored as a new
    version, audited with before/after, in force in every process within a few seconds."""
    stored = admin.change_routing(
        session,
        principal=caller.principal,
        runtime=runtime,
        rules=body.rules,
        comment=body.comment,
        expected_version=body.expected_version,
    )
    session.commit()
    routing_store.apply(runtime, stored)
    return _routing_out(stored, routing_store.current_table(runtime))
