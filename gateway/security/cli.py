"""``dui-gateway keys`` (master key rotation, data keys) and ``dui-gateway tenants`` (provisioning)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.chain import append as audit
from gateway.errors import GatewayError
from gateway.security.clients import add_essms, create_api_client, create_tenant, revoke_api_client, tenant_by_code
from gateway.security.crypto import KeyRing, generate_master_key, rewrap_all, rotate_data_key
from gateway.security.oauth import create_client_secret
from gateway.settings import get_settings
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.models import ApiClient, ApiClientSecret

__all__ = ["app", "tenants_app"]

app = typer.Typer(help="Encryption keys: re-wrap data keys after a master key change, rotate data keys.")
tenants_app = typer.Typer(help="Tenants (organismes gestionnaires), their ESSMS and API clients.")


ActorOption = Annotated[str, typer.Option("--actor", help="who runs this (recorded in the audit trail)")]


@contextmanager
def _factory() -> Iterator[sessionmaker[Session]]:
    engine = make_engine(get_settings().database_url)
    try:
        yield make_sessionmaker(engine)
    except GatewayError as exc:
        typer.echo(f"error: {exc}", err=True)  # str(): the diagnostic (DecryptionError keeps key ids there)
        raise typer.Exit(code=1) from exc
    finally:
        engine.dispose()


@app.command("rewrap")
def rewrap_command(actor: ActorOption = "admin") -> None:
    """Re-wrap every data key under the first master key in DUI_GATEWAY_MASTER_KEYS (online)."""
    keyring = KeyRing.from_settings(get_settings())
    with _factory() as factory:
        count = rewrap_all(factory, keyring=keyring)
        with session_scope(factory) as session:
            audit(session, actor=f"user:{actor}", action="keys_rewrapped", entity_type="master_key",
                  entity_id=keyring.current_id, detail={"count": count})  # fmt: skip
    typer.echo(f"re-wrapped {count} data keys under master key {keyring.current_id!r}")


@app.command("rotate-data-key")
def rotate_data_key_command(
    tenant: Annotated[str, typer.Option("--tenant", help="tenant code")],
    actor: ActorOption = "admin",
) -> None:
    """Start a new data key version for a tenant's new writes (older versions stay readable)."""
    keyring = KeyRing.from_settings(get_settings())
    with _factory() as factory, session_scope(factory) as session:
        tenant_id = tenant_by_code(session, tenant).id
        row = rotate_data_key(session, tenant_id=tenant_id, keyring=keyring)
        version = row.version
        audit(session, actor=f"user:{actor}", action="data_key_rotated", entity_type="data_key", entity_id=row.id,
              tenant_id=tenant_id, detail={"version": version})  # fmt: skip
    typer.echo(f"tenant {tenant}: data key version {version} is now used for new writes")


@app.command("generate")
def generate_command(
    key_id: Annotated[str, typer.Argument(help="id of the new key, e.g. 2026-11")],
) -> None:
    """Print a new random 256-bit key as id:base64 (for DUI_GATEWAY_MASTER_KEYS or DUI_GATEWAY_AUDIT_KEYS)."""
    if not key_id or any(c in key_id for c in ":, ") or len(key_id) > 64:
        raise typer.BadParameter("key id: 1-64 characters, no ':' ',' or spaces")
    typer.echo(f"{key_id}:{generate_master_key()}")


@tenants_app.command("create")
def tenant_create(code: str, name: str, actor: ActorOption = "admin") -> None:
    """Create a tenant (organisme gestionnaire)."""
    with _factory() as factory, session_scope(factory) as session:
        tenant = create_tenant(session, code=code, name=name)
        tenant_id = tenant.id
        audit(session, actor=f"user:{actor}", action="tenant_created", entity_type="tenant", entity_id=tenant_id,
              tenant_id=tenant_id, detail={"code": code})  # fmt: skip
    typer.echo(f"tenant {code} created (id {tenant_id})")


@tenants_app.command("add-essms")
def tenant_add_essms(
    code: str,
    finess: str,
    name: str,
    category: Annotated[str, typer.Option(help="FINESS category code, e.g. 500 (EHPAD)")] = "",
    actor: ActorOption = "admin",
) -> None:
    """Attach an ESSMS (FINESS géographique) to a tenant."""
    with _factory() as factory, session_scope(factory) as session:
        tenant = tenant_by_code(session, code)
        essms = add_essms(session, tenant_id=tenant.id, finess=finess, name=name, category=category)
        audit(session, actor=f"user:{actor}", action="essms_added", entity_type="essms", entity_id=essms.id,
              tenant_id=tenant.id, detail={"finess": essms.finess})  # fmt: skip
    typer.echo(f"ESSMS {finess} attached to tenant {code}")


@tenants_app.command("rename")
def tenant_rename(code: str, name: str, actor: ActorOption = "admin") -> None:
    """Rename a tenant (its code does not change); audited before/after, as through /v1/admin."""
    from gateway.security.authz import Principal
    from gateway.services import admin

    with _factory() as factory, session_scope(factory) as session:
        tenant = tenant_by_code(session, code)
        admin.update_tenant(session, principal=Principal.platform_operator(subject=f"user:{actor}"),
                            tenant_id=tenant.id, name=name)  # fmt: skip
    typer.echo(f"tenant {code} renamed")


