"""Append-only, hash-chained audit trail, in several chains appended to in parallel.

Events are spread over ``N`` chains (``Settings.audit_chains``: 8 on PostgreSQL, 1 on SQLite
unless set). Each event stores its ``chain``, its position ``chain_seq`` in it (1, 2, 3, …
without gaps), ``prev_hash`` (the hash of the previous event *of its chain*) and ``hash = H(canonical
JSON of its fields, chain, chain_seq, seq, prev_hash and key id included)``. ``H`` is SHA-256, or
HMAC-SHA-256 under an audit key when ``Settings.audit_keys`` is set (then someone with write
access to the database alone cannot forge a consistent chain). One ``audit_head`` row per chain
holds its last position and hash and is moved in the same transaction as each append, under a row
lock (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises
writers), so each chain stays linear across processes. A transaction appends to one chain only,
chosen once from its first event's entity id: it never holds two heads, and transactions about
different entities mostly take different heads instead of all queueing on one.

``seq`` is the global order readers use (console, API, exports): taken from a sequence on
PostgreSQL (``max + 1`` on SQLite) after the chain's head is locked, so it increases along each
chain; it may have gaps (rolled-back transactions), which are not tampering.

``verify`` walks every chain and reports, per chain and position, a modified field (hash
mismatch), a deleted row (gap + broken link), an inserted or renumbered row, a row moved to
another chain, a truncated tail (head mismatch), and, with audit keys configured, events not
sealed by a known key. Events written before migration 0008 (one chain) are chain 0 with
``chain_seq = seq`` and keep their format-1 hashes (without chain fields), accepted at the start
of chain 0 only.

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
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import BigInteger, Integer, String, Table, bindparam, select, text, tuple_
from sqlalchemy import column as sa_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gateway.security.crypto import parse_key_spec
from gateway.storage.models import AuditEvent, AuditHead

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = [
    "ACTIONS",
    "ANCHOR_ACTION",
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
    "canonical_bytes_v1",
    "chain_for",
    "iter_events",
    "record_heads",
    "safe_person_ref",
    "verify",
]

GENESIS_HASH = "0" * 64
PLAIN_KEY_ID = "sha256"
# Session.info key under which the runtime puts the AuditSealer of its settings.
SEALER_INFO_KEY = "dui_gateway.audit_sealer"
# Chains when Settings.audit_chains is unset: PostgreSQL appends in parallel; SQLite serialises
# every writer on the database lock anyway, so more chains would only lengthen verification.
DEFAULT_CHAINS = {"postgresql": 8}

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
    # how many chains new transactions spread over; None = DEFAULT_CHAINS of the database (1 if absent)
    chains: int | None = None

    def __post_init__(self) -> None:
        if self.chains is not None and self.chains < 1:
            raise ValueError("audit chains must be at least 1")

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
        return replace(cls.parse(keys.get_secret_value() if keys is not None else None), chains=settings.audit_chains)

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

    def chain_count(self, session: Session) -> int:
        """How many chains appends in ``session`` spread over."""
        return self.chains or DEFAULT_CHAINS.get(session.get_bind().dialect.name, 1)

    def seal(self, data: bytes, key_id: str) -> str | None:
        """The hash of ``data`` under ``key_id``; None if that key is unknown here."""
        if key_id == PLAIN_KEY_ID:
            return hashlib.sha256(data).hexdigest()
        for kid, key in self.keys:
            if kid == key_id:
                return hmac.new(key, data, hashlib.sha256).hexdigest()
        return None

    def __repr__(self) -> str:
        return f"AuditSealer(key_ids={[k for k, _ in self.keys]!r}, chains={self.chains!r})"


# -- canonical form ---------------------------------------------------------------------------
def _utc(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _ts(at: datetime) -> str:
    return _utc(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fields(event: AuditEvent) -> dict[str, Any]:
    return {
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


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def canonical_bytes(event: AuditEvent) -> bytes:
    """The bytes the hash covers (format 2): sorted-key compact JSON of every field except
    ``hash``, the chain and the position in it included (an event moved or renumbered no longer
    matches its hash)."""
    return _json({"v": 2, "chain": int(event.chain), "chain_seq": int(event.chain_seq), **_fields(event)})


def canonical_bytes_v1(event: AuditEvent) -> bytes:
    """Format 1, of the events written before migration 0008 (one chain, ``seq`` its position):
    the same without the chain fields. ``verify`` accepts it only where such events can be."""
    return _json({"v": 1, **_fields(event)})


def chain_for(entity_id: str, chains: int) -> int:
    """The chain a transaction whose first event is about ``entity_id`` appends to (stable
    across processes and releases: CRC-32, not Python's salted ``hash``)."""
    return zlib.crc32(entity_id.encode()) % chains


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
# Session.info key: (the outermost transaction, the chain it appends to). Chosen at its first
# append and kept until it ends, savepoints included: a transaction never locks two heads.
_CHAIN_INFO = "dui_gateway.audit_chain"
# Session.info key: (the innermost transaction that locked the head or last moved it, [chain,
# last chain_seq, last hash, next seq (SQLite) or None]). Later appends in that transaction reuse
# the lock and the values instead of selecting the row again. Once that transaction ended (a
# savepoint released or rolled back: its row lock may be gone with it, its writes too) the head
# is read again, locked.
_HEAD_INFO = "dui_gateway.audit_head"

_HEAD = cast(Table, AuditHead.__table__)
_EVENTS = cast(Table, AuditEvent.__table__)
# Core statements, built once: an append is two statements without the ORM's unit of work (the
# flush of one event and the head's update cost more CPU than the rest of the append).
_INSERT_EVENT = _EVENTS.insert()
# with RETURNING, SQLAlchemy sends a list of rows as one multi-row INSERT ("insertmanyvalues")
# from a statement compiled once; without it, psycopg would run one INSERT per row
_INSERT_EVENTS = _EVENTS.insert().returning(_EVENTS.c.seq)
_EVENT_COLUMNS = tuple(column.key for column in _EVENTS.c)  # the mapped attributes' names
_MOVE_HEAD = (
    _HEAD.update()
    .where(_HEAD.c.id == bindparam("chain", type_=Integer()))
    .values(last_seq=bindparam("new_seq", type_=BigInteger()), last_hash=bindparam("new_hash", type_=String(64)))
)
# PostgreSQL: the events as arrays, one row per element (unnest), and the head's move, in one
# statement: its text is the same whatever the number of events (psycopg converts it once, the
# server prepares and plans it once) and an append is one round trip after the head's lock.
_PG_APPEND = text(
    "WITH events AS (INSERT INTO audit_events (seq, chain, chain_seq, id, recorded_at, tenant_id, actor, "
    "action, entity_type, entity_id, person_ref, outcome, detail, prev_hash, hash, key_id) SELECT r.seq, "
    "r.chain, r.chain_seq, r.id, r.recorded_at, r.tenant_id, r.actor, r.action, r.entity_type, "
    "r.entity_id, r.person_ref, r.outcome, r.detail, r.prev_hash, r.hash, "
    "r.key_id FROM unnest(CAST(:seq AS bigint[]), CAST(:chain AS integer[]), "
    "CAST(:chain_seq AS bigint[]), CAST(:id AS varchar[]), CAST(:recorded_at AS timestamptz[]), "
    "CAST(:tenant_id AS varchar[]), CAST(:actor AS varchar[]), CAST(:action AS varchar[]), "
    "CAST(:entity_type AS varchar[]), CAST(:entity_id AS varchar[]), CAST(:person_ref AS varchar[]), "
    "CAST(:outcome AS varchar[]), CAST(:detail AS json[]), CAST(:prev_hash AS varchar[]), "
    "CAST(:hash AS varchar[]), CAST(:key_id AS varchar[])) AS r(seq, chain, chain_seq, id, recorded_at, "
    "tenant_id, actor, action, entity_type, entity_id, person_ref, outcome, detail, prev_hash, hash, "
    "key_id)) UPDATE audit_head SET last_seq = :new_seq, last_hash = :new_hash WHERE id = :head"
).bindparams(
    bindparam("head", type_=Integer()), bindparam("new_seq", type_=BigInteger()), bindparam("new_hash", type_=String())
)
# (The raw statements declare their result columns: SQLAlchemy then caches their result metadata
# instead of building it at every call.)
# PostgreSQL, first append of a transaction: lock the chain's head, then take one global seq per
# event, in one round trip. The CTE yields the locked row before any nextval() runs, so seqs
# taken under a chain's lock increase along that chain. No row: the head does not exist yet.
# The shared advisory lock (held until the transaction ends) is taken before any nextval(), so a
# reader can wait for every seq taken so far to settle (gateway.audit.horizon).
_PG_LOCK_HEAD = text(
    "WITH head AS MATERIALIZED (SELECT last_seq, last_hash FROM audit_head WHERE id = :chain FOR UPDATE), "
    "settle AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(1685416289, "  # horizon.APPEND_LOCK_CLASS
    "CAST(CAST(CAST('audit_event_seq' AS regclass) AS oid) AS integer)) FROM head) "
    "SELECT head.last_seq, head.last_hash, nextval('audit_event_seq') "
    "FROM head CROSS JOIN settle CROSS JOIN generate_series(1, CAST(:n AS integer))"
).bindparams(bindparam("chain", type_=Integer()), bindparam("n", type_=Integer()))
_PG_LOCK_HEAD_COLUMNS = _PG_LOCK_HEAD.columns(
    sa_column("last_seq", BigInteger()), sa_column("last_hash", String()), sa_column("nextval", BigInteger())
)
_PG_NEXT_SEQS = (
    text("SELECT nextval('audit_event_seq') FROM generate_series(1, CAST(:n AS integer))")
    .bindparams(bindparam("n", type_=Integer()))
    .columns(sa_column("nextval", BigInteger()))
)
# SQLite: the transaction holds the database's write lock (BEGIN IMMEDIATE), so max(seq) + 1 is
# the next seq for as long as it lasts.
_SQLITE_READ_HEAD = text(
    "SELECT last_seq, last_hash, (SELECT coalesce(max(seq), 0) FROM audit_events) AS max_seq "
    "FROM audit_head WHERE id = :chain"
).bindparams(bindparam("chain", type_=Integer()))
_SQLITE_READ_HEAD_COLUMNS = _SQLITE_READ_HEAD.columns(
    sa_column("last_seq", BigInteger()), sa_column("last_hash", String()), sa_column("max_seq", BigInteger())
)
_NEW_HEAD = {"last_seq": 0, "last_hash": GENESIS_HASH}


def _create_heads(session: Session, chains: int, dialect: str) -> None:
    """The head rows of chains 0..chains-1 that do not exist yet, in one statement (once per
    database and chain count, not once per chain). Concurrent creators insert in the same order,
    so one waits for the other's commit and then finds them: no deadlock, no failure."""
    insert = postgresql.insert(_HEAD) if dialect == "postgresql" else sqlite.insert(_HEAD)
    rows = [{"id": chain, **_NEW_HEAD} for chain in range(chains)]
    session.execute(insert.values(rows).on_conflict_do_nothing(index_elements=["id"]))


def _lock_head(session: Session, entity_id: str, count: int, sealer: AuditSealer) -> tuple[list[Any], list[int]]:
    """``[chain, last chain_seq, last hash, next seq or None]`` of this transaction's chain, its head
    locked until the transaction ends, and the global seqs of the next ``count`` events."""
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is None:
        # Nothing ran yet in this session: begin now, so the lock is keyed by the transaction
        # that holds it (keyed by None, a second append would reuse a seq).
        session.connection()
        transaction = session.get_transaction()
    assert transaction is not None
    dialect = session.get_bind().dialect.name
    held = session.info.get(_HEAD_INFO)
    if held is not None and held[0] is transaction and transaction.is_active:
        head: list[Any] = held[1]
        if head[3] is None:
            return head, sorted(int(v) for v in session.connection().execute(_PG_NEXT_SEQS, {"n": count}).scalars())
        return head, list(range(head[3], head[3] + count))
    root = session.get_transaction()
    chosen = session.info.get(_CHAIN_INFO)
    chains = sealer.chain_count(session)
    if chosen is not None and chosen[0] is root and root is not None and root.is_active:
        chain = int(chosen[1])
    else:
        chain = chain_for(entity_id, chains)
        session.info[_CHAIN_INFO] = (root, chain)
    connection = session.connection()
    for attempt in range(2):
        if dialect == "postgresql":
            rows = connection.execute(_PG_LOCK_HEAD_COLUMNS, {"chain": chain, "n": count}).all()
            if rows:
                head = [chain, int(rows[0][0]), str(rows[0][1]), None]
                seqs = sorted(int(row[2]) for row in rows)
                break
        else:
            row = connection.execute(_SQLITE_READ_HEAD_COLUMNS, {"chain": chain}).one_or_none()
            if row is not None:
                head = [chain, int(row[0]), str(row[1]), int(row[2]) + 1]
                seqs = list(range(head[3], head[3] + count))
                break
        if chain == 0:  # the migrations create it: never start chain 0 over
            raise RuntimeError("audit_head row of chain 0 missing: run `dui-gateway migrate`")
        if attempt == 0:
            _create_heads(session, max(chains, chain + 1), dialect)
    else:  # pragma: no cover - the row was just created in this transaction
        raise RuntimeError(f"audit chain {chain}: head row missing")
    session.info[_HEAD_INFO] = (transaction, head)
    return head, seqs


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
    is inserted and the head moved (two statements; one on PostgreSQL). ``sealer`` defaults to the one built
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
    head, seqs = _lock_head(session, entries[0].entity_id, len(entries), sealer)
    chain, position, prev_hash = head[0], head[1], head[2]
    events = []
    for entry, detail, seq in zip(entries, details, seqs, strict=True):
        position += 1
        event = AuditEvent(
            seq=seq,
            chain=chain,
            chain_seq=position,
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
    # costs more CPU than the statements themselves.
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        params: dict[str, Any] = {"head": chain, "new_seq": position, "new_hash": prev_hash}
        for name in _EVENT_COLUMNS:  # the statement's arrays, in the table's column order
            if name == "detail":  # the JSON column's text, as SQLAlchemy's JSON type writes it
                params[name] = [None if e.detail is None else json.dumps(e.detail) for e in events]
            else:
                params[name] = [getattr(e, name) for e in events]
        connection.execute(_PG_APPEND, params)
        _moved(head, position, prev_hash, seqs)
        return events
    rows = [{key: getattr(event, key) for key in _EVENT_COLUMNS} for event in events]
    if len(rows) == 1:
        connection.execute(_INSERT_EVENT, rows[0])
    else:  # one compiled statement for any number of rows, sent as one multi-row INSERT
        connection.execute(_INSERT_EVENTS, rows).all()
    connection.execute(_MOVE_HEAD, {"chain": chain, "new_seq": position, "new_hash": prev_hash})
    _moved(head, position, prev_hash, seqs)
    return events


def _moved(head: list[Any], position: int, last_hash: str, seqs: list[int]) -> None:
    """Remember the head as this transaction just moved it (the next append reuses it)."""
    head[1], head[2] = position, last_hash
    if head[3] is not None:
        head[3] = seqs[-1] + 1


# -- cross-chain anchors ------------------------------------------------------------------------
ANCHOR_ACTION = "heads_anchored"


def record_heads(session: Session, *, actor: str, sealer: AuditSealer | None = None) -> AuditEvent:
    """Append one event recording every other chain's head (chain, position, hash) as committed
    now: from then on, rewriting or truncating those chains before the recorded positions also
    breaks this event's chain (``verify`` checks each recorded head). Only its own chain's head is
    locked; the others are read, not locked, so it can run at any time (e.g. from cron)."""
    heads = session.execute(select(_HEAD.c.id, _HEAD.c.last_seq, _HEAD.c.last_hash).order_by(_HEAD.c.id)).all()
    event = Entry(actor=actor, action=ANCHOR_ACTION, entity_type="audit", entity_id="heads",
                  detail={"heads": [[int(c), int(n), str(h)] for c, n, h in heads if n]})  # fmt: skip
    (written,) = append_many(session, [event], sealer=sealer)
    return written


# -- verify -----------------------------------------------------------------------------------
@dataclass
class VerifyResult:
    ok: bool = True
    checked: int = 0
    # chain -> (last chain_seq, last hash) as recorded by its head row
    heads: dict[int, tuple[int, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def problem(self, message: str) -> None:
        self.ok = False
        self.problems.append(message)

    @property
    def head_seq(self) -> int:
        """Chain 0's last position (the whole trail's with one chain)."""
        return self.heads.get(0, (0, GENESIS_HASH))[0]

    @property
    def head_hash(self) -> str:
        return self.heads.get(0, (0, GENESIS_HASH))[1]


@dataclass
class _ChainWalk:
    position: int = 0
    hash: str = GENESIS_HASH
    seq: int = 0
    legacy: bool = True  # chain 0 may still begin with format-1 events


def verify(session: Session, *, sealer: AuditSealer | None = None, batch_size: int = 1000) -> VerifyResult:
    """Walk every chain and its head; every inconsistency becomes one line in ``problems``,
    naming the chain, the position and the event's seq.

    Run it in one snapshot (SQLite transactions are; on PostgreSQL use REPEATABLE READ, as the
    CLI does), otherwise an append committed during the walk looks like a head mismatch.
    """
    sealer = sealer or AuditSealer.of_session(session)
    result = VerifyResult()
    walks: dict[int, _ChainWalk] = {}
    recorded: list[AuditEvent] = []  # record_heads events: checked once every chain was walked
    after: tuple[int, int] = (-1, 0)
    while True:
        stmt = (
            select(AuditEvent)
            .where(tuple_(AuditEvent.chain, AuditEvent.chain_seq) > tuple_(*after))
            .order_by(AuditEvent.chain, AuditEvent.chain_seq)
            .limit(batch_size)
        )
        batch = list(session.scalars(stmt.execution_options(populate_existing=True)))
        if not batch:
            break
        for ev in batch:
            result.checked += 1
            walk = walks.setdefault(ev.chain, _ChainWalk(legacy=ev.chain == 0))
            _check_event(result, sealer, walk, ev)
            if ev.action == ANCHOR_ACTION and ev.entity_type == "audit":
                recorded.append(ev)
        after = (batch[-1].chain, batch[-1].chain_seq)
    for ev in recorded:
        for chain, position, digest in (ev.detail or {}).get("heads", []):
            found = session.scalar(
                select(AuditEvent.hash).where(AuditEvent.chain == chain, AuditEvent.chain_seq == position)
            )
            if found != digest:
                result.problem(
                    f"chain {ev.chain} #{ev.chain_seq} (seq {ev.seq}): recorded chain {chain} at #{position}, "
                    + ("which no longer exists (truncated)" if found is None else "which now holds another hash")
                )
    heads = session.execute(
        select(AuditHead.id, AuditHead.last_seq, AuditHead.last_hash).execution_options(populate_existing=True)
    ).all()
    result.heads = {int(chain): (int(last), str(digest)) for chain, last, digest in heads}
    if 0 not in result.heads:
        result.problem("chain 0: head row is missing")
    for chain in sorted(set(result.heads) | set(walks)):
        walk = walks.get(chain, _ChainWalk())
        if chain not in result.heads:
            if chain != 0:
                result.problem(f"chain {chain}: head row is missing (the chain ends at #{walk.position})")
            continue
        last, digest = result.heads[chain]
        if last != walk.position or digest != walk.hash:
            result.problem(
                f"chain {chain} head: records #{last} but the chain ends at #{walk.position}"
                + ("" if last != walk.position else " with another hash")
                + " (events removed from or added at the tail)"
            )
    return result


def _seal_matches(sealer: AuditSealer, data: bytes, ev: AuditEvent) -> bool:
    expected = sealer.seal(data, ev.key_id)
    return expected is not None and hmac.compare_digest(expected, ev.hash)


def _check_event(result: VerifyResult, sealer: AuditSealer, walk: _ChainWalk, ev: AuditEvent) -> None:
    where = f"chain {ev.chain} #{ev.chain_seq} (seq {ev.seq})"
    expected_position = walk.position + 1
    if ev.chain_seq != expected_position:
        if ev.chain_seq > expected_position:
            missing = (
                f"#{expected_position}"
                if ev.chain_seq == expected_position + 1
                else f"#{expected_position}..{ev.chain_seq - 1}"
            )
            result.problem(f"{where}: events {missing} are missing (deleted)")
        else:
            result.problem(f"{where}: out of order")
    if ev.prev_hash != walk.hash:
        result.problem(f"{where}: prev_hash does not match the previous event's hash (inserted/deleted)")
    if ev.seq <= walk.seq:
        result.problem(f"{where}: seq does not increase along the chain (renumbered)")
    # Format 1 (written before migration 0008) is valid only at the start of chain 0, where the
    # migration put those events, with chain_seq = seq: elsewhere its hash proves nothing about
    # where the event stands (it does not cover chain and chain_seq). Tried first while chain 0
    # may still be in that prefix (one hash per event there, not two).
    in_prefix = walk.legacy and ev.chain == 0 and ev.chain_seq == ev.seq
    if not (in_prefix and _seal_matches(sealer, canonical_bytes_v1(ev), ev)):
        expected = sealer.seal(canonical_bytes(ev), ev.key_id)
        if expected is None:
            result.problem(f"{where}: sealed with unknown audit key {ev.key_id!r}")
        elif hmac.compare_digest(expected, ev.hash):
            walk.legacy = False  # format 2 from here on: no format-1 event may follow
        elif not in_prefix and _seal_matches(sealer, canonical_bytes_v1(ev), ev):
            result.problem(f"{where}: a format-1 event (before 0008) out of its place (moved or renumbered)")
        else:
            result.problem(f"{where}: content does not match its hash (event modified)")
    if sealer.keyed and ev.key_id == PLAIN_KEY_ID:
        result.problem(f"{where}: not sealed with an audit key although audit keys are configured")
    walk.position, walk.hash, walk.seq = ev.chain_seq, ev.hash, ev.seq


def iter_events(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_size: int = 500,
    after: int = 0,
    upto: int | None = None,
) -> Iterator[AuditEvent]:
    """Events in global (``seq``) order, optionally limited to ``since <= recorded_at < until``
    and ``after < seq <= upto`` (``upto``: a settled horizon, :func:`gateway.audit.horizon.settled_seq`)."""
    while True:
        stmt = select(AuditEvent).where(AuditEvent.seq > after)
        if upto is not None:
            stmt = stmt.where(AuditEvent.seq <= upto)
        if since is not None:
            stmt = stmt.where(AuditEvent.recorded_at >= _utc(since))
        if until is not None:
            stmt = stmt.where(AuditEvent.recorded_at < _utc(until))
        batch = list(session.scalars(stmt.order_by(AuditEvent.seq).limit(batch_size)))
        if not batch:
            return
        yield from batch
        after = batch[-1].seq
