"""``dui-gateway routing``: show, change and list the versions of the routing rules.

    dui-gateway routing show                      # the rules in force (newest stored version, else the file's)
    dui-gateway routing set rules.yaml --comment "DMP opens for EHPAD Les Lilas"
    dui-gateway routing history

``set`` takes a YAML or JSON file holding ``rules:`` (a whole routing file is accepted: only its
rules are used; destinations and sources stay in DUI_GATEWAY_ROUTING_FILE). The rules are
validated against the configured destinations, stored as a new version, audited with
before/after, and applied by every running process within DUI_GATEWAY_ROUTING_REFRESH_SECONDS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from gateway import routing_store
from gateway.errors import GatewayError, ValidationFailed
from gateway.runtime import Runtime
from gateway.settings import get_settings
from gateway.storage.db import session_scope

__all__ = ["app"]

app = typer.Typer(help="Routing rules: show them, change them (versioned, audited, no restart), list versions.")


def _runtime() -> Runtime:
    from gateway.logging import configure_logging

    settings = get_settings()
    configure_logging(settings)  # logs to stderr: stdout is the command's answer
    return Runtime.from_settings(settings)


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


@app.command("show")
def show_command() -> None:
    """Print the rules in force, with their version (0: the routing file's)."""
    runtime = _runtime()
    try:
        with session_scope(runtime.session_factory) as session:
            stored = routing_store.latest(session)
        table = routing_store.current_table(runtime)
        rules = stored.rules if stored else [r.model_dump(mode="json", exclude_none=True) for r in table.config.rules]
        _echo_json({"version": stored.version if stored else 0, "rules": rules})
    finally:
        runtime.close()


@app.command("history")
def history_command(limit: Annotated[int, typer.Option(help="how many versions")] = 20) -> None:
    """List the stored versions, newest first."""
    runtime = _runtime()
    try:
        with session_scope(runtime.session_factory) as session:
            versions = routing_store.history(session, limit=limit)
        _echo_json([{"version": v.version, "actor": v.actor, "comment": v.comment, "created_at": v.created_at,
                     "sha256": v.sha256} for v in versions])  # fmt: skip
    finally:
        runtime.close()


@app.command("set")
def set_command(
    path: Annotated[Path, typer.Argument(help="YAML or JSON file with rules:")],
    comment: Annotated[str, typer.Option(help="why (kept with the version and in the audit trail)")] = "",
    actor: Annotated[str, typer.Option("--actor", help="who runs this (recorded in the audit trail)")] = "admin",
) -> None:
    """Validate and store new rules as the next version (applied without restart)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        typer.echo(f"error: cannot read {path}: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    rules = data.get("rules") if isinstance(data, dict) else data
    if not isinstance(rules, list):
        typer.echo("error: the file must hold a list of rules (or a mapping with rules:)", err=True)
        raise typer.Exit(code=1)
    runtime = _runtime()
    try:
        with session_scope(runtime.session_factory) as session:
            stored = routing_store.save_rules(
                session, runtime=runtime, rules=rules, actor=f"user:{actor}", comment=comment
            )
    except ValidationFailed as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        for err in exc.errors:
            typer.echo(f"  {err.message}", err=True)
        raise typer.Exit(code=1) from exc
    except GatewayError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    finally:
        runtime.close()
    typer.echo(f"routing rules version {stored.version} stored; running processes apply it within "
               f"{runtime.settings.routing_refresh_seconds:g}s")  # fmt: skip
