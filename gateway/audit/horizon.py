"""The settled horizon of the audit trail: the highest ``seq`` below which no event can still appear.

On PostgreSQL, transactions appending to different chains run in parallel and may commit in the
other order than their ``seq``s: a reader paging with ``seq > after`` could read seq 101
committed, move its cursor past it, and never see seq 100, committed a moment later. Readers
that page or stream by ``seq`` therefore stop at the settled horizon:

* every appender takes an advisory lock shared (:data:`APPEND_LOCK_CLASS` and the OID of
  ``audit_event_seq``) *before* its first ``nextval('audit_event_seq')``, in the statement that
  locks its chain's head (no extra round trip), and holds it until its transaction ends (commit
  or rollback);
* :func:`settled_seq` takes the same lock exclusively in a short transaction of its own (on a
  connection of its own: it holds nothing else, so it cannot be part of a deadlock), reads the
  sequence's position while holding it, and releases it at once. Every seq up to that position
  was taken by a transaction that has ended by then: the events up to it are all visible, or
  rolled back for good (a gap). New appenders queue behind the lock for that instant only.

The wait is bounded (``lock_timeout``): an appender stuck in its transaction makes
:func:`settled_seq` raise :class:`AuditNotSettled` (503 + ``Retry-After`` in the API) instead of
hanging the reader or answering a page that could skip its event.

SQLite serialises writers (``BEGIN IMMEDIATE``) and takes ``max(seq) + 1`` under that lock, so
events commit in ``seq`` order: there is no horizon (``None``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Connection, Engine, text
from sqlalchemy import column as sa_column
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gateway.errors import ServiceUnavailable

__all__ = [
    "APPEND_LOCK_CLASS",
    "SETTLE_TIMEOUT_SECONDS",
    "AuditNotSettled",
    "settled_seq",
    "settled_seq_of",
]

# The advisory lock appenders share, in its two-key form: a class of the gateway's own ("duia")
# and the OID of the schema's audit_event_seq, so that installations in different schemas of one
# database do not wait for each other (the outbox's series locks use the one-key form: another key
# space). The statements spell it out (chain._PG_LOCK_HEAD takes it shared, _WAIT exclusive).
APPEND_LOCK_CLASS = 0x64756961
# How long a reader waits for the appenders in flight (a normal one holds its lock for
# milliseconds: only a transaction stuck between its append and its commit makes it wait longer).
SETTLE_TIMEOUT_SECONDS = 5.0
# lock_not_available: lock_timeout expired
_LOCK_NOT_AVAILABLE = "55P03"
# the session.info key under which chain.py keeps the head its transaction locked (spelt here:
# this module imports nothing from chain.py)
_HEAD_INFO = "dui_gateway.audit_head"

_SET_TIMEOUT = text("SELECT set_config('lock_timeout', :timeout, true)")
_WAIT = text(
    "SELECT pg_advisory_xact_lock(1685416289, CAST(CAST(CAST('audit_event_seq' AS regclass) AS oid) AS integer))"
)
_POSITION = text("SELECT last_value, is_called FROM audit_event_seq").columns(
    sa_column("last_value", BigInteger()), sa_column("is_called", Boolean())
)


class AuditNotSettled(ServiceUnavailable):
    """Audit appends in flight did not end within the reader's timeout (a stuck transaction)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(
            f"audit events being appended did not settle within {timeout:g} s; try again later",
            retry_after=max(1, round(timeout)),
            type_suffix="audit-not-settled",
        )


def settled_seq(bind: Engine | Connection, *, timeout: float | None = None) -> int | None:
    """The highest ``seq`` such that every event up to it is committed or rolled back for good;
    ``None`` when the database needs no horizon (SQLite). Waits at most ``timeout`` seconds for
    the appenders in flight, then raises :class:`AuditNotSettled`."""
    engine = bind.engine if isinstance(bind, Connection) else bind
    if engine.dialect.name != "postgresql":
        return None
    timeout = SETTLE_TIMEOUT_SECONDS if timeout is None else timeout
    with engine.connect() as conn:
        try:
            with conn.begin():
                conn.execute(_SET_TIMEOUT, {"timeout": f"{max(1, int(timeout * 1000))}ms"})
                conn.execute(_WAIT)  # released by the commit below
                last_value, is_called = conn.execute(_POSITION).one()
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                raise AuditNotSettled(timeout) from None
            raise
    return int(last_value) if is_called else int(last_value) - 1


def settled_seq_of(session: Session, *, timeout: float | None = None) -> int | None:
    """:func:`settled_seq` of the session's database (on a connection of its own, not the session's).

    Call it before the session's transaction appends: once it has, it holds the appenders' lock
    itself and the wait could only time out (refused at once instead)."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return None
    held = session.info.get(_HEAD_INFO)
    if held is not None and held[0].is_active:
        raise RuntimeError("settled_seq_of: this transaction appended to the audit trail already; call it before")
    return settled_seq(bind, timeout=timeout)
