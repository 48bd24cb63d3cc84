"""Routing rules versioned in the database, applied without restart.

The routing file keeps what needs a restart to change: destinations (connector settings) and
inbound sources. The **rules** can be replaced at run time: each change is a new row of
``routing_versions`` (the whole rule list, validated against the file's destinations by the
routing loader), audited with the rules before and after. The newest version is in force: every
process (API, workers) picks it up within ``routing_refresh_seconds`` (the pipeline asks
:func:`current_table` before each routing decision), without restart. With no version stored,
the routing file's rules apply.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway import audit
from gateway.errors import Conflict, FieldError, ValidationFailed
from gateway.logging import get_logger
from gateway.routing import RoutingConfigError, RoutingTable, parse_config
from gateway.runtime import Runtime
from gateway.storage.db import snapshot_engine
from gateway.storage.models import RoutingVersion

__all__ = ["StoredRules", "current_table", "history", "latest", "save_rules"]

_lock = threading.Lock()
_log = get_logger(__name__)


@dataclass(frozen=True)
class StoredRules:
    version: int
    rules: list[dict[str, Any]]
    sha256: str
    actor: str
    comment: str
    created_at: datetime


def _canonical(rules: list[dict[str, Any]]) -> str:
    return json.dumps(rules, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(rules: list[dict[str, Any]]) -> str:
    return hashlib.sha256(_canonical(rules).encode()).hexdigest()


def _of(row: RoutingVersion) -> StoredRules:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return StoredRules(
        version=row.version,
        rules=list(row.document.get("rules", [])),
        sha256=row.sha256,
        actor=row.actor,
        comment=row.comment,
        created_at=created,
    )


def latest(session: Session) -> StoredRules | None:
    row = session.scalars(select(RoutingVersion).order_by(RoutingVersion.version.desc()).limit(1)).first()
    return _of(row) if row is not None else None


def history(session: Session, *, limit: int = 50) -> list[StoredRules]:
    rows = session.scalars(select(RoutingVersion).order_by(RoutingVersion.version.desc()).limit(limit))
    return [_of(r) for r in rows]


def _table_with(runtime: Runtime, rules: list[dict[str, Any]], source: str) -> RoutingTable:
    """The file's destinations and sources with these rules, validated by the routing loader."""
    base = runtime.routing if runtime.routing is not None else RoutingTable()
    document = base.config.model_dump(mode="json")
    document["rules"] = rules
    try:
        config = parse_config(document, source=source)
    except RoutingConfigError as exc:
        errors = [FieldError("/rules", line.strip(), "routing_invalid") for line in str(exc).splitlines()[1:]]
        raise ValidationFailed("the routing rules are not valid; see errors", errors) from None
    return RoutingTable(config=config, source=source)


def save_rules(
    session: Session,
    *,
    runtime: Runtime,
    rules: list[dict[str, Any]],
    actor: str,
    comment: str = "",
    expected_version: int | None = None,
) -> StoredRules:
    """Validate and store a new version of the rules; audited with before/after; applied here at once.

    ``expected_version`` (optimistic concurrency): refuse (409) when another change came first."""
    current = latest(session)
    current_version = current.version if current is not None else 0
    if expected_version is not None and expected_version != current_version:
        raise Conflict(f"the rules changed meanwhile: version {current_version} is in force, not {expected_version}")
    version = current_version + 1
    table = _table_with(runtime, rules, f"db:routing_versions/{version}")
    normalised = [r.model_dump(mode="json", exclude_none=True) for r in table.config.rules]
    before = current.rules if current is not None else _file_rules(runtime)
    row = RoutingVersion(
        version=version,
        document={"rules": normalised},
        sha256=_digest(normalised),
        actor=actor,
        comment=comment,
        created_at=datetime.now(UTC),
    )
    session.add(row)
    session.flush()  # a concurrent writer of the same version fails here (primary key)
    audit.append(
        session,
        actor=actor,
        action="routing_changed",
        entity_type="routing",
        entity_id=str(version),
        # before/after as canonical JSON text: rule keys such as "name" or "ins_qualified" are
        # configuration, not identity traits, but the audit guard checks keys, not meaning
        detail={
            "version": version,
            "comment": comment,
            "before": _canonical(before),
            "after": _canonical(normalised),
            "before_sha256": _digest(before),
            "after_sha256": row.sha256,
        },
    )
    return _of(row)


def _file_rules(runtime: Runtime) -> list[dict[str, Any]]:
    base = runtime.routing if runtime.routing is not None else RoutingTable()
    return [r.model_dump(mode="json", exclude_none=True) for r in base.config.rules]


def apply(runtime: Runtime, stored: StoredRules) -> None:
    """Make this process route with the stored rules now."""
    table = _table_with(runtime, stored.rules, f"db:routing_versions/{stored.version}")
    with _lock:
        state = _state(runtime)
        if stored.version >= state.get("version", 0):
            runtime.routing = table
            state["version"] = stored.version
            state["checked"] = time.monotonic()
            _log.info("routing_version_applied", version=stored.version, rules=len(stored.rules))


def _state(runtime: Runtime) -> dict[str, Any]:
    return runtime.routing_state


def current_table(runtime: Runtime) -> RoutingTable:
    """The routing table in force, refreshed from the database at most every
    ``routing_refresh_seconds`` (a newer stored version replaces the rules in this process)."""
    state = _state(runtime)
    now = time.monotonic()
    if now - state.get("checked", -1e9) >= runtime.settings.routing_refresh_seconds:
        state["checked"] = now
        try:
            # a read-only snapshot: on SQLite a deferred transaction, which never waits for the
            # write lock (a caller inside its own write transaction would otherwise wait for
            # itself for the whole busy timeout)
            with Session(snapshot_engine(runtime.engine)) as session:
                newest = session.scalar(select(func.max(RoutingVersion.version)))
                stored = latest(session) if newest is not None and newest > state.get("version", 0) else None
                session.rollback()
        except Exception:  # the database is down: keep routing with what we have
            stored = None
        if stored is not None:
            try:
                apply(runtime, stored)
            except ValidationFailed as exc:
                # stored rules that no longer fit this process's destinations: keep the current ones
                _log.error("routing_version_not_applied", version=stored.version, detail=exc.detail)
    return runtime.routing if runtime.routing is not None else RoutingTable()