@tenants_app.command("update-essms")
def tenant_update_essms(
    code: str,
    finess: str,
    name: Annotated[str, typer.Option(help="the ESSMS's name")],
    category: Annotated[str | None, typer.Option(help="FINESS category code (unchanged when omitted)")] = None,
    actor: ActorOption = "admin",
) -> None:
    """Rename an ESSMS or change its category (its FINESS does not change); audited before/after."""
    from gateway.security.authz import Principal
    from gateway.services import admin

    with _factory() as factory, session_scope(factory) as session:
        tenant = tenant_by_code(session, code)
        principal = Principal.platform_operator(subject=f"user:{actor}")
        found = [e for e in admin.list_essms(session, principal=principal, tenant_id=tenant.id) if e.finess == finess]
        if not found:
            typer.echo(f"error: tenant {code} has no ESSMS {finess}", err=True)
            raise typer.Exit(code=1)
        essms = found[0]
        admin.update_essms(session, principal=principal, tenant_id=tenant.id, essms_id=essms.id, name=name,
                           category=essms.category if category is None else category)  # fmt: skip
    typer.echo(f"ESSMS {finess} updated")


@tenants_app.command("create-client")
def tenant_create_client(
    code: str,
    name: str,
    scopes: Annotated[
        str,
        typer.Option(help="space-separated: submissions:write submissions:read fhir:read audit:read admin"),
    ] = "submissions:write submissions:read fhir:read",
    essms: Annotated[list[str] | None, typer.Option("--essms", help="restrict to this FINESS (repeatable)")] = None,
    oauth: Annotated[bool, typer.Option("--oauth", help="also create an OAuth2 client secret")] = False,
    actor: ActorOption = "admin",
) -> None:
    """Create an API client and print its key (shown once, store it now); --oauth adds a client secret."""
    with _factory() as factory, session_scope(factory) as session:
        tenant = tenant_by_code(session, code)
        client, key = create_api_client(session, tenant_id=tenant.id, name=name, scopes=scopes, essms=essms)
        client_id = client.id
        secret = create_client_secret(session, client_id=client_id)[1] if oauth else None
        audit(session, actor=f"user:{actor}", action="client_created", entity_type="api_client", entity_id=client_id,
              tenant_id=tenant.id, detail={"scopes": client.scopes, "essms": client.essms,
                                           "key_prefix": client.key_prefix, "oauth": oauth})  # fmt: skip
    typer.echo(f"API client {name} (id {client_id}) for tenant {code}; key (shown once):", err=True)
    typer.echo(key)
    if secret is not None:
        typer.echo(f"OAuth2 client_id {client_id}; client_secret (shown once):", err=True)
        typer.echo(secret)


@tenants_app.command("rotate-secret")
def tenant_rotate_secret(
    client_id: Annotated[str, typer.Argument(help="the API client's id")],
    grace_hours: Annotated[float, typer.Option(help="how long the previous secret stays valid")] = 24.0,
    actor: ActorOption = "admin",
) -> None:
    """Give an API client a new OAuth2 client secret; the previous one stays valid --grace-hours."""
    with _factory() as factory, session_scope(factory) as session:
        row, secret = create_client_secret(session, client_id=client_id, grace=timedelta(hours=grace_hours))
        client = session.get(ApiClient, client_id)
        assert client is not None
        audit(session, actor=f"user:{actor}", action="client_secret_rotated", entity_type="api_client",
              entity_id=client_id, tenant_id=client.tenant_id,
              detail={"prefix": row.prefix, "grace_seconds": int(grace_hours * 3600)})  # fmt: skip
    typer.echo(
        f"new client_secret for {client_id} (shown once); the previous one stays valid {grace_hours}h:", err=True
    )
    typer.echo(secret)


@tenants_app.command("clients")
def tenant_clients(code: str) -> None:
    """List a tenant's API clients (scopes, ESSMS restriction, state, secrets' dates), never a secret."""
    with _factory() as factory, session_scope(factory) as session:
        tenant = tenant_by_code(session, code)
        rows = session.scalars(select(ApiClient).where(ApiClient.tenant_id == tenant.id).order_by(ApiClient.name))
        out = []
        for c in rows:
            secrets = session.scalars(select(ApiClientSecret).where(ApiClientSecret.client_id == c.id))
            out.append({
                "id": c.id, "name": c.name, "scopes": c.scopes, "essms": c.essms, "active": c.active,
                "key_prefix": c.key_prefix,
                "secrets": [{"prefix": s.prefix, "created_at": s.created_at.isoformat(),
                             "expires_at": s.expires_at.isoformat() if s.expires_at else None,
                             "revoked": s.revoked_at is not None} for s in secrets],
            })  # fmt: skip
    typer.echo(json.dumps(out, indent=2))


@tenants_app.command("revoke-client")
def tenant_revoke_client(
    key_prefix: Annotated[str, typer.Argument(help="the 8 hex digits after dgw_ in the key")],
    actor: ActorOption = "admin",
) -> None:
    """Revoke an API client: its key is refused from now on."""
    with _factory() as factory, session_scope(factory) as session:
        client = revoke_api_client(session, key_prefix=key_prefix)
        audit(session, actor=f"user:{actor}", action="client_revoked", entity_type="api_client", entity_id=client.id,
              tenant_id=client.tenant_id, detail={"key_prefix": key_prefix})  # fmt: skip
    typer.echo(f"API client {key_prefix} revoked")
