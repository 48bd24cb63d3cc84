"""``dui-gateway persons``: inbound events about persons the gateway could not match, and linking them.

    dui-gateway persons unmatched [--tenant demo] [--status open|linked]
    dui-gateway persons link <unmatched id> <person_ref> [--actor NAME]

``unmatched`` prints JSON (the peer's identifiers included: for an authorised operator, who
decides who the person is); ``link`` indexes those identifiers for the DUI person reference
(audited), so the next message about that person matches. See docs/hl7v2.md.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gateway import persons
from gateway.security.cli import ActorOption, _factory
from gateway.security.clients import tenant_by_code
from gateway.security.crypto import KeyRing
from gateway.settings import get_settings
from gateway.storage.db import session_scope

__all__ = ["app"]

app = typer.Typer(help="Persons inbound messages name: the unmatched ones, and linking them to a DUI person.")


@app.command("unmatched")
def unmatched_command(
    tenant: Annotated[str | None, typer.Option("--tenant", help="tenant code")] = None,
    status: Annotated[str, typer.Option("--status", help="open or linked")] = "open",
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 100,
) -> None:
    """List inbound events whose person no known identifier matched (JSON)."""
    keyring = KeyRing.from_settings(get_settings())
    with _factory() as factory, session_scope(factory) as session:
        tenant_id = tenant_by_code(session, tenant).id if tenant is not None else None
        found = persons.list_unmatched(session, keyring, tenant_id=tenant_id, status=status, limit=limit)
        typer.echo(json.dumps([u.to_dict() for u in found], indent=2, ensure_ascii=False))


@app.command("link")
def link_command(
    unmatched_id: Annotated[str, typer.Argument(help="the id shown by `persons unmatched`")],
    person_ref: Annotated[str, typer.Argument(help="the DUI's person reference")],
    actor: ActorOption = "admin",
) -> None:
    """Say who an unmatched event was about: its identifiers are indexed for that person (audited)."""
    keyring = KeyRing.from_settings(get_settings())
    with _factory() as factory, session_scope(factory) as session:
        try:
            linked = persons.link(
                session, keyring, unmatched_id=unmatched_id, person_ref=person_ref, actor=f"user:{actor}"
            )
        except LookupError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from exc
    typer.echo(f"linked {linked} unmatched entr{'y' if linked == 1 else 'ies'} to {person_ref}")
