"""The pipeline: one received submission -> map -> conformance gate -> routing -> deliveries.

``process_next`` claims the oldest ``received`` submission whose series (tenant, ESSMS, person,
document type) has nothing older still waiting, with a lease, so a crashed worker's claim
expires and one series is processed in arrival order (its versions are numbered in order).

Steps, in three short transactions with the pure work in between:

1. claim: ``received`` -> ``processing`` (lease owner + lease end);
2. read: decrypt the record, find the series' previous renditions (setId/version per kind);
3. outside any transaction: validate and render (``mappings``), run the conformance gate on every
   rendition, evaluate routing;
4. write, in ONE transaction (only if we still hold the lease): either ``rejected`` + full report,
   or renditions (encrypted) + one delivery per destination + ``routed``; with audit events.

A rendition whose conformance tag cannot be checked (validator or kit unavailable) is never
sent: the submission stays ``received``, held for one lease period, then tried again
(``gate_problems`` lists what is missing, for ``/readyz``). See docs/delivery.md.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from lxml import etree
from pydantic import BaseModel, ValidationError
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from gateway import audit
from gateway.delivery.engine import advisory_series_lock
from gateway.delivery.renditions import facts_to_json, metadata_aad, metadata_to_json
from gateway.routing import Decision, RoutingTable
from gateway.security.crypto import decrypt, encrypt
from gateway.settings import Settings
from gateway.storage.models import Delivery, Submission, Tenant
from gateway.storage.models import Rendition as RenditionRow
from mappings import registry
from mappings.base import DocumentType, MappingFailed, PreviousVersion, RecordFacts, RenderContext, Rendition

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = [
    "GateUnavailable",
    "check_rendition",
    "gate_problems",
    "process_next",
    "series_key",
]

_log = structlog.get_logger(__name__)

HELD_OWNER = "held:conformance-unavailable"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def series_key(*, tenant_id: str, essms_finess: str, person_ref: str, document_type: str) -> str:
    """The ordering key of a person's document series (no personal data in clear: hashed)."""
    digest = hashlib.sha256(f"{tenant_id}|{essms_finess}|{person_ref}|{document_type}".encode()).hexdigest()
    return f"{document_type}:{digest}"


# -- conformance gate ------------------------------------------------------------------------
class GateUnavailable(Exception):
    """A conformance tag cannot be checked here (validator missing, kit absent, unknown tag)."""


_validators: dict[str, Any] = {}
_validators_lock = threading.Lock()


def _cisis_validator(settings: Settings) -> Any:
    kit = settings.cisis_kit_dir
    if kit is None or not Path(kit).is_dir():
        raise GateUnavailable("CI-SIS kit not configured (CISIS_KIT_DIR) or missing")
    try:
        module = importlib.import_module("ci_sis")
    except ImportError as exc:
        raise GateUnavailable(f"ci_sis not importable: {type(exc).__name__}") from exc
    load_validator = getattr(module, "load_validator", None)
    if load_validator is None:
        raise GateUnavailable("ci_sis.load_validator is not available")
    key = str(Path(kit).resolve())
    with _validators_lock:
        if key not in _validators:
            _validators[key] = load_validator(Path(kit))
        return _validators[key]


def _profiles_checker() -> Callable[[bytes, str], Any]:
    try:
        module = importlib.import_module("profiles")
    except ImportError as exc:
        raise GateUnavailable(f"profiles not importable: {type(exc).__name__}") from exc
    check = getattr(module, "check_rendition", None)
    if check is None:
        raise GateUnavailable("profiles.check_rendition is not available")
    return check  # type: ignore[no-any-return]


