"""The ``dui-gateway`` command line. Sub-commands live next to the code they drive and are
imported only when they run: ``dui-gateway --help`` lists them from the table below without
importing anything heavy (database layer, settings, lxml/Saxon, FastAPI). A sub-command whose
package is not installed is left out, so a broken optional part does not hide the others.

The one-line help of each entry is the sub-command's own (a test keeps them equal)."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:  # typer's own (vendored) click types
    from typer import _click as click

__all__ = ["SUBCOMMANDS", "Subcommand", "app", "load", "main"]


@dataclass(frozen=True)
class Subcommand:
    module: str
    attr: str  # a typer.Typer sub-application or a command function
    name: str
    help: str


SUBCOMMANDS: list[Subcommand] = [
    Subcommand(
        "gateway.commands",
        "serve",
        "serve",
        "Run the API under uvicorn (with in-process workers when DUI_GATEWAY_EMBEDDED_WORKER is on).",
    ),
    Subcommand(
        "gateway.commands",
        "worker",
        "worker",
        "Run delivery workers only, until SIGTERM/SIGINT (they finish the attempt in progress).",
    ),
    Subcommand(
        "gateway.commands",
        "sources",
        "sources",
        "Run only the routing file's inbound sources (listeners, pollers) until SIGTERM/SIGINT.",
    ),
    Subcommand(
        "gateway.commands", "migrate", "migrate", "Bring the database (DUI_GATEWAY_DATABASE_URL) to the newest schema."
    ),
    Subcommand(
        "gateway.commands",
        "demo",
        "demo",
        "Run the whole gateway on SQLite with sandbox destinations and post demo documents.",
    ),
    Subcommand(
        "gateway.commands",
        "sandbox_app",
        "sandbox",
        "Local simulators of external systems (real servers on loopback).",
    ),
    Subcommand(
        "gateway.commands",
        "replay",
        "replay",
        "Send a submission again to its destinations, or retry one dead-lettered delivery; audited.",
    ),
    Subcommand(
        "gateway.backfill",
        "backfill",
        "backfill",
        "Load many records (NDJSON or a folder) through intake, resumable; projects the national backfill.",
    ),
    Subcommand(
        "gateway.security.cli",
        "tenants_app",
        "tenants",
        "Tenants (organismes gestionnaires), their ESSMS and API clients.",
    ),
    Subcommand(
        "gateway.indicators_cli",
        "app",
        "indicators",
        "Activity indicators: export CSV/JSON, report a period (SIDOBA), compute offline.",
    ),
    Subcommand(
        "gateway.routing_cli",
        "app",
        "routing",
        "Routing rules: show them, change them (versioned, audited, no restart), list versions.",
    ),
    Subcommand(
        "gateway.console.cli",
        "app",
        "users",
        "Console users (local or OpenID Connect) and their roles per tenant.",
    ),
    Subcommand("gateway.audit.cli", "app", "audit", "Audit trail: verify the hash chain, export events."),
    Subcommand(
        "gateway.security.cli",
        "app",
        "keys",
        "Encryption keys: re-wrap data keys after a master key change, rotate data keys.",
    ),
    Subcommand(
        "gateway.credentials_cli",
        "app",
        "credentials",
        "Credentials of the ESSMS (certificates, keys, mailbox passwords) by tenant/FINESS/purpose.",
    ),
    Subcommand(
        "gateway.persons_cli",
        "app",
        "persons",
        "Persons inbound messages name: the unmatched ones, and linking them to a DUI person.",
    ),
    Subcommand("ci_sis.cli", "app", "cisis", "CI-SIS CDA conformance (XSD + ANS schematrons)"),
    Subcommand(
        "ci_sis.kit_cli",
        "app",
        "kit",
        "The ANS CI-SIS test kit: install the pinned snapshot, show which kit is used.",
    ),
    Subcommand("profiles.cli", "app", "fhir", "FHIR conformance (base R4, FR Core, TDDUI, PDSm)"),
]
_BY_NAME = {entry.name: entry for entry in SUBCOMMANDS}


def _installed(entry: Subcommand) -> bool:
    # only the top-level package is looked up: finding a sub-module would import its package
    return importlib.util.find_spec(entry.module.split(".", 1)[0]) is not None


def load(entry: Subcommand) -> click.Command | None:
    """The click command of a sub-command, importing its module now (None when not installed)."""
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and entry.module.startswith(exc.name):
            return None
        raise
    obj = getattr(module, entry.attr, None)
    if obj is None:
        return None
    if isinstance(obj, typer.Typer):
        group = typer.main.get_group(obj)
        group.name = entry.name
        return group
    single = typer.Typer()
    single.command(name=entry.name)(obj)
    return typer.main.get_command(single)


class _LazyGroup(TyperGroup):
    """Lists the table's sub-commands without importing them; imports one when it is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(e.name for e in SUBCOMMANDS if _installed(e))]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _BY_NAME.get(cmd_name)
        if entry is None:
            return super().get_command(ctx, cmd_name)
        return load(entry)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(e.name, e.help) for e in SUBCOMMANDS if _installed(e)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


# rich_markup_mode=None: plain click help, so --help does not import rich either
app = typer.Typer(
    cls=_LazyGroup,
    help="dui-gateway: ESSMS interoperability gateway",
    no_args_is_help=True,
    rich_markup_mode=None,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """dui-gateway: ESSMS interoperability gateway"""


def main() -> None:
    app()
