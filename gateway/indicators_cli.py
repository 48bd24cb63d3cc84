"""``dui-gateway indicators``: export an ESSMS's indicators (CSV/JSON), queue a period's dataset
for its destinations (SIDOBA…), or compute offline from an events file."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from gateway.security.crypto import KeyRing
    from reporting import Period

__all__ = ["app"]

app = typer.Typer(help="Activity indicators: export CSV/JSON, report a period (SIDOBA), compute offline.",
                  no_args_is_help=True)  # fmt: skip

TenantOption = Annotated[str, typer.Option("--tenant", help="tenant code (organisme gestionnaire)")]
FinessOption = Annotated[str, typer.Option("--finess", help="FINESS géographique of the ESSMS")]
PeriodOption = Annotated[list[str], typer.Option("--period", help="YYYY, YYYY-Qn or YYYY-MM (repeatable)")]
FormatOption = Annotated[Literal["csv", "json"], typer.Option("--format", help="csv or json (layout 1.0)")]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="file to write (default: stdout)")]
ActorOption = Annotated[str, typer.Option("--actor", help="who runs this (recorded in the audit trail)")]


def _periods(codes: list[str]) -> list[Period]:
    from reporting import Period

    try:
        return [Period.parse(c) for c in codes]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--period") from None


def _write(content: str | bytes, output: Path | None) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    if output is None:
        sys.stdout.buffer.write(data if data.endswith(b"\n") else data + b"\n")
    else:
        output.write_bytes(data)


@contextmanager
def _session() -> Iterator[tuple[Session, KeyRing]]:
    from gateway.errors import GatewayError
    from gateway.security.crypto import KeyRing
    from gateway.settings import get_settings
    from gateway.storage.db import make_engine, make_sessionmaker, session_scope

    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            yield session, KeyRing.from_settings(settings)
    except GatewayError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(code=1) from None
    finally:
        engine.dispose()


@app.command("export")
def export_command(
    tenant: TenantOption,
    finess: FinessOption,
    period: PeriodOption,
    format: FormatOption = "csv",
    output: OutputOption = None,
    actor: ActorOption = "admin",
) -> None:
    """Write the ESSMS's indicators for the periods from the database (audited read)."""
    from gateway.security.clients import tenant_by_code
    from gateway.services import stays
    from reporting.export import to_csv, to_json_bytes

    periods = _periods(period)
    with _session() as (session, keyring):
        tenant_id = tenant_by_code(session, tenant).id
        datasets = [
            stays.dataset(session, tenant_id=tenant_id, finess=finess, period=p, keyring=keyring, actor=f"user:{actor}")
            for p in periods
        ]
    _write(to_csv(datasets) if format == "csv" else to_json_bytes(datasets), output)


@app.command("report")
def report_command(
    tenant: TenantOption, finess: FinessOption, period: PeriodOption, actor: ActorOption = "admin"
) -> None:
    """Queue the periods' datasets for the destinations routed for indicator-dataset (SIDOBA…)."""
    from gateway.security.clients import tenant_by_code
    from gateway.services import stays

    periods = _periods(period)
    with _session() as (session, keyring):
        tenant_id = tenant_by_code(session, tenant).id
        for p in periods:
            out = stays.report(
                session, tenant_id=tenant_id, finess=finess, period=p, keyring=keyring, actor=f"user:{actor}"
            )
            state = "queued" if out.created else "already reported (same dataset)"
            typer.echo(f"{p.code}: {state}, submission {out.submission_id}")


@app.command("compute")
def compute_command(
    events: Annotated[Path, typer.Argument(help="JSON Lines file of stay events (reporting.events.to_json layout)")],
    finess: FinessOption,
    period: PeriodOption,
    capacity: Annotated[
        list[str] | None, typer.Option("--capacity", help="accommodation=places[/opening days], e.g. permanent=80")
    ] = None,
    format: FormatOption = "json",
    output: OutputOption = None,
) -> None:
    """Compute indicators offline from an events file (no database; nothing is stored)."""
    from reporting import Capacity, compute
    from reporting.events import from_json
    from reporting.export import to_csv, to_json_bytes
    from reporting.indicators import Rules, compute_timeline

    caps = []
    for spec in capacity or ():
        try:
            name, rest = spec.split("=", 1)
            places, _, opening = rest.partition("/")
            caps.append(Capacity(name, int(places), opening_days=int(opening) if opening else None))
        except ValueError:
            raise typer.BadParameter(
                f"{spec!r}: expected accommodation=places[/opening days]", param_hint="--capacity"
            ) from None
    loaded = []
    with events.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    loaded.append(from_json(json.loads(line)))
                except (ValueError, KeyError, TypeError) as exc:
                    typer.echo(f"error: {events}:{n}: {exc}", err=True)
                    raise typer.Exit(code=2) from None
    rules = Rules()
    tl = compute_timeline(loaded, rules)
    datasets = [
        compute(loaded, finess=finess, period=p, capacities=caps, rules=rules, timeline=tl) for p in _periods(period)
    ]
    _write(to_csv(datasets) if format == "csv" else to_json_bytes(datasets), output)
