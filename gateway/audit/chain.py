"""Append-only, hash-chained audit trail.

Every event stores ``prev_hash`` (the previous event's ``hash``) and
``hash = H(canonical JSON of its fields, prev_hash and key id included)``. ``H`` is SHA-256, or
HMAC-SHA-256 under an audit key when ``Settings.audit_keys`` is set (then someone with write
access to the database alone cannot forge a consistent chain). ``seq`` is dense (1, 2, 3, …) and
covered by the hash; the ``audit_head`` row holds the last seq and hash and is moved in the same
transaction as each append, under a row lock (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already serialises writers), so the chain stays linear across processes.

``verify`` reports a modified field (hash mismatch), a deleted row (seq gap + broken link),
an inserted row (broken link or renumbered seqs), a truncated tail (head mismatch), and,
with audit keys configured, events not sealed by a known key.

``detail`` is for technical facts (error codes, destination names, counts, ids). It must never
hold names, INS/NIR, birth dates or any other identity trait: ``append`` refuses obvious cases
(identity-looking keys, NIR-shaped strings), but callers remain responsible.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import BigInteger, String, Table, bindparam, select
from sqlalchemy.orm import Session

from gateway.security.crypto import parse_key_spec
from gateway.storage.models import AuditEvent, AuditHead

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = [
    "ACTIONS",
    "GENESIS_HASH",
    "OUTCOMES",
    "PLAIN_KEY_ID",
    "SEALER_INFO_KEY",
    "AuditSealer",
    "Entry",
    "VerifyResult",
    "append",
    "append_many",
    "canonical_bytes",
    "iter_events",
    "safe_person_ref",
    "verify",
]

GENESIS_HASH = "0" * 64
PLAIN_KEY_ID = "sha256"
# Session.info key under which the runtime puts the AuditSealer of its settings.
SEALER_INFO_KEY = "dui_gateway.audit_sealer"
HEAD_ID = 1

# The steps the gateway records. Other lowercase action names are accepted too.
ACTIONS = (
    "received",
    "mapped",
    "rejected",
    "routed",
    "attempt",
    "delivered",
    "dead_lettered",
    "retried",
    "replayed",
    "cancelled",
    "read",
    "searched",
    "exported",
)
# success; failure = the step failed but the gateway handled it (e.g. retry); error = serious failure
OUTCOMES = ("success", "failure", "error")

_ACTION_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
# detail keys that suggest identity traits: any of these words in the key (split on _ - . and camelCase) ...
_FORBIDDEN_DETAIL_WORDS = frozenset(
    {"nom", "prenom", "prenoms", "given", "family", "surname", "birth", "birthdate", "birthday", "dob",
     "naissance", "ins", "nir", "nia", "matricule", "ssn", "address", "adresse", "phone", "telephone", "email"}
)  # fmt: skip
# ... or these whole keys (lowercase, separators removed); "connector_name" and the like stay allowed
_FORBIDDEN_DETAIL_KEYS = frozenset(
    {"name", "names", "fullname", "firstname", "lastname", "givenname", "familyname", "patientname", "personname",
     "birthname", "usedname", "usualname", "dateofbirth", "datenaissance"}
)  # fmt: skip
_WORD_SPLIT = re.compile(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])")


def _words(key: str) -> list[str]:
    return [w.lower() for w in _WORD_SPLIT.split(key) if w]


# 13 or 15 characters shaped like a NIR/NIA (sex digit, year, month, department, commune, order[, key])
_NIR_RE = re.compile(r"^[1-478][0-9]{2}(0[1-9]|1[0-2]|[2-9][0-9])(2A|2B|[0-9]{2})[0-9]{6}([0-9]{2})?$")


# -- keys -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditSealer:
    """How events are sealed: HMAC keys (first seals new events) or none (plain SHA-256)."""

    keys: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def parse(cls, spec: str | None) -> AuditSealer:
        pairs = parse_key_spec(spec) if spec else []
        ids = [key_id for key_id, _ in pairs]
        if PLAIN_KEY_ID in ids or len(set(ids)) != len(ids) or any(not i or len(i) > 64 for i in ids):
            raise ValueError(f"audit key ids must be unique, 1-64 characters, and not {PLAIN_KEY_ID!r}")
        return cls(tuple(pairs))

    @classmethod
    def for_settings(cls, settings: Settings) -> AuditSealer:
        keys = settings.audit_keys
        return cls.parse(keys.get_secret_value() if keys is not None else None)

    @classmethod
    def from_settings(cls) -> AuditSealer:
        """The sealer of the process-wide settings (CLI use; services get theirs from the session)."""
        from gateway.settings import get_settings

        return cls.for_settings(get_settings())

    @classmethod
    def of_session(cls, session: Session) -> AuditSealer:
        """The sealer the runtime attached to this session, else the process-wide settings' one."""
        sealer = session.info.get(SEALER_INFO_KEY)
        return sealer if isinstance(sealer, AuditSealer) else cls.from_settings()

    @property
    def keyed(self) -> bool:
        return bool(self.keys)

    @property
    def current_id(self) -> str:
        return self.keys[0][0] if self.keys else PLAIN_KEY_ID

    def seal(self, data: bytes, key_id: str) -> str | None:
        """The hash of ``data`` under ``key_id``; None if that key is unknown here."""
        if key_id == PLAIN_KEY_ID:
            return hashlib.sha256(data).hexdigest()
        for kid, key in self.keys:
            if kid == key_id:
                return hmac.new(key, data, hashlib.sha256).hexdigest()
        return None

    def __repr__(self) -> str:
        return f"AuditSealer(key_ids={[k for k, _ in self.keys]!r})"


