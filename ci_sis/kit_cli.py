"""``dui-gateway kit``: install the pinned ANS CI-SIS test kit, show which kit is in use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ._kit import ENV_VAR, Kit, KitNotFound
from .install import DownloadFailed, InstallError, installed_pin, load_pin

__all__ = ["DEFAULT_DEST", "EXIT_OFFLINE", "EXIT_REFUSED", "app"]

DEFAULT_DEST = Path("var") / "cisis-kit"
EXIT_REFUSED = 1  # the archive is not the pinned one, or unsafe: nothing installed
EXIT_OFFLINE = 3  # the archive could not be fetched: nothing installed

app = typer.Typer(help="The ANS CI-SIS test kit: install the pinned snapshot, show which kit is used.")


@app.command()
def install(
    dest: Annotated[Path, typer.Option("--dest", help="where to install the kit")] = DEFAULT_DEST,
    url: Annotated[
        str | None,
        typer.Option("--url", help="fetch the pinned archive from this mirror (https://, http://, file://)"),
    ] = None,
    archive: Annotated[
        Path | None,
        typer.Option("--archive", help="install from this local archive file (.tar.gz or .zip)", dir_okay=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="install again even when already installed")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bar")] = False,
) -> None:
    """Download the pinned ANS TestContenuCDA snapshot, verify its SHA-256 and install it atomically."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    pin = load_pin()
    source = str(archive) if archive is not None else (url or pin.url)
    current = installed_pin(dest)
    if not force and current is not None and current.get("content_sha256") == pin.content_sha256:
        typer.echo(f"already installed: {dest} (commit {pin.commit[:12]}, {current.get('files')} files)")
        return
    typer.echo(f"CI-SIS kit {pin.repository} @ {pin.commit[:12]} -> {dest}")
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, disable=quiet, transient=False) as bar:
        task = bar.add_task("download", total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        try:
            from .install import install as run_install

            result = run_install(dest, pin=pin, url=url, archive=archive, force=force, progress=advance)
        except DownloadFailed as exc:
            bar.stop()
            typer.echo(f"error: {exc}", err=True)
            typer.echo(
                f"nothing installed. Offline? Point {ENV_VAR} at a copy of the kit, or install from a file with"
                " `dui-gateway kit install --archive FILE` (the same pin is checked).",
                err=True,
            )
            raise typer.Exit(EXIT_OFFLINE) from None
        except InstallError as exc:
            bar.stop()
            typer.echo(f"error: {exc}", err=True)
            typer.echo(f"nothing installed from {source}", err=True)
            raise typer.Exit(EXIT_REFUSED) from None
    if result.already:
        typer.echo(f"already installed: {result.path} (commit {result.commit[:12]}, {result.files} files)")
        return
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(
        f"installed {result.files} files, content verified against the pin: {result.path}\n"
        f"use it with {ENV_VAR}={result.path} (scripts/dev.py does so by itself)"
    )


@app.command()
def status(
    dest: Annotated[Path, typer.Option("--dest", help="where `kit install` puts the kit")] = DEFAULT_DEST,
) -> None:
    """Say which kit is used (CISIS_KIT_DIR, else the installed one) and whether it is the pinned one."""
    pin = load_pin()
    env = os.environ.get(ENV_VAR)
    root = Path(env) if env else dest
    origin = ENV_VAR if env else "kit install"
    try:
        kit = Kit.locate(root)
    except KitNotFound as exc:
        typer.echo(f"no usable kit ({origin}): {exc}\nrun `dui-gateway kit install`", err=True)
        raise typer.Exit(1) from None
    marker = installed_pin(kit.root)
    if marker is None:
        typer.echo(f"{kit.root} ({origin}): a kit not installed by `kit install` (not checked against the pin)")
    elif marker.get("content_sha256") == pin.content_sha256:
        typer.echo(f"{kit.root} ({origin}): the pinned kit, commit {pin.commit[:12]}, {marker.get('files')} files")
    else:
        typer.echo(f"{kit.root} ({origin}): commit {marker.get('commit')}, not the pinned {pin.commit[:12]}")
