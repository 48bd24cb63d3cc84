"""Intake: validate a DUI record, store it encrypted with its audit event, in one transaction.

The caller (the API request dependency) owns the Session and commits before answering
``202 Accepted``; nothing here commits. The pipeline (mapping, conformance, routing) is run
later by workers that pick up submissions in status ``received``.

Idempotency: a client may send an ``Idempotency-Key``. The same key with the same canonical
body (key order and whitespace do not matter) returns the first submission; the same key with
another body is a :class:`~gateway.errors.Conflict`. Two identical requests racing each other
are settled by the unique constraint (tenant, key): the loser re-reads the winner's row.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import Table, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway import audit, wakeup
from gateway.errors import Conflict, FieldError, Forbidden, GatewayError, ValidationFailed
from gateway.security import auth_cache
from gateway.security.auth_cache import TtlCache
from gateway.security.clients import essms_of_tenant
from gateway.security.crypto import KeyRing, encrypt, encrypt_many
from gateway.storage.codec import facts_to_json
from gateway.storage.models import ApiClient, Submission
from mappings import registry
from mappings.base import MappingFailed, RecordFacts

__all__ = [
    "Prepared",
    "StoreRequest",
    "canonical_hash",
    "field_errors",
    "json_pointer",
    "parse_json",
    "prepare",
    "store",
    "store_many",
    "submit",
]


def json_pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 pointer from path segments (``~`` and ``/`` escaped)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


_IDENTITY_KEY_RE = re.compile(
    r"name|nom|given|family|birth|naissance|matricule|nir|ins$|address|adresse|line|city|phone|telecom|email|value",
    re.IGNORECASE,
)


def _quotable(value: Any, limit: int = 2000) -> Iterator[str]:
    """Values inside a submitted object that must never be quoted: any with a digit (dates, INS,
    phone numbers) and any text under an identity-like key (names, addresses). Bounded walk."""
    stack: list[tuple[str, Any]] = [("", value)]
    seen = 0
    while stack and seen < limit:
        key, node = stack.pop()
        seen += 1
        if isinstance(node, Mapping):
            stack.extend((str(k), v) for k, v in node.items())
        elif isinstance(node, list | tuple):
            stack.extend((key, v) for v in node)
        elif isinstance(node, str | int | float) and not isinstance(node, bool):
            text = str(node)
            if len(text) >= 3 and (any(c.isdigit() for c in text) or _IDENTITY_KEY_RE.search(key)):
                yield text


def _safe_message(err: Mapping[str, Any]) -> str:
    """The error message, unless it quotes the offending value (which may be personal data).

    A field's own value quoted by its message makes the message ``invalid value``. A rule over a
    whole object (a model validator: its input is the object) must not quote the object's personal
    values either (anything with a digit, text under an identity-like key): a message that does is
    replaced. Rules in ``mappings`` say what is inconsistent without values; this is the net under them."""
    message = str(err.get("msg", "invalid value"))
    value = err.get("input")
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value)
        if len(text) >= 3 and text in message:
            return "invalid value"
    elif isinstance(value, Mapping | list) and any(text in message for text in _quotable(value)):
        return "inconsistent values (the message would quote them)"
    return message


def field_errors(errors: Sequence[Mapping[str, Any]], *, prefix: Sequence[str] = ()) -> list[FieldError]:
    """Pydantic errors as field errors: a JSON pointer, a message that never quotes the input, a code."""
    out: list[FieldError] = []
    for err in errors:
        loc = [*prefix, *(str(p) for p in err.get("loc", ()))]
        code = str(err.get("type", "invalid"))
        if code == "extra_forbidden":
            message = f"unknown field {loc[-1]!r} is not allowed here" if loc else "unknown field"
        else:
            message = _safe_message(err)
        out.append(FieldError(pointer=json_pointer(loc), message=message, code=code))
    return out


def canonical_hash(document_type: str, record: Any) -> str:
    """SHA-256 of the canonical JSON of the request (sorted keys, no insignificant whitespace)."""
    canonical = json.dumps(
        {"document_type": document_type, "record": record},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parse_json(raw: bytes) -> Any:
    """A record (or envelope) from bytes; ``ValidationFailed`` when it is not JSON (input never quoted)."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationFailed(
            "the record is not valid JSON", [FieldError("/record", "not valid JSON", "json_invalid")]
        ) from exc


def _parse(record_json: bytes | Mapping[str, Any]) -> Any:
    if isinstance(record_json, bytes | bytearray):
        return parse_json(bytes(record_json))
    return record_json


def _existing(session: Session, *, tenant_id: str, idempotency_key: str) -> Submission | None:
    stmt = select(Submission).where(Submission.tenant_id == tenant_id, Submission.idempotency_key == idempotency_key)
    return session.scalars(stmt).first()


