"""``dui-gateway users``: console users and their roles (audited).

    dui-gateway users create alice --name "Alice Martin" --password-env ALICE_PASSWORD
    dui-gateway users create bob --oidc-issuer https://idp.example.fr/realms/essms --oidc-subject 8991234567
    dui-gateway users grant alice --tenant og-demo --role operateur [--essms 750000010]
    dui-gateway users revoke alice --tenant og-demo --role operateur
    dui-gateway users list
    dui-gateway users unlock alice
    dui-gateway users disable alice / dui-gateway users enable alice
    dui-gateway users password alice --password-env ALICE_PASSWORD

Passwords are read from a named environment variable or typed at a prompt, never from the
command line (it would stay in the shell history and in ``ps``).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from gateway.console import accounts
from gateway.console.roles import ROLES
from gateway.security.cli import ActorOption, _factory
from gateway.storage.db import session_scope
from gateway.storage.models import Tenant, User

__all__ = ["app"]

app = typer.Typer(help="Console users (local or OpenID Connect) and their roles per tenant.")

PasswordEnv = Annotated[
    str | None, typer.Option("--password-env", help="environment variable holding the password (else a prompt)")
]


def _password(env: str | None, *, required: bool) -> str | None:
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise typer.BadParameter(f"environment variable {env} is not set")
        return value
    if not required:
        return None
    value = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return str(value)


@app.command("create")
def create_command(
    username: str,
    name: Annotated[str, typer.Option("--name", help="display name")] = "",
    password_env: PasswordEnv = None,
    oidc_issuer: Annotated[str | None, typer.Option(help="OpenID Connect issuer of this user")] = None,
    oidc_subject: Annotated[str | None, typer.Option(help="the user's subject (sub) at that issuer")] = None,
    platform_operator: Annotated[
        bool, typer.Option("--platform-operator", help="metadata and metrics of every tenant, never documents")
    ] = False,
    actor: ActorOption = "admin",
) -> None:
    """Create a user: a local password (from --password-env or a prompt) and/or an OIDC identity."""
    password = _password(password_env, required=oidc_subject is None)
    with _factory() as factory, session_scope(factory) as session:
        user = accounts.create_user(
            session,
            username=username,
            display_name=name,
            password=password,
            oidc_issuer=oidc_issuer.rstrip("/") if oidc_issuer else None,
            oidc_subject=oidc_subject,
            platform_operator=platform_operator,
            actor=f"user:{actor}",
        )
        typer.echo(f"created user {user.username} ({user.id})")


def _user(session: object, username: str) -> User:
    from sqlalchemy.orm import Session

    assert isinstance(session, Session)
    user = accounts.find_user(session, username)
    if user is None:
        typer.echo(f"error: no user {username!r}", err=True)
        raise typer.Exit(code=1)
    return user


@app.command("grant")
def grant_command(
    username: str,
    tenant: Annotated[str, typer.Option("--tenant", help="tenant code")],
    role: Annotated[str, typer.Option("--role", help=" | ".join(ROLES))],
    essms: Annotated[str | None, typer.Option("--essms", help="limit the role to this FINESS")] = None,
    actor: ActorOption = "admin",
) -> None:
    """Give a user a role in a tenant (optionally limited to one ESSMS)."""
    with _factory() as factory, session_scope(factory) as session:
        user = _user(session, username)
        accounts.grant_role(session, user=user, tenant=tenant, role=role, essms_finess=essms, actor=f"user:{actor}")
        typer.echo(f"{username}: {role} in {tenant}" + (f" (ESSMS {essms})" if essms else ""))


@app.command("revoke")
def revoke_command(
    username: str,
    tenant: Annotated[str, typer.Option("--tenant", help="tenant code")],
    role: Annotated[str, typer.Option("--role", help=" | ".join(ROLES))],
    actor: ActorOption = "admin",
) -> None:
    """Take a role away (the user's open sessions end)."""
    with _factory() as factory, session_scope(factory) as session:
        user = _user(session, username)
        count = accounts.revoke_role(session, user=user, tenant=tenant, role=role, actor=f"user:{actor}")
        typer.echo(f"{username}: {count} grant(s) removed")


@app.command("password")
def password_command(username: str, password_env: PasswordEnv = None, actor: ActorOption = "admin") -> None:
    """Set a user's local password (their open sessions end, the lockout is lifted)."""
    password = _password(password_env, required=True)
    assert password is not None
    with _factory() as factory, session_scope(factory) as session:
        accounts.set_password(session, user=_user(session, username), password=password, actor=f"user:{actor}")
        typer.echo(f"{username}: password set")


@app.command("unlock")
def unlock_command(username: str, actor: ActorOption = "admin") -> None:
    """Lift a lockout after repeated failed logins."""
    with _factory() as factory, session_scope(factory) as session:
        accounts.unlock(session, user=_user(session, username), actor=f"user:{actor}")
        typer.echo(f"{username}: unlocked")


@app.command("disable")
def disable_command(username: str, actor: ActorOption = "admin") -> None:
    """Disable an account (no login; its open sessions end)."""
    with _factory() as factory, session_scope(factory) as session:
        accounts.set_active(session, user=_user(session, username), active=False, actor=f"user:{actor}")
        typer.echo(f"{username}: disabled")


@app.command("enable")
def enable_command(username: str, actor: ActorOption = "admin") -> None:
    """Re-enable a disabled account."""
    with _factory() as factory, session_scope(factory) as session:
        accounts.set_active(session, user=_user(session, username), active=True, actor=f"user:{actor}")
        typer.echo(f"{username}: enabled")


@app.command("list")
def list_command() -> None:
    """Users, their sign-in methods and roles."""
    with _factory() as factory, session_scope(factory) as session:
        codes = {tid: code for tid, code in session.execute(select(Tenant.id, Tenant.code))}
        for user in session.scalars(select(User).options(selectinload(User.roles)).order_by(User.username)):
            methods = [m for m, on in (("password", user.password_hash), ("oidc", user.oidc_subject)) if on]
            roles = ", ".join(
                f"{g.role}@{codes.get(g.tenant_id, g.tenant_id)}" + (f"/{g.essms_finess}" if g.essms_finess else "")
                for g in user.roles
            )
            flags = " platform-operator" if user.platform_operator else ""
            typer.echo(f"{user.username}\t{'+'.join(methods) or '-'}\t{roles or '-'}{flags}")
