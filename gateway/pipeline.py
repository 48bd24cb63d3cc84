"""The pipeline: one received submission -> map -> conformance gate -> routing -> deliveries.

``process_next`` claims the oldest ``received`` submission whose series (tenant, ESSMS, person,
document type) has nothing older still waiting, with a lease, so a crashed worker's claim
expires and one series is processed in arrival order (its versions are numbered in order).

Steps, in two short transactions with the pure work in between:

1. claim: ``received`` -> ``processing`` (lease owner + lease end), and in the same transaction
2. read: decrypt the record, find the series' previous renditions (setId/version per kind);
3. outside any transaction: validate and render (``mappings``), run the conformance gate on every
   rendition, evaluate routing;
4. write, in ONE transaction (only if we still hold the lease): either ``rejected`` + full report,
   or renditions (encrypted) + one delivery per destination + ``routed``; with audit events.

A rendition whose conformance tag cannot be checked (validator or kit unavailable, see
:mod:`gateway.conformance`), or a record that cannot be decrypted for want of a key, is never
rejected for it: the submission stays ``received``, held for one lease period, then tried again.
Only content faults (invalid record, mapping refusal, failed conformance, a stored record that no
longer authenticates) reject. See docs/delivery.md.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import structlog
from pydantic import BaseModel, ValidationError
from sqlalchemy import DateTime, Row, String, Table, and_, bindparam, exists, literal, or_, select, update
from sqlalchemy.orm import Session, aliased

from gateway import audit, persons, routing_store
from gateway.conformance import GateUnavailable, check_rendition, redact_report
from gateway.delivery import outbox
from gateway.errors import GatewayError
from gateway.routing import Decision, RoutingTable
from gateway.security.crypto import DecryptionError, KeyUnavailable, decrypt, encrypt
from gateway.services import stays
from gateway.storage.codec import facts_to_json, metadata_aad, metadata_to_json
from gateway.storage.db import run_unit
from gateway.storage.lookups import tenant_code
from gateway.storage.models import Delivery, Submission
from gateway.storage.models import Rendition as RenditionRow
from mappings import registry
from mappings.base import DocumentType, MappingFailed, PreviousVersion, RecordFacts, RenderContext, Rendition

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = ["HELD_OWNER", "process_next", "series_key"]

_log = structlog.get_logger(__name__)

HELD_OWNER = "held:conformance-unavailable"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def series_key(*, tenant_id: str, essms_finess: str, person_ref: str, document_type: str) -> str:
    """The ordering key of a person's document series (no personal data in clear: hashed)."""
    digest = hashlib.sha256(f"{tenant_id}|{essms_finess}|{person_ref}|{document_type}".encode()).hexdigest()
    return f"{document_type}:{digest}"


# -- claim -----------------------------------------------------------------------------------
def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _lit(value: str) -> Any:
    # rendered into the SQL text so that the planner can prove the partial index's predicate
    return literal(value, literal_execute=True)


_QUEUED = ("received", "processing")
_SUBMISSIONS = cast(Table, Submission.__table__)
_TIMESTAMP = DateTime(timezone=True)
# what the claim returns of the submission: what the pipeline reads
_CLAIMED_COLUMNS = (
    "id",
    "tenant_id",
    "document_type",
    "essms_finess",
    "person_ref",
    "payload_ct",
    "data_key_id",
    "report",
    "created_at",
)