def _replay(existing: Submission, *, request_hash: str) -> tuple[Submission, bool]:
    if existing.request_hash != request_hash:
        raise Conflict(
            "this Idempotency-Key was already used with a different request body",
            extra={"submission_id": existing.id},
        )
    return existing, False


def _essms(session: Session, tenant_id: str, cache: TtlCache[str, frozenset[str]] | None = None) -> Set[str]:
    """The tenant's ESSMS, read once per transaction (a group-committed batch stores many), or
    from the process's short-lived cache (gateway.security.auth_cache) when one is given."""
    if cache is not None:
        known = cache.get(tenant_id)
        if known is None:
            since = auth_cache.generation()
            known = frozenset(essms_of_tenant(session, tenant_id))
            cache.put(tenant_id, known, since=since)
        return known
    transaction = session.get_transaction()
    cached: tuple[Any, dict[str, set[str]]] | None = session.info.get("intake_essms")
    if cached is None or cached[0] is not transaction:
        cached = (transaction, {})
        session.info["intake_essms"] = cached
    if tenant_id not in cached[1]:
        cached[1][tenant_id] = essms_of_tenant(session, tenant_id)
    return cached[1][tenant_id]


@dataclass(frozen=True)
class Prepared:
    """A request checked without the database: what :func:`store` writes."""

    document_type: str
    facts: RecordFacts
    request_hash: str
    plaintext: bytes


