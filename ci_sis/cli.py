"""``dui-gateway cisis``: validate a CDA file against a CI-SIS volet, list the kit's volets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ._engine import ValidationRunError
from ._kit import KitNotFound, UnknownVolet
from .validator import load_validator

MAX_BYTES = 32 * 1024 * 1024  # a CDA with its attachments; the DMP refuses far smaller documents

app = typer.Typer(help="CI-SIS CDA conformance (XSD + ANS schematrons)", no_args_is_help=True)

KitOption = Annotated[
    Path | None, typer.Option("--kit", help="CI-SIS kit directory (default: $CISIS_KIT_DIR)", show_default=False)
]


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="CDA document to check", exists=True, dir_okay=False, readable=True)],
    volet: Annotated[str, typer.Option("--volet", help="e.g. DLU-EHPAD-DLU_2022.01, or CDA-N1")],
    kit: KitOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    optional: Annotated[
        str,
        typer.Option(
            "--optional",
            help="also run profils/structurationMinimale and profils/terminologies: off, warning or error",
        ),
    ] = "off",
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", min=1, help="refuse larger files (exit 2) instead of reading them")
    ] = MAX_BYTES,
) -> None:
    """Validate FILE; exit 0 when conformant, 1 when not, 2 on a usage problem or without a verdict."""
    with file.open("rb") as handle:  # never more than max_bytes in memory (a device file has no size)
        xml = handle.read(max_bytes + 1)
    if len(xml) > max_bytes:
        typer.echo(f"error: {file.name} is larger than {max_bytes} bytes (--max-bytes): not read", err=True)
        raise typer.Exit(2)
    try:
        if optional not in ("off", "warning", "error"):
            raise typer.BadParameter("--optional is off, warning or error")
        validator = load_validator(kit)
        report = validator.validate(xml, volet, optional=optional)  # type: ignore[arg-type]
    except (KitNotFound, UnknownVolet) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except ValidationRunError as exc:  # no verdict: neither conformant (0) nor not (1)
        typer.echo(f"error: the validator could not run, no verdict: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        for f in report.findings:
            where = f.location or (f"line {f.line}" if f.line else "")
            origin = f"{f.schema} {f.pattern}".strip()
            typer.echo(f"[{f.severity}] {f.stage} {origin} {where}\n    {f.message}")
        status = "CONFORMANT" if report.ok else "NOT CONFORMANT"
        typer.echo(
            f"{file.name}: {status} to {volet} ({len(report.errors)} error(s), {len(report.findings)} finding(s))"
        )
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def volets(kit: KitOption = None) -> None:
    """List the volets the kit can validate."""
    try:
        names = load_validator(kit).volets()
    except KitNotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for name in names:
        typer.echo(name)