def check_rendition(rendition: Rendition, *, settings: Settings) -> list[dict[str, Any]]:
    """Run every conformance check a rendition declares; one result dict per tag.

    Raises :class:`GateUnavailable` when a tag cannot be checked in this process.
    """
    results: list[dict[str, Any]] = []
    for tag in rendition.conformance:
        scheme, _, arg = tag.partition(":")
        if scheme == "cisis" and arg:
            validator = _cisis_validator(settings)
            try:
                report = validator.validate(rendition.content, arg)
            except GateUnavailable:
                raise
            except Exception as exc:
                raise GateUnavailable(f"CI-SIS check {tag!r} could not run: {type(exc).__name__}: {exc}") from exc
            results.append({"tag": tag, "ok": bool(report.ok), "report": report.to_dict()})
        elif scheme == "fhir":
            check = _profiles_checker()
            known = getattr(importlib.import_module("profiles"), "RENDITION_TAGS", None)
            if known is not None and tag not in known:
                raise GateUnavailable(f"profiles has no check for conformance tag {tag!r}")
            try:
                report = check(rendition.content, tag)
            except Exception as exc:
                raise GateUnavailable(f"FHIR check {tag!r} could not run: {type(exc).__name__}: {exc}") from exc
            results.append({"tag": tag, "ok": bool(report.ok), "report": report.to_operation_outcome()})
        else:
            raise GateUnavailable(f"no checker for conformance tag {tag!r}")
    return results


# -- reports without the document's values ------------------------------------------------------
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
REDACTED = "[redacted]"


