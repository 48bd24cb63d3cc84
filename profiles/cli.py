"""``dui-gateway fhir validate FILE [--profile URL] [--json]``: validate a FHIR R4 JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from profiles._report import ValidationRunError
from profiles._validator import RENDITION_TAGS, check_rendition, validate
from profiles.definitions import PROFILES

app = typer.Typer(help="FHIR conformance (base R4, FR Core, TDDUI, PDSm)", no_args_is_help=True)


@app.command("validate")
def validate_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="FHIR JSON resource")],
    profile: Annotated[str | None, typer.Option("--profile", help="canonical URL of the profile to check")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="conformance tag, e.g. fhir:tddui")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the OperationOutcome JSON")] = False,
) -> None:
    """Validate FILE; exit code 1 when an error is found, 2 when the check could not run."""
    content = file.read_bytes()
    if tag is not None and tag not in RENDITION_TAGS:
        raise typer.BadParameter(f"unknown tag {tag!r}; known: {', '.join(RENDITION_TAGS)}")
    try:
        report = check_rendition(content, tag) if tag else validate(content, profile)
    except ValidationRunError as exc:  # no verdict: neither valid (0) nor invalid (1)
        typer.echo(f"error: the check could not run, no verdict: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(report.to_operation_outcome(), ensure_ascii=False, indent=2))
    else:
        for issue in report.issues:
            where = f" [{issue.profile.rsplit('/', 1)[-1]}]" if issue.profile else ""
            typer.echo(
                f"{issue.severity.upper():<11} {issue.code:<13} {issue.expression or '-'}  {issue.message}{where}"
            )
        typer.echo(f"{file.name}: {report.summary()}")
    raise typer.Exit(0 if report.ok else 1)


@app.command("profiles")
def profiles_command() -> None:
    """List the profiles whose constraints are declared."""
    for url, declared in sorted(PROFILES.items()):
        typer.echo(f"{declared.type:<22} {url}")