@functools.cache
def _claim_statement(postgres: bool) -> Any:
    """The submission claim, built once per dialect (building the aliased query costs more CPU
    than running it); executed with ``now``, ``worker_id`` and ``lease_until`` bound."""
    cand = aliased(Submission)
    older = aliased(Submission)
    queued = [_lit(s) for s in _QUEUED]
    now = bindparam("now", type_=_TIMESTAMP)
    blocked = exists().where(
        and_(
            older.tenant_id == cand.tenant_id,
            older.person_ref == cand.person_ref,
            older.essms_finess == cand.essms_finess,
            older.document_type == cand.document_type,
            older.status.in_(queued),
            or_(
                older.created_at < cand.created_at,
                and_(older.created_at == cand.created_at, older.id < cand.id),
            ),
        )
    )
    candidate = (
        select(cand.id)
        .where(
            cand.status.in_(queued),
            or_(
                and_(cand.status == _lit("received"), or_(cand.lease_until.is_(None), cand.lease_until <= now)),
                and_(cand.status == _lit("processing"), cand.lease_until <= now),
            ),
            ~blocked,
        )
        .order_by(cand.created_at, cand.id)
        .limit(1)
    )
    if postgres:
        candidate = candidate.with_for_update(skip_locked=True, of=cand)
    return (
        update(_SUBMISSIONS)
        .where(_SUBMISSIONS.c.id == candidate.scalar_subquery())
        .values(
            status="processing",
            lease_owner=bindparam("worker_id", type_=String(64)),
            lease_until=bindparam("lease_until", type_=_TIMESTAMP),
            updated_at=now,
        )
        .returning(*(_SUBMISSIONS.c[name] for name in _CLAIMED_COLUMNS))
    )


def _claim_row(session: Session, *, worker_id: str, now: datetime, lease_seconds: float) -> Row[Any] | None:
    """Lease the oldest claimable queued submission, in one statement (UPDATE … RETURNING).

    The candidate walks ``ix_submissions_queue`` in order (no sort of the queue); "an older one of
    the same series is queued" probes ``ix_submissions_queue_series``. PostgreSQL: the candidate
    is locked with SKIP LOCKED (rows other workers hold are passed over); SQLite: the transaction
    holds the database write lock (BEGIN IMMEDIATE). A plain row of what the pipeline reads
    (:data:`_CLAIMED_COLUMNS`), not an ORM object.
    """
    params = {"now": now, "worker_id": worker_id, "lease_until": now + timedelta(seconds=lease_seconds)}
    return session.connection().execute(_claim_statement(_is_postgres(session)), params).first()


def _claim(session: Session, *, worker_id: str, now: datetime, lease_seconds: float) -> str | None:
    """:func:`_claim_row`, giving the claimed submission's id."""
    sub = _claim_row(session, worker_id=worker_id, now=now, lease_seconds=lease_seconds)
    return sub.id if sub is not None else None


# -- work ------------------------------------------------------------------------------------
@dataclass
class _Loaded:
    submission_id: str
    tenant_id: str
    tenant_code: str
    document_type: str
    essms_finess: str
    person_ref: str
    record: bytes
    previous: dict[str, PreviousVersion]
    report: dict[str, Any] | None
    series: dict[str, PreviousVersion] = field(default_factory=dict)
    unreadable: str | None = None  # why the stored record cannot be read (exception type)
    unavailable: str | None = None  # a key is missing here: hold, do not reject
    # consent families refused through stored sharing choices (gateway.persons), added to the record's
    stored_refusals: frozenset[str] = frozenset()
    received_at: datetime | None = None  # orders a person's TDDUI exports (their stay events' version)


@dataclass
class _Result:
    kind: str  # "rejected" | "routed" | "held"
    report: dict[str, Any]
    facts: RecordFacts | None = None
    renditions: list[Rendition] = field(default_factory=list)
    decision: Decision | None = None
    record: BaseModel | None = None  # the validated record (its person's qualified INS is indexed)


# a version "reached" a destination when one of its deliveries is delivered or still on its way
_REACHING = ("pending", "in_flight", "sent", "delivered", "unconfirmed")