# -- canonical form ---------------------------------------------------------------------------
def _utc(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _ts(at: datetime) -> str:
    return _utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_bytes(event: AuditEvent) -> bytes:
    """The bytes the hash covers: sorted-key compact JSON of every field except ``hash``."""
    doc = {
        "v": 1,
        "seq": int(event.seq),
        "id": event.id,
        "recorded_at": _ts(event.recorded_at),
        "tenant_id": event.tenant_id,
        "actor": event.actor,
        "action": event.action,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "person_ref": event.person_ref,
        "outcome": event.outcome,
        "detail": event.detail,
        "prev_hash": event.prev_hash,
        "key_id": event.key_id,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def safe_person_ref(value: str | None) -> str | None:
    """A person reference fit for the trail: a NIR/INS-shaped value (a caller searching by INS)
    is replaced by a marker, since identity data must not go into the audit trail."""
    if value is not None and _NIR_RE.match(value.strip().upper()):
        return "<nir-shaped reference withheld>"
    return value


def _check_detail(value: Any, path: str = "detail") -> None:
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: non-finite number")
        return
    if isinstance(value, str):
        if _NIR_RE.match(value.strip().upper()):
            raise ValueError(f"{path}: looks like a NIR/INS; identity data must not go into audit detail")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_detail(item, f"{path}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: keys must be strings")
            words = set(_words(key))
            if words & _FORBIDDEN_DETAIL_WORDS or "".join(_words(key)) in _FORBIDDEN_DETAIL_KEYS:
                raise ValueError(f"{path}.{key}: identity traits must not go into audit detail")
            _check_detail(item, f"{path}.{key}")
        return
    raise ValueError(f"{path}: {type(value).__name__} is not JSON data")


_PEER_MAX_KEYS = 16
_PEER_MAX_CHARS = 500


def _peer_values(peer: Mapping[str, Any]) -> dict[str, str | None]:
    """Peer-chosen values as bounded strings (no type of theirs can break the JSON or the guard)."""
    out: dict[str, str | None] = {}
    for key, value in list(peer.items())[:_PEER_MAX_KEYS]:
        out[str(key)[:64]] = None if value is None else str(value)[:_PEER_MAX_CHARS]
    return out


# -- append -----------------------------------------------------------------------------------
# Session.info key: (the innermost transaction that locked the head or last moved it, [last seq,
# last hash]). Later appends in that transaction reuse the lock and the values instead of
# selecting the row again. Once that transaction ended (a savepoint released or rolled back: its
# row lock may be gone with it, its writes too) the head is read again, locked.
_HEAD_INFO = "dui_gateway.audit_head"

_HEAD = cast(Table, AuditHead.__table__)
_EVENTS = cast(Table, AuditEvent.__table__)
# Core statements, built once: an append is two statements without the ORM's unit of work (the
# flush of one event and the head's update cost more CPU than the rest of the append).
_INSERT_EVENT = _EVENTS.insert()
_EVENT_COLUMNS = tuple(column.key for column in _EVENTS.c)  # the mapped attributes' names
_MOVE_HEAD = (
    _HEAD.update()
    .where(_HEAD.c.id == HEAD_ID)
    .values(last_seq=bindparam("new_seq", type_=BigInteger()), last_hash=bindparam("new_hash", type_=String(64)))
)
_READ_HEAD = select(_HEAD.c.last_seq, _HEAD.c.last_hash).where(_HEAD.c.id == HEAD_ID)
_LOCK_HEAD = _READ_HEAD.with_for_update()


def _lock_head(session: Session) -> list[Any]:
    """``[last_seq, last_hash]`` of the chain head, locked until the transaction ends."""
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is None:
        # Nothing ran yet in this session: begin now, so the lock is keyed by the transaction
        # that holds it (keyed by None, a second append would reuse a seq).
        session.connection()
        transaction = session.get_transaction()
    held = session.info.get(_HEAD_INFO)
    if transaction is not None and held is not None and held[0] is transaction and transaction.is_active:
        return held[1]  # type: ignore[no-any-return]
    connection = session.connection()
    stmt = _LOCK_HEAD if connection.dialect.name == "postgresql" else _READ_HEAD
    row = connection.execute(stmt).one_or_none()
    if row is None:
        raise RuntimeError("audit_head row missing: run `dui-gateway migrate`")
    head = [int(row[0]), str(row[1])]
    session.info[_HEAD_INFO] = (transaction, head)
    return head


@dataclass(frozen=True)
class Entry:
    """One event to append with :func:`append_many` (the keyword arguments of :func:`append`)."""

    actor: str
    action: str
    entity_type: str
    entity_id: str
    outcome: str = "success"
    tenant_id: str | None = None
    person_ref: str | None = None
    detail: dict[str, Any] | None = None
    at: datetime | None = None
    peer: Mapping[str, Any] | None = None


def _checked_detail(entry: Entry) -> dict[str, Any] | None:
    if not _ACTION_RE.match(entry.action):
        raise ValueError(f"invalid audit action {entry.action!r}")
    if entry.outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {OUTCOMES}, not {entry.outcome!r}")
    if not entry.actor or len(entry.actor) > 255:
        raise ValueError("audit actor must be 1-255 characters")
    detail = entry.detail
    if detail is not None:
        if "peer" in detail:
            raise ValueError("detail['peer'] is reserved for peer-controlled values: pass them as peer=")
        _check_detail(detail)
        detail = json.loads(json.dumps(detail, allow_nan=False))  # plain JSON, as it will be read back
    if entry.peer:
        detail = {**(detail or {}), "peer": _peer_values(entry.peer)}
    return detail


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    outcome: str = "success",
    tenant_id: str | None = None,
    person_ref: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
    sealer: AuditSealer | None = None,
    peer: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (commit it to make the event durable).

    Locks the chain head until that transaction ends (once: later appends in the same
    transaction reuse the lock): call it late in the transaction, and do no network I/O between
    ``append`` and the commit. The caller's pending changes are flushed first, then the event
    is inserted and the head moved (two statements). ``sealer`` defaults to the one built
    from ``Settings.audit_keys``.

    ``detail`` is written by the gateway and checked for identity traits (a mistake raises).
    ``peer`` holds values a remote peer chose (its receipt id, its error code and text): they are
    opaque to us, so they are stored as bounded strings under ``detail["peer"]`` and never run
    through the identity guard — a peer answering ``{"id": 1733000000000}`` must not make
    recording its acceptance fail.
    """
    entry = Entry(
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        outcome=outcome,
        tenant_id=tenant_id,
        person_ref=person_ref,
        detail=detail,
        at=at,
        peer=peer,
    )
    return append_many(session, [entry], sealer=sealer)[0]


def append_many(session: Session, entries: Sequence[Entry], *, sealer: AuditSealer | None = None) -> list[AuditEvent]:
    """Append ``entries`` in this order, as consecutive events, with one INSERT and one update
    of the head (:func:`append` for one). Every entry is checked before anything is written."""
    if not entries:
        return []
    details = [_checked_detail(entry) for entry in entries]
    sealer = sealer or AuditSealer.of_session(session)
    # What the caller changed is written first (the rows it locked come before the head in the
    # lock order), as when the event was an ORM object flushed with them.
    session.flush()
    head = _lock_head(session)
    seq, prev_hash = head[0], head[1]
    events = []
    for entry, detail in zip(entries, details, strict=True):
        seq += 1
        event = AuditEvent(
            seq=seq,
            id=str(uuid.uuid4()),
            recorded_at=_utc(entry.at or datetime.now(UTC)),
            tenant_id=entry.tenant_id,
            actor=entry.actor,
            action=entry.action,
            entity_type=entry.entity_type,
            entity_id=entry.entity_id,
            person_ref=entry.person_ref,
            outcome=entry.outcome,
            detail=detail,
            prev_hash=prev_hash,
            key_id=sealer.current_id,
        )
        digest = sealer.seal(canonical_bytes(event), event.key_id)
        assert digest is not None
        event.hash = prev_hash = digest
        events.append(event)
    # Written now, not at the commit: a caller that expires the session before committing
    # (``expire_all`` to re-read what it changed) cannot drop them. The events are returned
    # detached (not in the session): each is written once, here.
    # Core statements on the session's connection (same transaction): the ORM's execution path
    # costs more CPU than the statements themselves. Several events go as one executemany (one
    # round trip, and the statement compiled once for all, unlike a multi-row VALUES).
    rows = [{key: getattr(event, key) for key in _EVENT_COLUMNS} for event in events]
    connection = session.connection()
    connection.execute(_INSERT_EVENT, rows[0] if len(rows) == 1 else rows)
    connection.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": prev_hash})
    head[0], head[1] = seq, prev_hash
    return events


# -- verify -----------------------------------------------------------------------------------
@dataclass
class VerifyResult:
    ok: bool = True
    checked: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    problems: list[str] = field(default_factory=list)

    def problem(self, message: str) -> None:
        self.ok = False
        self.problems.append(message)


def verify(session: Session, *, sealer: AuditSealer | None = None, batch_size: int = 1000) -> VerifyResult:
    """Walk the whole chain and the head; every inconsistency becomes one line in ``problems``.

    Run it in one snapshot (SQLite transactions are; on PostgreSQL use REPEATABLE READ, as the
    CLI does), otherwise an append committed during the walk looks like a head mismatch.
    """
    sealer = sealer or AuditSealer.of_session(session)
    result = VerifyResult()
    expected_seq = 1
    prev_hash = GENESIS_HASH
    last_seq = 0
    after = 0
    while True:
        stmt = select(AuditEvent).where(AuditEvent.seq > after).order_by(AuditEvent.seq).limit(batch_size)
        batch = list(session.scalars(stmt.execution_options(populate_existing=True)))
        if not batch:
            break
        for ev in batch:
            result.checked += 1
            if ev.seq != expected_seq:
                if ev.seq > expected_seq:
                    missing = f"{expected_seq}" if ev.seq == expected_seq + 1 else f"{expected_seq}..{ev.seq - 1}"
                    result.problem(f"seq {ev.seq}: events {missing} are missing (deleted)")
                else:
                    result.problem(f"seq {ev.seq}: out of order")
            if ev.prev_hash != prev_hash:
                result.problem(f"seq {ev.seq}: prev_hash does not match the previous event's hash (inserted/deleted)")
            expected = sealer.seal(canonical_bytes(ev), ev.key_id)
            if expected is None:
                result.problem(f"seq {ev.seq}: sealed with unknown audit key {ev.key_id!r}")
            elif not hmac.compare_digest(expected, ev.hash):
                result.problem(f"seq {ev.seq}: content does not match its hash (event modified)")
            if sealer.keyed and ev.key_id == PLAIN_KEY_ID:
                result.problem(f"seq {ev.seq}: not sealed with an audit key although audit keys are configured")
            prev_hash = ev.hash
            last_seq = ev.seq
            expected_seq = ev.seq + 1
        after = batch[-1].seq
    head = session.scalars(
        select(AuditHead).where(AuditHead.id == HEAD_ID).execution_options(populate_existing=True)
    ).one_or_none()
    if head is None:
        result.problem("audit_head row is missing")
        return result
    result.head_seq, result.head_hash = head.last_seq, head.last_hash
    if head.last_seq != last_seq or head.last_hash != prev_hash:
        result.problem(
            f"head: records seq {head.last_seq} but the chain ends at seq {last_seq}"
            + ("" if head.last_seq != last_seq else " with another hash")
            + " (events removed from or added at the tail)"
        )
    return result


def iter_events(
    session: Session, *, since: datetime | None = None, until: datetime | None = None, batch_size: int = 500
) -> Iterator[AuditEvent]:
    """Events in chain order, optionally limited to ``since <= recorded_at < until``."""
    after = 0
    while True:
        stmt = select(AuditEvent).where(AuditEvent.seq > after)
        if since is not None:
            stmt = stmt.where(AuditEvent.recorded_at >= _utc(since))
        if until is not None:
            stmt = stmt.where(AuditEvent.recorded_at < _utc(until))
        batch = list(session.scalars(stmt.order_by(AuditEvent.seq).limit(batch_size)))
        if not batch:
            return
        yield from batch
        after = batch[-1].seq