def prepare(*, document_type: str, record_json: bytes | Mapping[str, Any]) -> Prepared:
    """Validate a record once (its document type's model and business rules): CPU only, no I/O.

    Raises ``ValidationFailed`` with pointers under ``/record`` or ``/document_type``.
    """
    doc = registry.get(document_type)
    if doc is None or getattr(doc, "internal", False):
        known = ", ".join(registry.public_codes()) or "none"
        raise ValidationFailed(
            f"unknown document type; accepted: {known}",
            [FieldError("/document_type", f"unknown document type (accepted: {known})", "unknown_document_type")],
        )
    raw = _parse(record_json)
    try:
        record = doc.record_model.model_validate(raw)
    except ValidationError as exc:
        errors = field_errors(exc.errors(include_url=False, include_context=False), prefix=("record",))
        raise ValidationFailed(f"the {document_type} record is not valid; see errors", errors) from None
    try:
        facts = doc.facts(record)
    except MappingFailed as exc:
        pointer = "/record" + exc.pointer if exc.pointer else "/record"
        raise ValidationFailed(
            "the record is not usable; see errors", [FieldError(pointer, str(exc), "business_rule")]
        ) from None
    return Prepared(
        document_type=document_type,
        facts=facts,
        request_hash=canonical_hash(document_type, raw),
        plaintext=json.dumps(raw, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
    )


def store(
    session: Session,
    *,
    client: ApiClient,
    prepared: Prepared,
    idempotency_key: str | None,
    keyring: KeyRing,
    correlation_id: str,
    now: datetime | None = None,
    essms_cache: TtlCache[str, frozenset[str]] | None = None,
) -> tuple[Submission, bool]:
    """Store a prepared submission in status ``received`` with its ``received`` audit event.

    Returns ``(submission, created)`` as :func:`submit`. Raises ``Forbidden`` or ``Conflict``
    before writing anything; nothing here commits. ``essms_cache``: the tenant's ESSMS as this
    process read them lately (``Runtime.auth_caches``), instead of reading them again.
    """
    facts = prepared.facts
    if facts.essms_finess not in _essms(session, client.tenant_id, essms_cache):
        raise Forbidden(
            f"ESSMS with FINESS {facts.essms_finess} does not belong to this API client's organisation",
        )
    if client.essms and facts.essms_finess not in client.essms.split():
        raise Forbidden(f"this API client is restricted to other ESSMS than FINESS {facts.essms_finess}")
    request_hash = prepared.request_hash
    # No look-up of the Idempotency-Key first: a new key (the common case) costs no statement;
    # a known one is refused by the unique constraint below, then read and answered as a replay.
    now = now or datetime.now(UTC)
    submission_id = str(uuid.uuid4())
    ciphertext, data_key_id = encrypt(
        session, tenant_id=client.tenant_id, plaintext=prepared.plaintext, keyring=keyring, aad=submission_id.encode()
    )
    submission = Submission(
        id=submission_id,
        tenant_id=client.tenant_id,
        client_id=client.id,
        document_type=prepared.document_type,
        essms_finess=facts.essms_finess,
        person_ref=facts.person_ref,
        status="received",
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        payload_ct=ciphertext,
        data_key_id=data_key_id,
        report=None,
        facts=facts_to_json(facts),
        correlation_id=correlation_id,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(submission)
            session.flush()
            wakeup.notify_work(session)  # delivered to the listening workers at the commit
    except IntegrityError:
        # The key was used before (or by a request racing this one, whose row is committed now).
        if idempotency_key is None:
            raise
        existing = _existing(session, tenant_id=client.tenant_id, idempotency_key=idempotency_key)
        if existing is None:
            raise
        return _replay(existing, request_hash=request_hash)
    audit.append(
        session,
        actor=f"client:{client.id}",
        action="received",
        entity_type="submission",
        entity_id=submission_id,
        tenant_id=client.tenant_id,
        person_ref=facts.person_ref,
        detail={
            "document_type": prepared.document_type,
            "essms_finess": facts.essms_finess,
            "correlation_id": correlation_id,
        },
    )
    return submission, True


@dataclass(frozen=True)
class StoreRequest:
    """One prepared submission for :func:`store_many` (the arguments of :func:`store`)."""

    client: ApiClient
    prepared: Prepared
    idempotency_key: str | None
    correlation_id: str


_SUBMISSIONS = cast(Table, Submission.__table__)
_SQLITE_INSERT_IGNORING = sqlite_insert(_SUBMISSIONS).on_conflict_do_nothing().returning(_SUBMISSIONS.c.id)

# PostgreSQL: the batch's columns as arrays, one row per element (unnest): the statement's text is
# the same whatever the batch size, so psycopg converts it once and the server prepares and plans
# it once (a VALUES list per batch size would be parsed, converted and planned for every batch).
# Columns the same for every row of a batch are plain parameters.
_PG_ARRAY_COLUMNS = (
    "id",
    "tenant_id",
    "client_id",
    "document_type",
    "essms_finess",
    "person_ref",
    "idempotency_key",
    "request_hash",
    "payload_ct",
    "data_key_id",
    "facts",
    "correlation_id",
)
_PG_INSERT_UNNEST = text(
    "INSERT INTO submissions (id, tenant_id, client_id, document_type, essms_finess, person_ref, status,"
    " idempotency_key, request_hash, payload_ct, data_key_id, report, facts, correlation_id, lease_owner,"
    " lease_until, created_at, updated_at)"
    " SELECT r.id, r.tenant_id, r.client_id, r.document_type, r.essms_finess, r.person_ref, :status,"
    " r.idempotency_key, r.request_hash, r.payload_ct, r.data_key_id, NULL, r.facts, r.correlation_id, NULL,"
    " NULL, :now, :now"
    " FROM unnest(CAST(:id AS varchar[]), CAST(:tenant_id AS varchar[]), CAST(:client_id AS varchar[]),"
    " CAST(:document_type AS varchar[]), CAST(:essms_finess AS varchar[]), CAST(:person_ref AS varchar[]),"
    " CAST(:idempotency_key AS varchar[]), CAST(:request_hash AS varchar[]), CAST(:payload_ct AS bytea[]),"
    " CAST(:data_key_id AS varchar[]), CAST(:facts AS json[]), CAST(:correlation_id AS varchar[]))"
    " AS r(id, tenant_id, client_id, document_type, essms_finess, person_ref, idempotency_key, request_hash,"
    " payload_ct, data_key_id, facts, correlation_id)"
    " ON CONFLICT DO NOTHING RETURNING id"
)


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]], *, now: datetime) -> set[str]:
    """One ``INSERT … ON CONFLICT DO NOTHING RETURNING id`` for all rows (status ``received``,
    created and updated ``now``); the ids inserted."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        params: dict[str, Any] = {"status": "received", "now": now}
        for name in _PG_ARRAY_COLUMNS:
            if name == "facts":  # the JSON column's text, as SQLAlchemy's JSON type writes it
                params[name] = [json.dumps(row[name]) for row in rows]
            else:
                params[name] = [row[name] for row in rows]
        inserted = set(session.execute(_PG_INSERT_UNNEST, params).scalars())
        if inserted:
            wakeup.notify_work(session)  # delivered to the listening workers at the commit
        return inserted
    if dialect == "sqlite":
        # a list of parameter sets: one multi-row INSERT ("insertmanyvalues") compiled once
        return set(session.execute(_SQLITE_INSERT_IGNORING, rows).scalars())
    raise RuntimeError(f"no batched intake for {dialect}")  # pragma: no cover - PostgreSQL and SQLite only


def store_many(
    session: Session,
    requests: Sequence[StoreRequest],
    *,
    keyring: KeyRing,
    essms_cache: TtlCache[str, frozenset[str]] | None = None,
    now: datetime | None = None,
) -> list[tuple[Submission, bool] | GatewayError]:
    """:func:`store` for several prepared submissions at once (one group-committed transaction):
    one INSERT for the submissions, one for their ``received`` audit events, one move of the
    chain's head, instead of a savepoint, two INSERTs and an UPDATE each.

    Returns, in order, ``(submission, created)`` as :func:`store` (the submission is not attached
    to the session) or the ``Forbidden`` / ``Conflict`` that request gets (it wrote nothing). A
    known Idempotency-Key (stored earlier, by a racing request, or earlier in this same batch) is
    left out by ``ON CONFLICT DO NOTHING``, then read and answered as a replay or a conflict.
    """
    now = now or datetime.now(UTC)
    out: list[tuple[Submission, bool] | GatewayError | None] = [None] * len(requests)
    accepted: list[int] = []
    for i, req in enumerate(requests):
        finess = req.prepared.facts.essms_finess
        if finess not in _essms(session, req.client.tenant_id, essms_cache):
            out[i] = Forbidden(f"ESSMS with FINESS {finess} does not belong to this API client's organisation")
        elif req.client.essms and finess not in req.client.essms.split():
            out[i] = Forbidden(f"this API client is restricted to other ESSMS than FINESS {finess}")
        else:
            accepted.append(i)
    if not accepted:
        return [o for o in out if o is not None]
    ids = {i: str(uuid.uuid4()) for i in accepted}
    by_tenant: dict[str, list[int]] = {}
    for i in accepted:
        by_tenant.setdefault(requests[i].client.tenant_id, []).append(i)
    rows: dict[int, dict[str, Any]] = {}
    for tenant_id, members in by_tenant.items():
        ciphertexts, data_key_id = encrypt_many(
            session,
            tenant_id=tenant_id,
            items=[(requests[i].prepared.plaintext, ids[i].encode()) for i in members],
            keyring=keyring,
        )
        for i, ciphertext in zip(members, ciphertexts, strict=True):
            req = requests[i]
            facts = req.prepared.facts
            rows[i] = {
                "id": ids[i],
                "tenant_id": tenant_id,
                "client_id": req.client.id,
                "document_type": req.prepared.document_type,
                "essms_finess": facts.essms_finess,
                "person_ref": facts.person_ref,
                "status": "received",
                "idempotency_key": req.idempotency_key,
                "request_hash": req.prepared.request_hash,
                "payload_ct": ciphertext,
                "data_key_id": data_key_id,
                "report": None,
                "facts": facts_to_json(facts),
                "correlation_id": req.correlation_id,
                "lease_owner": None,
                "lease_until": None,
                "created_at": now,
                "updated_at": now,
            }
    inserted = _insert_ignoring_duplicates(session, [rows[i] for i in accepted], now=now)
    entries: list[audit.Entry] = []
    for i in accepted:
        req = requests[i]
        if ids[i] in inserted:
            out[i] = (Submission(**rows[i]), True)
            entries.append(
                audit.Entry(
                    actor=f"client:{req.client.id}",
                    action="received",
                    entity_type="submission",
                    entity_id=ids[i],
                    tenant_id=req.client.tenant_id,
                    person_ref=req.prepared.facts.person_ref,
                    detail={
                        "document_type": req.prepared.document_type,
                        "essms_finess": req.prepared.facts.essms_finess,
                        "correlation_id": req.correlation_id,
                    },
                    at=now,
                )
            )
            continue
        # not inserted: its Idempotency-Key is known (nothing else can collide: the id is new)
        key = req.idempotency_key
        existing = _existing(session, tenant_id=req.client.tenant_id, idempotency_key=key) if key else None
        if existing is None:
            raise RuntimeError("a submission was not inserted and no earlier one holds its Idempotency-Key")
        try:
            out[i] = _replay(existing, request_hash=req.prepared.request_hash)
        except Conflict as exc:
            out[i] = exc
    audit.append_many(session, entries)
    return [o for o in out if o is not None]


def submit(
    session: Session,
    *,
    client: ApiClient,
    document_type: str,
    record_json: bytes | Mapping[str, Any],
    idempotency_key: str | None,
    keyring: KeyRing,
    correlation_id: str,
    now: datetime | None = None,
) -> tuple[Submission, bool]:
    """Validate and store a submission in status ``received`` with its ``received`` audit event.

    Returns ``(submission, created)``; ``created`` is False when an earlier submission with the
    same idempotency key and body is returned instead. Raises ``ValidationFailed`` (pointers under
    ``/record`` or ``/document_type``), ``Forbidden`` (ESSMS of another tenant) or ``Conflict``.
    """
    prepared = prepare(document_type=document_type, record_json=record_json)
    return store(
        session,
        client=client,
        prepared=prepared,
        idempotency_key=idempotency_key,
        keyring=keyring,
        correlation_id=correlation_id,
        now=now,
    )