_RENDITION_ROWS = cast(Table, RenditionRow.__table__)
_DELIVERY_ROWS = cast(Table, Delivery.__table__)
# the statements of _previous_versions, built once (bound: the series' fields, or ``earlier``)
_SERIES_RENDITIONS = (
    select(
        _RENDITION_ROWS.c.kind,
        _RENDITION_ROWS.c.set_id,
        _RENDITION_ROWS.c.version,
        _RENDITION_ROWS.c.document_id,
        _RENDITION_ROWS.c.created_at,
        _RENDITION_ROWS.c.submission_id,
    )
    .join(_SUBMISSIONS, _RENDITION_ROWS.c.submission_id == _SUBMISSIONS.c.id)
    .where(
        _SUBMISSIONS.c.tenant_id == bindparam("tenant_id"),
        _SUBMISSIONS.c.essms_finess == bindparam("essms_finess"),
        _SUBMISSIONS.c.person_ref == bindparam("person_ref"),
        _SUBMISSIONS.c.document_type == bindparam("document_type"),
        _SUBMISSIONS.c.id != bindparam("submission_id"),
    )
)
_REACHED = (
    select(_DELIVERY_ROWS.c.submission_id)
    .where(
        _DELIVERY_ROWS.c.submission_id.in_(bindparam("earlier", expanding=True)),
        _DELIVERY_ROWS.c.status.in_(_REACHING),
    )
    .distinct()
)
_KEPT = select(_SUBMISSIONS.c.id).where(
    _SUBMISSIONS.c.id.in_(bindparam("earlier", expanding=True)),
    _SUBMISSIONS.c.status == "routed",
    ~exists().where(_DELIVERY_ROWS.c.submission_id == _SUBMISSIONS.c.id),
)


def _previous_versions(
    session: Session, sub: Submission | Row[Any]
) -> tuple[dict[str, PreviousVersion], dict[str, PreviousVersion]]:
    """Per kind and per setId: the highest version issued and the version a new one replaces.

    Versions are counted from every earlier rendition of the person's series (numbers are never
    reused), but a new version only replaces one that reached a destination or is on its way, or
    that the gateway keeps with no destination to send it to: not one of a cancelled submission,
    nor one whose every delivery was dead-lettered, failed or cancelled. (What *each* destination
    holds is the connectors' business: ``Envelope.held``.)
    """
    connection = session.connection()
    params = {
        "tenant_id": sub.tenant_id,
        "essms_finess": sub.essms_finess,
        "person_ref": sub.person_ref,
        "document_type": sub.document_type,
        "submission_id": sub.id,
    }
    rows = connection.execute(_SERIES_RENDITIONS, params).all()
    if not rows:
        return {}, {}
    earlier = sorted({r.submission_id for r in rows})
    reached = set(connection.execute(_REACHED, {"earlier": earlier}).scalars())
    # a version routed to no destination is kept by the gateway and served by its FHIR facade:
    # the DUI vendor holds it, so a newer version replaces it
    reached.update(connection.execute(_KEPT, {"earlier": earlier}).scalars())
    highest: dict[str, int] = {}
    replaceable: dict[str, tuple[int, str]] = {}
    newest_of_kind: dict[str, tuple[int, datetime, str]] = {}
    for kind, set_id, version, document_id, created_at, submission_id in rows:
        highest[set_id] = max(highest.get(set_id, 0), version)
        if submission_id in reached and version >= replaceable.get(set_id, (0, ""))[0]:
            replaceable[set_id] = (version, document_id)
        stamp = (version, outbox.as_utc(created_at), set_id)
        if kind not in newest_of_kind or stamp[:2] > newest_of_kind[kind][:2]:
            newest_of_kind[kind] = stamp
    series = {
        set_id: PreviousVersion(set_id=set_id, version=top, document_id=replaceable.get(set_id, (0, None))[1])
        for set_id, top in highest.items()
    }
    by_kind = {kind: series[set_id] for kind, (_v, _t, set_id) in newest_of_kind.items()}
    return by_kind, series


