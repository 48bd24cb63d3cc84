"""The ``dui-gateway`` command line. Sub-commands live next to the code they drive and are
attached here lazily, so a broken optional part does not hide the others."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="dui-gateway: ESSMS interoperability gateway", no_args_is_help=True)

# (module, attribute, name): each attribute is a typer.Typer sub-application or a command function
_SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("gateway.commands", "serve", "serve"),
    ("gateway.commands", "worker", "worker"),
    ("gateway.commands", "sources", "sources"),
    ("gateway.commands", "migrate", "migrate"),
    ("gateway.commands", "demo", "demo"),
    ("gateway.commands", "sandbox_app", "sandbox"),  # receiver by default; `sandbox dmp`, `sandbox dmp-pki`
    ("gateway.commands", "replay", "replay"),
    ("gateway.security.cli", "tenants_app", "tenants"),
    ("gateway.audit.cli", "app", "audit"),
    ("gateway.security.cli", "app", "keys"),
    ("gateway.credentials_cli", "app", "credentials"),
    ("ci_sis.cli", "app", "cisis"),
    ("profiles.cli", "app", "fhir"),
]


def _attach() -> None:
    for module_name, attr, name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        obj = getattr(module, attr, None)
        if obj is None:
            continue
        if isinstance(obj, typer.Typer):
            app.add_typer(obj, name=name)
        else:
            app.command(name=name)(obj)


def main() -> None:
    _attach()
    app()
