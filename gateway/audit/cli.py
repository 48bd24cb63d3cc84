"""``dui-gateway audit``: verify the hash chains (against external anchors too), write an anchor,
export events as FHIR AuditEvent NDJSON."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import func, select

from gateway.audit.anchor import Anchor, check_anchors, current_anchor, parse_anchors
from gateway.audit.chain import AuditSealer, iter_events, record_heads, verify
from gateway.audit.fhir import to_fhir_audit_event
from gateway.audit.horizon import AuditNotSettled, settled_seq
from gateway.settings import get_settings
from gateway.storage.db import make_engine, make_sessionmaker, session_scope, snapshot_engine
from gateway.storage.models import AuditEvent

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
def verify_command(
    anchor: Annotated[
        list[Path] | None,
        typer.Option(
            "--anchor",
            help="file of anchors written by 'audit anchor' (or kept 'OK: ...' lines): the chain must still "
            "hold each anchored hash (repeatable)",
        ),
    ] = None,
) -> None:
    """Check every event against its hash, the links between events, the chain head and the given
    anchors (exit 1 on problems, 2 when an anchor file cannot be read)."""
    anchors: list[Anchor] = []
    for path in anchor or ():
        try:
            anchors.extend(parse_anchors(path.read_text(encoding="utf-8").splitlines()))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            typer.echo(f"error: {path}: {exc}", err=True)
            raise typer.Exit(code=2) from None
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        factory = make_sessionmaker(snapshot_engine(engine))
        with factory() as session, session.begin():
            result = verify(session, sealer=AuditSealer.from_settings())
            for problem in check_anchors(session, anchors):
                result.problem(problem)
    finally:
        engine.dispose()
    for problem in result.problems:
        typer.echo(f"PROBLEM {problem}")
    status = "OK" if result.ok else "TAMPERED"
    against = f"; {len(anchors)} anchors checked" if anchors else ""
    # one line that is also an anchor (``verify --anchor`` accepts it): every chain's head
    heads = "; ".join(f"chain {c} head #{n} hash {h}" for c, (n, h) in sorted(result.heads.items()))
    chains = f"{len(result.heads)} chain" + ("" if len(result.heads) == 1 else "s")
    typer.echo(f"{status}: {result.checked} events checked in {chains}; {heads}{against}")
    if not result.ok:
        raise typer.Exit(code=1)


def _syslog_handler(target: str) -> logging.Handler:
    """``host:port`` (UDP) or a Unix socket path such as ``/dev/log``."""
    from logging.handlers import SysLogHandler

    if target.startswith("/"):
        return SysLogHandler(address=target, facility=SysLogHandler.LOG_AUTH)
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise typer.BadParameter("expected host:port or a Unix socket path", param_hint="--syslog")
    return SysLogHandler(address=(host, int(port)), facility=SysLogHandler.LOG_AUTH)


@app.command("anchor")
def anchor_command(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="append the anchor to this file (keep it where the database user cannot write)"
        ),
    ] = None,
    syslog: Annotated[
        str | None, typer.Option("--syslog", help="also send it to syslog: host:port (UDP) or /dev/log")
    ] = None,
    record: Annotated[
        bool,
        typer.Option(
            "--record",
            help="first append an event recording every chain's head to the trail itself (cross-chain anchor)",
        ),
    ] = False,
) -> None:
    """Write every chain's head (chain, position, hash) and the time outside the database, for
    'audit verify --anchor'."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        if record:
            with session_scope(make_sessionmaker(engine)) as session:
                record_heads(session, actor="gateway:audit-anchor", sealer=AuditSealer.from_settings())
        factory = make_sessionmaker(snapshot_engine(engine))
        with factory() as session, session.begin():
            anchor = current_anchor(session)
    finally:
        engine.dispose()
    line = anchor.to_json()
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("a", encoding="utf-8") as out:  # append only: earlier anchors stay
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
    if syslog is not None:
        logger = logging.getLogger("dui_gateway.audit_anchor")
        logger.propagate = False
        handler = _syslog_handler(syslog)
        handler.setFormatter(logging.Formatter("dui-gateway-audit-anchor: %(message)s"))
        logger.addHandler(handler)
        try:
            logger.warning(line)
        finally:
            logger.removeHandler(handler)
            handler.close()
    typer.echo(line)


@app.command("export")
def export_command(
    since: Annotated[str | None, typer.Option(help="first recorded time included (ISO 8601, UTC if no offset)")] = None,
    until: Annotated[str | None, typer.Option(help="recorded time excluded from here on (ISO 8601)")] = None,
    format: Annotated[str, typer.Option("--format", help="output format: fhir (AuditEvent NDJSON)")] = "fhir",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write (default: stdout)")] = None,
    after: Annotated[
        int, typer.Option("--after", min=0, help="only events after this seq (the 'up to seq' of the previous export)")
    ] = 0,
) -> None:
    """Export audit events as FHIR R4 AuditEvent resources, one JSON object per line, in seq
    order, up to the settled horizon (no event still being appended can appear below it later)."""
    if format != "fhir":
        raise typer.BadParameter("only --format fhir is supported", param_hint="--format")
    start, end = _parse_ts(since), _parse_ts(until)
    settings = get_settings()
    engine = make_engine(settings.database_url)
    count = 0
    try:
        try:
            # before the snapshot is taken: every event up to it is then in the snapshot
            upto = settled_seq(engine)
        except AuditNotSettled as exc:
            typer.echo(f"error: {exc.detail}", err=True)
            raise typer.Exit(code=1) from None
        factory = make_sessionmaker(snapshot_engine(engine))
        out = output.open("w", encoding="utf-8") if output is not None else sys.stdout
        try:
            with factory() as session, session.begin():
                if upto is None:  # SQLite: everything the snapshot holds is settled
                    upto = int(session.scalar(select(func.coalesce(func.max(AuditEvent.seq), 0))) or 0)
                for event in iter_events(session, since=start, until=end, after=after, upto=upto):
                    out.write(json.dumps(to_fhir_audit_event(event), ensure_ascii=False, separators=(",", ":")))
                    out.write("\n")
                    count += 1
        finally:
            if output is not None:
                out.close()
    finally:
        engine.dispose()
    # the cursor of the next export (--after): nothing at or below it can appear any more
    typer.echo(f"exported {count} events up to seq {max(upto, after)}", err=True)