def _document_values(content: bytes, media_type: str) -> set[str]:
    """Every text and attribute value of a rendition (XML) or string leaf (JSON)."""
    values: set[str] = set()
    if "json" in media_type:
        try:
            stack: list[Any] = [json.loads(content)]
        except ValueError:
            return values
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, str | int | float) and not isinstance(item, bool):
                values.add(str(item).strip())
        return values
    try:
        root = etree.fromstring(content, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return values
    for element in root.iter():
        values.update(v.strip() for v in element.attrib.values())
        for text in (element.text, element.tail):
            if text and text.strip():
                values.add(text.strip())
    return values


def redact_report(report: Any, content: bytes, media_type: str) -> Any:
    """The report with every quoted value that comes from the document masked.

    Validator messages quote the offending value (an XSD pattern error quotes the birth date,
    a length error the name): rejection reports are stored in clear and returned by the API.
    """
    values = {v for v in _document_values(content, media_type) if v}

    def mask(match: re.Match[str]) -> str:
        inner = match.group(1) if match.group(1) is not None else match.group(2)
        if inner.strip() in values:
            quote = match.group(0)[0]
            return f"{quote}{REDACTED}{quote}"
        return match.group(0)

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return _QUOTED.sub(mask, item) if values else item
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [walk(v) for v in item]
        return item

    return walk(report)


def gate_problems(settings: Settings, tags: list[str] | None = None) -> list[str]:
    """What prevents the gate from checking ``tags`` (default: both families); empty when ready."""
    wanted = tags if tags is not None else ["cisis:*", "fhir:*"]
    problems: list[str] = []
    if any(t.startswith("cisis:") for t in wanted):
        try:
            _cisis_validator(settings)
        except GateUnavailable as exc:
            problems.append(str(exc))
    if any(t.startswith("fhir:") for t in wanted):
        try:
            _profiles_checker()
        except GateUnavailable as exc:
            problems.append(str(exc))
    return problems


# -- claim -----------------------------------------------------------------------------------
def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _claim(session: Session, *, worker_id: str, now: datetime, lease_seconds: float) -> str | None:
    older = aliased(Submission)
    blocked = exists().where(
        and_(
            older.tenant_id == Submission.tenant_id,
            older.person_ref == Submission.person_ref,
            older.essms_finess == Submission.essms_finess,
            older.document_type == Submission.document_type,
            older.status.in_(("received", "processing")),
            or_(
                older.created_at < Submission.created_at,
                and_(older.created_at == Submission.created_at, older.id < Submission.id),
            ),
        )
    )
    query = (
        select(Submission.id, Submission.status, Submission.lease_owner)
        .where(
            or_(
                and_(
                    Submission.status == "received",
                    or_(Submission.lease_until.is_(None), Submission.lease_until <= now),
                ),
                and_(Submission.status == "processing", Submission.lease_until <= now),
            ),
            ~blocked,
        )
        .order_by(Submission.created_at, Submission.id)
    )
    query = query.limit(1).with_for_update(skip_locked=True, of=Submission) if _is_postgres(session) else query.limit(4)
    for sub_id, status, owner in session.execute(query).all():
        owner_cond = Submission.lease_owner.is_(None) if owner is None else Submission.lease_owner == owner
        done = session.execute(
            update(Submission)
            .where(Submission.id == sub_id, Submission.status == status, owner_cond)
            .values(
                status="processing",
                lease_owner=worker_id,
                lease_until=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            return str(sub_id)
    return None


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
    unreadable: str | None = None  # why the stored record cannot be read (exception type)


@dataclass
class _Result:
    kind: str  # "rejected" | "routed" | "held"
    report: dict[str, Any]
    facts: RecordFacts | None = None
    renditions: list[Rendition] = field(default_factory=list)
    decision: Decision | None = None


def _load(session: Session, sub_id: str, runtime: Runtime) -> _Loaded:
    sub = session.get(Submission, sub_id)
    assert sub is not None
    tenant = session.get(Tenant, sub.tenant_id)
    unreadable: str | None = None
    try:
        record = decrypt(
            session,
            data_key_id=sub.data_key_id,
            ciphertext=sub.payload_ct,
            keyring=runtime.keyring,
            aad=sub.id.encode(),
        )
    except Exception as exc:
        # It will never decrypt (key gone, tampered row): left in "processing" it would be
        # re-claimed after every lease, forever, holding back the rest of its series.
        record, unreadable = b"", type(exc).__name__
    rows = session.scalars(
        select(RenditionRow)
        .join(Submission, RenditionRow.submission_id == Submission.id)
        .where(
            Submission.tenant_id == sub.tenant_id,
            Submission.essms_finess == sub.essms_finess,
            Submission.person_ref == sub.person_ref,
            Submission.document_type == sub.document_type,
            Submission.id != sub.id,
        )
        .order_by(RenditionRow.version.desc(), RenditionRow.created_at.desc())
    ).all()
    previous: dict[str, PreviousVersion] = {}
    for row in rows:
        previous.setdefault(
            row.kind, PreviousVersion(set_id=row.set_id, version=row.version, document_id=row.document_id)
        )
    return _Loaded(
        submission_id=sub.id,
        tenant_id=sub.tenant_id,
        tenant_code=tenant.code if tenant is not None else "",
        document_type=sub.document_type,
        essms_finess=sub.essms_finess,
        person_ref=sub.person_ref,
        record=record,
        previous=previous,
        report=sub.report,
        unreadable=unreadable,
    )


def _rejected(stage: str, **detail: Any) -> _Result:
    return _Result(kind="rejected", report={"outcome": "rejected", "stage": stage, **detail})


def _work(loaded: _Loaded, runtime: Runtime, now: datetime) -> _Result:
    """Map, check, route: no database, no network."""
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
        renditions = doc_type.render(
            record,
            RenderContext(
                now=now,
                submission_id=uuid.UUID(loaded.submission_id),
                id_root=runtime.settings.document_id_root,
                previous=loaded.previous,
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
    table: RoutingTable = runtime.routing if runtime.routing is not None else RoutingTable()
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
    return _Result(kind="routed", report=report, facts=facts, renditions=renditions, decision=decision)


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
    done = session.execute(
        update(Submission)
        .where(Submission.id == loaded.submission_id, Submission.status == "processing")
        .where(Submission.lease_owner == worker_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return False
    actor = f"worker:{worker_id}"

    def event(action: str, outcome: str, detail: dict[str, Any]) -> None:
        audit.append(
            session,
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

    if result.kind == "held":
        previous_reason = (loaded.report or {}).get("reason")
        if previous_reason != result.report["reason"]:  # one event per hold, not one per retry
            event("held", "failure", {"reason": result.report["reason"]})
        _log.warning("submission_held", submission_id=loaded.submission_id, reason=result.report["reason"])
        return True
    if result.kind == "rejected":
        event("rejected", "failure", {"stage": result.report["stage"]})
        return True
    assert result.decision is not None
    key = series_key(
        tenant_id=loaded.tenant_id,
        essms_finess=loaded.essms_finess,
        person_ref=loaded.person_ref,
        document_type=loaded.document_type,
    )
    advisory_series_lock(session, key)

    def sealer(rid: str) -> Callable[[bytes], tuple[bytes, str]]:
        def seal(plain: bytes) -> tuple[bytes, str]:
            return encrypt(
                session, tenant_id=loaded.tenant_id, plaintext=plain, keyring=runtime.keyring, aad=metadata_aad(rid)
            )

        return seal

    stored = []
    for rendition in result.renditions:
        rid = str(uuid.uuid4())
        ciphertext, key_id = encrypt(
            session, tenant_id=loaded.tenant_id, plaintext=rendition.content, keyring=runtime.keyring, aad=rid.encode()
        )
        session.add(
            RenditionRow(
                id=rid,
                submission_id=loaded.submission_id,
                kind=rendition.kind,
                media_type=rendition.media_type,
                document_id=rendition.document_id,
                set_id=rendition.set_id,
                version=rendition.version,
                replaces=rendition.replaces,
                content_ct=ciphertext,
                data_key_id=key_id,
                sha256=hashlib.sha256(rendition.content).hexdigest(),
                size=len(rendition.content),
                metadata_json=metadata_to_json(rendition, seal=sealer(rid)),
                created_at=now,
            )
        )
        stored.append(
            {"id": rid, "kind": rendition.kind, "document_id": rendition.document_id, "version": rendition.version}
        )
    event("mapped", "success", {"renditions": stored})
    deliveries = create_deliveries(
        session,
        runtime,
        submission_id=loaded.submission_id,
        tenant_id=loaded.tenant_id,
        series=key,
        destinations=list(result.decision.destinations),
        now=now,
    )
    event(
        "routed",
        "success",
        {
            **result.decision.to_dict(),
            "deliveries": [{"destination": d.destination, "id": d.id} for d in deliveries],
            **({"reason": "no_destination"} if not deliveries else {}),
        },
    )
    return True


def create_deliveries(
    session: Session,
    runtime: Runtime,
    *,
    submission_id: str,
    tenant_id: str,
    series: str,
    destinations: list[str],
    now: datetime,
) -> list[Delivery]:
    """One pending delivery per destination, next in the series (call under the series lock)."""
    last = session.scalar(select(func.max(Delivery.seq)).where(Delivery.series_key == series)) or 0
    table: RoutingTable = runtime.routing if runtime.routing is not None else RoutingTable()
    out = []
    for name in destinations:
        dest = table.config.destinations.get(name)
        row = Delivery(
            id=str(uuid.uuid4()),
            submission_id=submission_id,
            tenant_id=tenant_id,
            destination=name,
            connector=dest.connector if dest is not None else name,
            series_key=series,
            seq=last + 1,
            status="pending",
            next_attempt_at=now,
            attempt_count=0,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        out.append(row)
    session.flush()
    return out


def process_next(runtime: Runtime, *, worker_id: str, clock: Callable[[], datetime] = _utcnow) -> bool:
    """Claim and process one received submission; False when there was nothing to do."""
    settings = runtime.settings
    with runtime.session_factory() as session, session.begin():
        sub_id = _claim(session, worker_id=worker_id, now=clock(), lease_seconds=settings.lease_seconds)
    if sub_id is None:
        return False
    with runtime.session_factory() as session, session.begin():
        loaded = _load(session, sub_id, runtime)
    now = clock()
    result = _work(loaded, runtime, now)
    with runtime.session_factory() as session, session.begin():
        written = _write(session, runtime, loaded, result, worker_id=worker_id, now=now)
    if not written:
        _log.warning("submission_lease_lost", submission_id=sub_id, worker=worker_id)
    else:
        _log.info("submission_processed", submission_id=sub_id, outcome=result.kind)
    return True