def _load(session: Session, sub: Row[Any], runtime: Runtime) -> _Loaded:
    code = tenant_code(session, sub.tenant_id)
    unreadable: str | None = None
    unavailable: str | None = None
    try:
        record = decrypt(
            session,
            data_key_id=sub.data_key_id,
            ciphertext=sub.payload_ct,
            keyring=runtime.keyring,
            aad=sub.id.encode(),
        )
    except KeyUnavailable as exc:
        # the gateway's configuration (a master key not loaded here): hold, try again later
        record, unavailable = b"", str(exc)
    except DecryptionError as exc:
        # The stored record no longer authenticates (tampered, corrupted): it never will. Left in
        # "processing" it would be re-claimed after every lease, holding back its series.
        record, unreadable = b"", type(exc).__name__
    previous, series = _previous_versions(session, sub)
    refusals = persons.stored_refusals(session, sub.tenant_id, sub.person_ref)
    return _Loaded(
        submission_id=sub.id,
        tenant_id=sub.tenant_id,
        tenant_code=code or "",
        document_type=sub.document_type,
        essms_finess=sub.essms_finess,
        person_ref=sub.person_ref,
        record=record,
        previous=previous,
        report=sub.report,
        series=series,
        unreadable=unreadable,
        unavailable=unavailable,
        stored_refusals=refusals,
        received_at=outbox.as_utc(sub.created_at),
    )


def _rejected(stage: str, **detail: Any) -> _Result:
    return _Result(kind="rejected", report={"outcome": "rejected", "stage": stage, **detail})


