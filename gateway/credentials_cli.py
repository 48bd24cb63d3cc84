"""``dui-gateway credentials``: store, list and delete an ESSMS's credentials (encrypted, audited).

    dui-gateway credentials set --tenant demo --essms 759900004 --purpose dmp \\
        --certificate essms-chain.pem --private-key essms-key.pem [--private-key-password-env VAR]
    dui-gateway credentials set --tenant demo --essms '*' --purpose mssante --pkcs12 essms.p12 \\
        --pkcs12-password-env P12_PASSWORD --attribute mailbox=secretariat@ehpad.mssante.fr
    dui-gateway credentials list [--tenant demo]
    dui-gateway credentials delete --tenant demo --essms 759900004 --purpose dmp

Secrets are read from files or named environment variables, never from the command line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from gateway.credentials import CredentialsError, delete_credentials, list_credentials, load_material, set_credentials
from gateway.security.cli import ActorOption, _factory
from gateway.security.clients import tenant_by_code
from gateway.security.crypto import KeyRing
from gateway.settings import get_settings
from gateway.storage.db import session_scope

__all__ = ["app"]

app = typer.Typer(help="Credentials of the ESSMS (certificates, keys, mailbox passwords) by tenant/FINESS/purpose.")

Tenant = Annotated[str, typer.Option("--tenant", help="tenant code")]
EssmsOpt = Annotated[str, typer.Option("--essms", help="FINESS, or '*' for every ESSMS of the tenant")]
Purpose = Annotated[str, typer.Option("--purpose", help="dmp, mssante, sdo, webhook...")]


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def _env(name: str | None) -> bytes | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if value is None:
        raise typer.BadParameter(f"environment variable {name} is not set")
    return value.encode()


@app.command("set")
def set_command(
    tenant: Tenant,
    essms: EssmsOpt,
    purpose: Purpose,
    certificate: Annotated[Path | None, typer.Option(help="PEM certificate chain")] = None,
    private_key: Annotated[Path | None, typer.Option(help="PEM private key")] = None,
    private_key_password_env: Annotated[str | None, typer.Option(help="env var holding the key password")] = None,
    pkcs12: Annotated[Path | None, typer.Option(help="PKCS#12 file (key + certificate chain)")] = None,
    pkcs12_password_env: Annotated[str | None, typer.Option(help="env var holding the PKCS#12 password")] = None,
    signing_certificate: Annotated[Path | None, typer.Option(help="a distinct signing certificate")] = None,
    signing_key: Annotated[Path | None, typer.Option(help="its PEM private key")] = None,
    username: Annotated[str | None, typer.Option(help="mailbox or OAuth client identifier")] = None,
    password_env: Annotated[str | None, typer.Option(help="env var holding the password")] = None,
    secret_env: Annotated[
        list[str] | None, typer.Option(help="NAME=ENVVAR: a named secret read from ENVVAR (repeatable)")
    ] = None,
    attribute: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, not secret (repeatable)")] = None,
    actor: ActorOption = "admin",
) -> None:
    """Store (or replace) an ESSMS's credentials for one purpose, encrypted under the tenant's key."""
    secrets: dict[str, tuple[str, ...]] = {}
    for item in secret_env or []:
        name, _, var = item.partition("=")
        value = _env(var)
        assert value is not None
        secrets.setdefault(name, ())
        secrets[name] = (*secrets[name], value.decode())
    attributes = dict(a.partition("=")[::2] for a in attribute or [])
    password = _env(password_env)
    try:
        material = load_material(
            certificate=_read(certificate),
            private_key=_read(private_key),
            private_key_password=_env(private_key_password_env),
            pkcs12_data=_read(pkcs12),
            pkcs12_password=_env(pkcs12_password_env),
            signing_certificate=_read(signing_certificate),
            signing_key=_read(signing_key),
            username=username,
            password=password.decode() if password is not None else None,
            secrets=secrets,
            attributes=attributes,
        )
    except CredentialsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    keyring = KeyRing.from_settings(get_settings())
    with _factory() as factory, session_scope(factory) as session:
        tenant_id = tenant_by_code(session, tenant).id
        row = set_credentials(
            session,
            keyring=keyring,
            tenant_id=tenant_id,
            essms_finess=essms,
            purpose=purpose,
            material=material,
            actor=f"user:{actor}",
        )
        typer.echo(f"stored {purpose} credentials for {tenant}/{essms} ({row.id})")


@app.command("list")
def list_command(tenant: Annotated[str | None, typer.Option("--tenant", help="tenant code")] = None) -> None:
    """What is stored (owner, purpose, date), never the material."""
    with _factory() as factory, session_scope(factory) as session:
        tenant_id = tenant_by_code(session, tenant).id if tenant is not None else None
        typer.echo(json.dumps(list_credentials(session, tenant_id=tenant_id), indent=2))


@app.command("delete")
def delete_command(tenant: Tenant, essms: EssmsOpt, purpose: Purpose, actor: ActorOption = "admin") -> None:
    """Delete an ESSMS's credentials for one purpose (audited)."""
    with _factory() as factory, session_scope(factory) as session:
        tenant_id = tenant_by_code(session, tenant).id
        if not delete_credentials(
            session, tenant_id=tenant_id, essms_finess=essms, purpose=purpose, actor=f"user:{actor}"
        ):
            typer.echo("nothing stored for that owner and purpose", err=True)
            raise typer.Exit(code=1)
        typer.echo("deleted")
