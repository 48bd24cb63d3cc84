"""``dui-gateway audit``: verify the hash chain, export events as FHIR AuditEvent NDJSON."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from gateway.audit.chain import AuditSealer, iter_events, verify
from gateway.audit.fhir import to_fhir_audit_event
from gateway.settings import get_settings
from gateway.storage.db import make_engine, make_sessionmaker, snapshot_engine

__all__ = ["app"]

app = typer.Typer(help="Audit trail: verify the hash chain, export events.", no_args_is_help=True)


def _parse_ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 date/time: {value!r}") from exc
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


@app.command("verify")
def verify_command() -> None:
    """Check every event against its hash, the links between events and the chain head (exit 1 on problems)."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        factory = make_sessionmaker(snapshot_engine(engine))
        with factory() as session, session.begin():
            result = verify(session, sealer=AuditSealer.from_settings())
    finally:
        engine.dispose()
    for problem in result.problems:
        typer.echo(f"PROBLEM {problem}")
    status = "OK" if result.ok else "TAMPERED"
    typer.echo(f"{status}: {result.checked} events checked; head seq {result.head_seq} hash {result.head_hash}")
    if not result.ok:
        raise typer.Exit(code=1)


@app.command("export")
def export_command(
    since: Annotated[str | None, typer.Option(help="first recorded time included (ISO 8601, UTC if no offset)")] = None,
    until: Annotated[str | None, typer.Option(help="recorded time excluded from here on (ISO 8601)")] = None,
    format: Annotated[str, typer.Option("--format", help="output format: fhir (AuditEvent NDJSON)")] = "fhir",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write (default: stdout)")] = None,
) -> None:
    """Export audit events as FHIR R4 AuditEvent resources, one JSON object per line."""
    if format != "fhir":
        raise typer.BadParameter("only --format fhir is supported", param_hint="--format")
    start, end = _parse_ts(since), _parse_ts(until)
    settings = get_settings()
    engine = make_engine(settings.database_url)
    count = 0
    try:
        factory = make_sessionmaker(snapshot_engine(engine))
        out = output.open("w", encoding="utf-8") if output is not None else sys.stdout
        try:
            with factory() as session, session.begin():
                for event in iter_events(session, since=start, until=end):
                    out.write(json.dumps(to_fhir_audit_event(event), ensure_ascii=False, separators=(",", ":")))
                    out.write("\n")
                    count += 1
        finally:
            if output is not None:
                out.close()
    finally:
        engine.dispose()
    typer.echo(f"exported {count} events", err=True)