def _work(loaded: _Loaded, runtime: Runtime, now: datetime) -> _Result:
    """Map, check, route: no database, no network."""
    if loaded.unavailable is not None:
        return _Result(kind="held", report={"outcome": "held", "stage": "load", "reason": loaded.unavailable})
    if loaded.unreadable is not None:
        _log.error("submission_unreadable", submission_id=loaded.submission_id, error_type=loaded.unreadable)
        return _rejected(
            "load", error={"message": f"the stored record cannot be read ({loaded.unreadable})", "pointer": ""}
        )
    doc_type: DocumentType | None = registry.get(loaded.document_type)
    if doc_type is None:
        return _rejected("mapping", error={"message": f"unknown document type {loaded.document_type!r}", "pointer": ""})
    try:
        record: BaseModel = doc_type.record_model.model_validate_json(loaded.record)
    except ValidationError as exc:
        errors = [
            {"pointer": "/" + "/".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in exc.errors(include_input=False, include_url=False)
        ]
        return _rejected("validation", errors=errors)
    try:
        facts = doc_type.facts(record)
        if loaded.stored_refusals - facts.sharing_refused_with:
            facts = dataclasses.replace(
                facts, sharing_refused_with=frozenset(facts.sharing_refused_with | loaded.stored_refusals)
            )
        renditions = doc_type.render(
            record,
            RenderContext(
                now=now,
                submission_id=uuid.UUID(loaded.submission_id),
                id_root=runtime.settings.document_id_root,
                previous=loaded.previous,
                series=loaded.series,
            ),
        )
    except MappingFailed as exc:
        return _rejected("mapping", error={"message": str(exc), "pointer": exc.pointer})
    except Exception as exc:
        # A bug in a mapping must not make the submission loop forever: reject it (an operator can
        # replay it once fixed). Only the type is kept: the message may quote the record.
        _log.error("mapping_crashed", submission_id=loaded.submission_id, error_type=type(exc).__name__)
        return _rejected(
            "mapping", error={"message": f"internal mapping error ({type(exc).__name__})", "pointer": ""}, internal=True
        )
    if not renditions:
        return _rejected("mapping", error={"message": "the mapping produced no document", "pointer": ""})
    checks: list[dict[str, Any]] = []
    try:
        for rendition in renditions:
            results = check_rendition(rendition, settings=runtime.settings)
            if not all(r["ok"] for r in results):
                results = redact_report(results, rendition.content, rendition.media_type)
            checks.append(
                {
                    "kind": rendition.kind,
                    "document_id": rendition.document_id,
                    "ok": all(r["ok"] for r in results),
                    "checks": results,
                }
            )
    except GateUnavailable as exc:
        return _Result(kind="held", report={"outcome": "held", "stage": "conformance", "reason": str(exc)})
    if not all(c["ok"] for c in checks):
        return _rejected("conformance", renditions=checks)
    table: RoutingTable = routing_store.current_table(runtime)  # rules changed at run time apply here
    decision = table.decide(
        tenant_code=loaded.tenant_code, tenant_id=loaded.tenant_id, document_type=loaded.document_type, facts=facts
    )
    conformance_summary = [
        {"kind": c["kind"], "document_id": c["document_id"], "ok": True, "tags": [r["tag"] for r in c["checks"]]}
        for c in checks
    ]
    report: dict[str, Any] = {
        "outcome": "routed",
        "conformance": conformance_summary,
        "routing": decision.to_dict(),
    }
    if not decision.destinations:
        report["routing"]["reason"] = "no_destination"
    return _Result(kind="routed", report=report, facts=facts, renditions=renditions, decision=decision, record=record)


def _write(
    session: Session, runtime: Runtime, loaded: _Loaded, result: _Result, *, worker_id: str, now: datetime
) -> bool:
    """Record the result, in the caller's transaction, if the lease is still ours."""
    # Conditional UPDATE first: it takes the row lock and proves we still own the claim.
    if result.kind == "held":
        values: dict[str, Any] = {
            "status": "received",
            "lease_owner": HELD_OWNER,
            "lease_until": now + timedelta(seconds=runtime.settings.lease_seconds),
            "report": result.report,
            "updated_at": now,
        }
    else:
        values = {
            "status": result.kind,
            "lease_owner": None,
            "lease_until": None,
            "report": result.report,
            "updated_at": now,
        }
        if result.facts is not None:
            values["facts"] = facts_to_json(result.facts)
    # a Core statement on the session's connection: no ORM object of this row is in the session
    done = session.connection().execute(
        _SUBMISSIONS.update()
        .where(
            _SUBMISSIONS.c.id == loaded.submission_id,
            _SUBMISSIONS.c.status == "processing",
            _SUBMISSIONS.c.lease_owner == worker_id,
        )
        .values(**values)
    )
    if done.rowcount != 1:
        return False
    actor = f"worker:{worker_id}"
    events: list[tuple[str, str, dict[str, Any]]] = []  # appended last: the audit head is the last lock

    if result.kind == "held":
        previous_reason = (loaded.report or {}).get("reason")
        if previous_reason != result.report["reason"]:  # one event per hold, not one per retry
            events.append(("held", "failure", {"reason": result.report["reason"]}))
        _log.warning("submission_held", submission_id=loaded.submission_id, stage=result.report.get("stage"))
    elif result.kind == "rejected":
        events.append(("rejected", "failure", {"stage": result.report["stage"]}))
    else:
        assert result.decision is not None
        key = series_key(
            tenant_id=loaded.tenant_id,
            essms_finess=loaded.essms_finess,
            person_ref=loaded.person_ref,
            document_type=loaded.document_type,
        )
        stored = _store_renditions(session, runtime, loaded, result.renditions, now=now)
        if result.record is not None:
            persons.index_record(
                session,
                tenant_id=loaded.tenant_id,
                essms_finess=loaded.essms_finess,
                person_ref=loaded.person_ref,
                record=result.record,
            )
        events.append(("mapped", "success", {"renditions": stored}))
        table: RoutingTable = runtime.routing if runtime.routing is not None else RoutingTable()
        targets = []
        for name in result.decision.destinations:
            dest = table.config.destinations.get(name)
            targets.append((name, dest.connector if dest is not None else name))
        deliveries = outbox.enqueue(
            session,
            submission_id=loaded.submission_id,
            tenant_id=loaded.tenant_id,
            series=key,
            destinations=targets,
            now=now,
        )
        if loaded.document_type == stays.TDDUI_SOURCE and result.record is not None:
            _record_stays(session, runtime, loaded, result.record, actor=actor)
        events.append(
            (
                "routed",
                "success",
                {
                    **result.decision.to_dict(),
                    "deliveries": [{"destination": d.destination, "id": d.id} for d in deliveries],
                    **({"reason": "no_destination"} if not deliveries else {}),
                },
            )
        )
    audit.append_many(
        session,
        [
            audit.Entry(
                actor=actor,
                action=action,
                entity_type="submission",
                entity_id=loaded.submission_id,
                outcome=outcome,
                tenant_id=loaded.tenant_id,
                person_ref=loaded.person_ref,
                detail=detail,
                at=now,
            )
            for action, outcome, detail in events
        ],
    )
    return True


def _record_stays(session: Session, runtime: Runtime, loaded: _Loaded, record: BaseModel, *, actor: str) -> None:
    """An accepted TDDUI export also feeds the indicators: its stays become stay events
    (:func:`gateway.services.stays.record_tddui_export`), versioned by the submission's reception
    time so a later export corrects an earlier one. In a savepoint: a refusal (an event id and
    version already used with other content, an ESSMS of another tenant) is logged without content
    and never blocks the export's delivery (docs/indicators.md)."""
    received = loaded.received_at or datetime.now(UTC)
    try:
        with session.begin_nested():
            stays.record_tddui_export(
                session,
                tenant_id=loaded.tenant_id,
                record=record,
                version=max(1, int(received.timestamp())),
                keyring=runtime.keyring,
                actor=actor,
            )
    except GatewayError as exc:
        _log.warning("tddui_stay_events_refused", submission_id=loaded.submission_id, error_type=type(exc).__name__)


def _store_renditions(
    session: Session, runtime: Runtime, loaded: _Loaded, renditions: list[Rendition], *, now: datetime
) -> list[dict[str, Any]]:
    """Encrypt and add the renditions (content AAD = row id; sealed metadata AAD = row id + ':metadata')."""

    def sealer(rid: str) -> Callable[[bytes], tuple[bytes, str]]:
        def seal(plain: bytes) -> tuple[bytes, str]:
            return encrypt(
                session, tenant_id=loaded.tenant_id, plaintext=plain, keyring=runtime.keyring, aad=metadata_aad(rid)
            )

        return seal

    stored = []
    rows = []
    for rendition in renditions:
        rid = str(uuid.uuid4())
        ciphertext, key_id = encrypt(
            session, tenant_id=loaded.tenant_id, plaintext=rendition.content, keyring=runtime.keyring, aad=rid.encode()
        )
        rows.append(
            {
                "id": rid,
                "submission_id": loaded.submission_id,
                "kind": rendition.kind,
                "media_type": rendition.media_type,
                "document_id": rendition.document_id,
                "set_id": rendition.set_id,
                "version": rendition.version,
                "replaces": rendition.replaces,
                "content_ct": ciphertext,
                "data_key_id": key_id,
                "sha256": hashlib.sha256(rendition.content).hexdigest(),
                "size": len(rendition.content),
                "metadata_json": metadata_to_json(rendition, seal=sealer(rid)),
                "created_at": now,
            }
        )
        stored.append(
            {"id": rid, "kind": rendition.kind, "document_id": rendition.document_id, "version": rendition.version}
        )
    if rows:
        session.flush()  # a data key the encryption created comes first (the rows refer to it)
        # one executemany of a Core insert: no ORM objects for rows this transaction only writes
        session.connection().execute(_RENDITION_ROWS.insert(), rows)
    return stored


def process_next(runtime: Runtime, *, worker_id: str, clock: Callable[[], datetime] = _utcnow) -> bool:
    """Claim and process one received submission; False when there was nothing to do."""
    settings = runtime.settings
    # claim and read in one transaction: the row is ours (lease) once it commits
    with runtime.session_factory() as session, session.begin():
        sub = _claim_row(session, worker_id=worker_id, now=clock(), lease_seconds=settings.lease_seconds)
        if sub is None:
            return False
        sub_id = sub.id
        loaded = _load(session, sub, runtime)
    now = clock()
    result = _work(loaded, runtime, now)
    # the document work is done: a database connection lost meanwhile (a restart) must not waste it
    written = run_unit(
        runtime.session_factory,
        lambda session: _write(session, runtime, loaded, result, worker_id=worker_id, now=now),
    )
    if not written:
        _log.warning("submission_lease_lost", submission_id=sub_id, worker=worker_id)
    else:
        _log.info("submission_processed", submission_id=sub_id, outcome=result.kind)
    return True
