"""``/fhir/r4``: a read-only FHIR R4 facade for DUI vendors.

What the gateway produced for the caller's organisation, as FHIR a stock client can browse:

- ``DocumentReference`` (read, search by ``patient``, ``type``, ``status``, ``_count``) built from
  the stored renditions: ``status`` is ``current`` for the latest version of a document series
  (setId) and ``superseded`` otherwise; ``type`` is the document type's own ``type_code``
  (:class:`mappings.DocumentType`, no table here), format/facility codes come from the stored
  exchange metadata; ``subject`` is the person's reference in the DUI; ``content.attachment.url`` points
  to the ``Binary``;
- ``Binary`` (read): the decrypted document, audited as a ``read``;
- ``AuditEvent`` (search): the organisation's audit trail;
- ``$validate`` (POST): a resource checked by :func:`profiles.validate`, answered as OperationOutcome;
- ``/metadata``: the CapabilityStatement listing exactly the above.

Errors are ``OperationOutcome`` documents (``application/fhir+json``), including 401/403/404.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, cast
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql import Select

from gateway import audit
from gateway.api.bodies import parse_json_body
from gateway.api.deps import Caller, RuntimeDep, SessionDep, require_scope
from gateway.api.params import MAX_INT64
from gateway.errors import FieldError, NotFound, ValidationFailed
from gateway.services import queries
from gateway.storage.models import Delivery, Rendition, Submission
from mappings import Code, registry
from profiles.api import router as validate_router

__all__ = ["FHIR_JSON", "PREFIX", "error_response", "fix_openapi", "router"]

PREFIX = "/fhir/r4"
FHIR_JSON = "application/fhir+json"
LOINC_OID = "2.16.840.1.113883.6.1"
DOC_TYPE_SYSTEM = "urn:dui-gateway:document-type"
PERSON_SYSTEM = "urn:dui-gateway:person"
STATUS_SYSTEM = "http://hl7.org/fhir/document-reference-status"
PAGE_PARAM = "_page"
MAX_COUNT = 100
NO_STORE = {"Cache-Control": "no-store"}


_read_scope = require_scope("fhir:read")


def _tenant_reader(caller: Annotated[Caller, Depends(_read_scope)]) -> str:
    """The tenant whose documents the caller may read: an API client with scope 'read', exactly as
    ``/v1``; the administrator token is refused (403): it administers, it does not read clinical content."""
    return caller.tenant()


Reader = Annotated[Caller, Depends(_read_scope)]
TenantId = Annotated[str, Depends(_tenant_reader)]
Auditor = Annotated[Caller, Depends(require_scope("audit:read", "admin"))]


async def _strict_json_body(request: Request) -> None:
    """Refuse what ``$validate`` must never parse: not UTF-8, NaN, duplicate members, nesting deeper
    than :data:`~gateway.api.bodies.MAX_JSON_DEPTH` (400 OperationOutcome). The body is cached on the
    request, so the operation reads the same bytes."""
    parse_json_body(await request.body())


router = APIRouter(prefix=PREFIX, tags=["fhir"])
router.include_router(
    validate_router, dependencies=[Depends(require_scope("fhir:read", "admin")), Depends(_strict_json_body)]
)

_OUTCOME_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    422: "invalid",
}


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def operation_outcome(status: int, detail: str, errors: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """An OperationOutcome for an HTTP error: one issue per field error (naming the parameter in
    ``expression``), else one issue with the detail."""
    code = _OUTCOME_CODES.get(status, "exception" if status >= 500 else "processing")
    severity = "fatal" if status >= 500 else "error"
    issues: list[dict[str, Any]] = []
    for err in errors:
        where = err.get("parameter") or err.get("pointer") or ""
        issue: dict[str, Any] = {
            "severity": severity,
            "code": code,
            "diagnostics": f"{where}: {err.get('detail', 'invalid value')}" if where else str(err.get("detail")),
        }
        if where:
            issue["expression"] = [where]
        issues.append(issue)
    if not issues:
        issues.append({"severity": severity, "code": code, "diagnostics": detail})
    return {"resourceType": "OperationOutcome", "issue": issues}


def error_response(
    request: Request, status: int, title: str, detail: str, errors: Sequence[dict[str, Any]] = ()
) -> Response:
    """Renderer the app factory registers for ``PREFIX``: errors as OperationOutcome.

    A search or read parameter FastAPI refuses (422 on ``/v1``) is a 400 here, as FHIR expects,
    with the parameter named in the issue's ``expression``."""
    if status == 422 and errors and all(e.get("parameter") for e in errors):
        status = 400
    body = operation_outcome(status, detail or title, errors)
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


def _fhir(body: dict[str, Any], status: int = 200, *, store: bool = False) -> JSONResponse:
    """A FHIR JSON answer; ``no-store`` unless ``store`` (documents and lists of persons are never cached)."""
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=None if store else NO_STORE)


# --------------------------------------------------------------------------------------------
# CapabilityStatement
# --------------------------------------------------------------------------------------------


def _search_param(name: str, kind: str, doc: str) -> dict[str, str]:
    return {"name": name, "type": kind, "documentation": doc}


@router.get("/metadata", response_class=JSONResponse)
def capability_statement(request: Request) -> JSONResponse:
    """The CapabilityStatement of the facade (FHIR 4.0.1, JSON, read-only)."""
    base = str(request.base_url).rstrip("/") + PREFIX
    return _fhir(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-11-23",
            "publisher": "dui-gateway",
            "kind": "instance",
            "software": {"name": "dui-gateway FHIR facade"},
            "implementation": {"description": "Read-only view of the documents produced by dui-gateway", "url": base},
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "documentation": (
                        "Bearer API key or OAuth2 access token (POST /oauth/token): scope 'fhir:read'; "
                        "'audit:read' or 'admin' for AuditEvent."
                    ),
                    "security": {
                        "service": [
                            {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                        "code": "OAuth",
                                    }
                                ],
                                "text": "Bearer API key",
                            }
                        ]
                    },
                    "resource": [
                        {
                            "type": "DocumentReference",
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [
                                _search_param("patient", "reference", "The person's identifier in the DUI"),
                                _search_param("type", "token", "Document type, e.g. http://loinc.org|80788-3"),
                                _search_param("status", "token", "current | superseded"),
                                _search_param("_count", "number", f"Page size (at most {MAX_COUNT}; 0: total only)"),
                            ],
                        },
                        {"type": "Binary", "interaction": [{"code": "read"}]},
                        {
                            "type": "AuditEvent",
                            "interaction": [{"code": "search-type"}],
                            "searchParam": [_search_param("_count", "number", f"Page size (at most {MAX_COUNT})")],
                        },
                    ],
                    "operation": [
                        {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
                    ],
                }
            ],
        },
        store=True,
    )


# --------------------------------------------------------------------------------------------
# DocumentReference
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    rendition: Rendition
    submission: Submission
    latest: int


def _system_uri(oid: str) -> str:
    return "http://loinc.org" if oid == LOINC_OID else f"urn:oid:{oid}"


def _coding(code: dict[str, Any] | None) -> dict[str, Any] | None:
    if not code or not code.get("code"):
        return None
    out = {"system": _system_uri(str(code.get("system", ""))), "code": code["code"]}
    if code.get("display"):
        out["display"] = code["display"]
    return out


def _code_dict(code: Code | None) -> dict[str, Any] | None:
    return None if code is None else {"code": code.code, "system": code.system, "display": code.display}


def _type(document_type: str) -> dict[str, Any]:
    """The document type's own XDS typeCode (the type of all its renditions), else the gateway's code."""
    doc = registry.get(document_type)
    coding = _coding(_code_dict(doc.type_code if doc is not None else None))
    if coding is not None:
        return {"coding": [coding], "text": coding.get("display", coding["code"])}
    return {"coding": [{"system": DOC_TYPE_SYSTEM, "code": document_type}], "text": document_type}


def _master_identifier(document_id: str) -> dict[str, str]:
    if document_id.startswith("urn:"):
        return {"system": "urn:ietf:rfc:3986", "value": document_id}
    root, _, extension = document_id.partition("^")
    if extension:
        return {"system": f"urn:oid:{root}", "value": extension}
    return {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{root}"}


DELIVERY_EXTENSION = "urn:dui-gateway:fhir:extension:delivery"


def _deliveries_of(session: Session, rows: list[_Row]) -> dict[str, list[Delivery]]:
    """Each shown submission's deliveries with their receipts (one query each, not one per row)."""
    ids = {r.submission.id for r in rows}
    if not ids:
        return {}
    found: dict[str, list[Delivery]] = {}
    for d in session.scalars(
        select(Delivery)
        .where(Delivery.submission_id.in_(ids))
        .options(selectinload(Delivery.receipts))
        .order_by(Delivery.created_at, Delivery.id)
    ):
        found.setdefault(d.submission_id, []).append(d)
    return found


def _delivery_extension(d: Delivery) -> dict[str, Any]:
    """Where the document went and what the destination answered (status, its id, receipts)."""
    parts: list[dict[str, Any]] = [
        {"url": "destination", "valueString": d.destination},
        {"url": "status", "valueCode": d.status},
    ]
    if d.remote_id:
        parts.append({"url": "remoteId", "valueString": d.remote_id})
    if d.delivered_at is not None:
        parts.append({"url": "delivered", "valueDateTime": queries.as_utc(d.delivered_at).isoformat()})
    for r in d.receipts:
        receipt = [
            {"url": "kind", "valueCode": r.kind},
            {"url": "outcome", "valueCode": r.outcome},
            {"url": "received", "valueDateTime": queries.as_utc(r.received_at).isoformat()},
        ]
        if r.remote_id:
            receipt.append({"url": "remoteId", "valueString": r.remote_id})
        parts.append({"url": "receipt", "extension": receipt})
    return {"url": DELIVERY_EXTENSION, "extension": parts}


def _document_reference(
    row: _Row, base: str, replaced_ids: dict[str, str], deliveries: list[Delivery] | None = None
) -> dict[str, Any]:
    rendition, submission = row.rendition, row.submission
    exchange: dict[str, Any] = (rendition.metadata_json or {}).get("exchange") or {}
    attachment: dict[str, Any] = {
        "contentType": rendition.media_type,
        "url": f"{base}/Binary/{rendition.id}",
        "size": rendition.size,
        "creation": rendition.created_at.astimezone(UTC).isoformat(),
    }
    if exchange.get("language_code"):
        attachment["language"] = exchange["language_code"]
    if exchange.get("title"):
        attachment["title"] = exchange["title"]
    content: dict[str, Any] = {"attachment": attachment}
    format_coding = _coding(exchange.get("format_code"))
    if format_coding:
        content["format"] = format_coding
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": rendition.id,
        "meta": {"lastUpdated": rendition.created_at.astimezone(UTC).isoformat()},
        "masterIdentifier": _master_identifier(rendition.document_id),
        "identifier": [
            {"system": "urn:dui-gateway:set-id", "value": rendition.set_id},
            {"system": "urn:dui-gateway:version", "value": str(rendition.version)},
            {"system": "urn:dui-gateway:submission", "value": submission.id},
        ],
        "status": "current" if rendition.version >= row.latest else "superseded",
        "docStatus": "final",
        "type": _type(submission.document_type),
        "subject": {
            "identifier": {"system": f"{PERSON_SYSTEM}:{submission.essms_finess}", "value": submission.person_ref}
        },
        "date": rendition.created_at.astimezone(UTC).isoformat(),
        "content": [content],
    }
    doc_type = registry.get(submission.document_type)
    category = _coding(exchange.get("class_code") or _code_dict(doc_type.class_code if doc_type else None))
    if category:
        resource["category"] = [{"coding": [category]}]
    confidentiality = _coding(exchange.get("confidentiality_code"))
    if confidentiality:
        resource["securityLabel"] = [{"coding": [confidentiality]}]
    context: dict[str, Any] = {}
    facility = _coding(exchange.get("healthcare_facility_type_code"))
    if facility:
        context["facilityType"] = {"coding": [facility]}
    setting = _coding(exchange.get("practice_setting_code"))
    if setting:
        context["practiceSetting"] = {"coding": [setting]}
    if exchange.get("service_start"):
        period = {"start": exchange["service_start"]}
        if exchange.get("service_stop"):
            period["end"] = exchange["service_stop"]
        context["period"] = period
    if context:
        resource["context"] = context
    if rendition.replaces and rendition.replaces in replaced_ids:
        resource["relatesTo"] = [
            {"code": "replaces", "target": {"reference": f"DocumentReference/{replaced_ids[rendition.replaces]}"}}
        ]
    if deliveries:
        resource["extension"] = [_delivery_extension(d) for d in deliveries]
    return resource


def _base_query(tenant_id: str, essms: frozenset[str] | None = None) -> Select[Any]:
    # A newer version supersedes an older one only if it went out (delivered, on its way, or kept
    # with no destination to send it to): one whose every delivery failed, or that was cancelled,
    # was received by nobody and supersedes nothing.
    latest_q = (
        select(Rendition.set_id, Rendition.kind, func.max(Rendition.version).label("latest"))
        .join(Submission, Submission.id == Rendition.submission_id)
        .where(Submission.status.in_(("routed", "delivered", "partially_failed")))
        .where(Submission.tenant_id == tenant_id)
    )
    latest = latest_q.group_by(Rendition.set_id, Rendition.kind).subquery()
    stmt: Any = (
        select(Rendition, Submission, func.coalesce(latest.c.latest, 0).label("latest"))
        .join(Submission, Submission.id == Rendition.submission_id)
        .outerjoin(latest, and_(latest.c.set_id == Rendition.set_id, latest.c.kind == Rendition.kind))
        .where(Submission.tenant_id == tenant_id)
    )
    if essms is not None:  # an API client restricted to some ESSMS sees only their documents
        stmt = stmt.where(Submission.essms_finess.in_(sorted(essms)))
    return cast("Select[Any]", stmt)


def _tokens(value: str) -> list[tuple[str | None, str]]:
    """A token parameter's comma-separated alternatives as (system, code): ``code`` gives system
    None (any system), ``|code`` gives "" (explicitly no system), ``system|code`` gives system."""
    out: list[tuple[str | None, str]] = []
    for alternative in value.split(","):
        system, sep, code = alternative.rpartition("|")
        out.append((system if sep else None, code))
    return out


def _document_types_for(value: str) -> list[str]:
    """The document types a ``type`` token (``[system|]code``, alternatives separated by commas) designates."""
    typed = {name: doc.type_code for name in registry.codes() if (doc := registry.get(name)) is not None}
    found: list[str] = []
    for system, code in _tokens(value):
        found += [
            name
            for name, type_code in typed.items()
            if type_code is not None
            and code == type_code.code
            and (system is None or system in (_system_uri(type_code.system), f"urn:oid:{type_code.system}"))
        ]
        if system in (None, DOC_TYPE_SYSTEM) and typed.get(code) is None:
            found.append(code)  # a document type without a type code is searched by its own code
    return found


def _statuses_for(value: str) -> set[str]:
    """``status`` alternatives (``[system|]code``); the system, when given, is FHIR's own."""
    out: set[str] = set()
    for system, code in _tokens(value):
        if system not in (None, "", STATUS_SYSTEM) or code not in ("current", "superseded"):
            raise _parameter_error(
                "status", f"current or superseded, optionally as {STATUS_SYSTEM}|code", "token_unsupported"
            )
        out.add(code)
    return out


def _replaced_ids(session: Session, rows: list[_Row], tenant_id: str) -> dict[str, str]:
    wanted = {r.rendition.replaces for r in rows if r.rendition.replaces}
    if not wanted:
        return {}
    stmt = (
        select(Rendition.document_id, Rendition.id)
        .join(Submission, Submission.id == Rendition.submission_id)
        .where(Rendition.document_id.in_(wanted))
        .where(Submission.tenant_id == tenant_id)
    )
    return {document_id: rid for document_id, rid in session.execute(stmt)}


_DOCREF_PARAMS = {"patient", "type", "status", "_count", PAGE_PARAM, "_format"}


def _parameter_error(name: str, message: str, code: str) -> ValidationFailed:
    """A 400 OperationOutcome naming the parameter (``expression``), as FHIR servers answer."""
    return ValidationFailed(f"{name}: {message}", [FieldError(f"query:{name}", message, code)], status=400)


def _check_params(request: Request, allowed: set[str]) -> None:
    """Unknown parameters and every modifier (``patient:missing``…) are refused, never silently dropped."""
    errors: list[FieldError] = []
    for key in dict.fromkeys(request.query_params):
        name, sep, modifier = key.partition(":")
        if name not in allowed:
            errors.append(FieldError(f"query:{key}", "unsupported search parameter", "parameter_unsupported"))
        elif sep:
            errors.append(
                FieldError(f"query:{key}", f"the modifier :{modifier} is not supported", "modifier_unsupported")
            )
    if errors:
        names = ", ".join(e.pointer.split(":", 1)[1] for e in errors)
        raise ValidationFailed(f"unsupported search parameter(s) or modifier(s): {names}", errors, status=400)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


def _page_links(request: Request, count: int, next_token: str | None) -> list[dict[str, str]]:
    """``self`` and, when there is more, ``next``: a keyset token (the last entry's date and id), so
    documents arriving meanwhile never shift a page (they are newer: they would come first)."""
    base = str(request.url).split("?", 1)[0]
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in (PAGE_PARAM, "_count")]
    here = request.query_params.get(PAGE_PARAM)

    def url(token: str | None) -> str:
        params = [*query, ("_count", str(count))] + ([(PAGE_PARAM, token)] if token else [])
        return f"{base}?{urlencode(params)}"

    links = [{"relation": "self", "url": url(here)}]
    if next_token is not None:
        links.append({"relation": "next", "url": url(next_token)})
    return links


def _after(token: str) -> tuple[datetime, str]:
    try:
        return queries.decode_cursor(token)
    except ValidationFailed:
        raise _parameter_error(PAGE_PARAM, "not a page token this server issued", "cursor_invalid") from None


@router.get("/DocumentReference", response_class=JSONResponse)
def search_document_references(
    request: Request,
    session: SessionDep,
    caller: Reader,
    tenant_id: TenantId,
    patient: Annotated[str | None, Query(description="The person's identifier in the DUI")] = None,
    type: Annotated[
        str | None, Query(description="[system|]code of the document type; alternatives separated by commas")
    ] = None,
    status: Annotated[str | None, Query(description=f"current | superseded, or {STATUS_SYSTEM}|code")] = None,
    count: Annotated[int, Query(alias="_count", ge=0, le=MAX_COUNT, description="page size; 0: the total only")] = 20,
    page: Annotated[
        str | None, Query(alias=PAGE_PARAM, max_length=512, description="from a 'next' link (keyset paging)")
    ] = None,
) -> JSONResponse:
    """Search the documents produced for the organisation's persons."""
    _check_params(request, _DOCREF_PARAMS)
    stmt = _base_query(tenant_id, caller.essms)
    if patient is not None:
        person = patient.split("|")[-1].removeprefix("Patient/")
        stmt = stmt.where(Submission.person_ref == person)
    if type is not None:
        stmt = stmt.where(Submission.document_type.in_(_document_types_for(type)))
    if status is not None:
        wanted = _statuses_for(status)
        latest = stmt.selected_columns.latest
        if wanted == {"current"}:
            stmt = stmt.where(Rendition.version >= latest)
        elif wanted == {"superseded"}:
            stmt = stmt.where(Rendition.version < latest)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    if page is not None:
        after_created, after_id = _after(page)
        stmt = stmt.where(
            or_(
                Rendition.created_at < after_created,
                and_(Rendition.created_at == after_created, Rendition.id < after_id),
            )
        )
    result = (
        session.execute(stmt.order_by(Rendition.created_at.desc(), Rendition.id.desc()).limit(count + 1)).all()
        if count > 0
        else []
    )
    rows = [_Row(r, s, latest) for r, s, latest in result[:count]]
    next_token = (
        queries.encode_cursor(rows[-1].rendition.created_at, rows[-1].rendition.id) if len(result) > count else None
    )
    replaced = _replaced_ids(session, rows, tenant_id)
    delivered = _deliveries_of(session, rows)
    _audit_search(session, caller, rows, person=person if patient is not None else None)
    base = _base_url(request)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": _page_links(request, count, next_token),
    }
    if rows:
        bundle["entry"] = [
            {
                "fullUrl": f"{base}/DocumentReference/{row.rendition.id}",
                "resource": _document_reference(row, base, replaced, delivered.get(row.submission.id)),
                "search": {"mode": "match"},
            }
            for row in rows
        ]
    return _fhir(bundle)


def _audit_search(session: Session, caller: Caller, rows: list[_Row], *, person: str | None) -> None:
    """One ``searched`` event per organisation whose documents were listed (as the REST listing)."""
    by_tenant: dict[str, list[_Row]] = {}
    for row in rows:
        by_tenant.setdefault(row.submission.tenant_id, []).append(row)
    if not by_tenant and person is not None and caller.tenant_id is not None:
        by_tenant[caller.tenant_id] = []  # searching for a person is a read of their data, even when empty
    for tenant_id, found in by_tenant.items():
        audit.append(
            session,
            actor=caller.actor,
            action="searched",
            entity_type="tenant",
            entity_id=tenant_id,
            tenant_id=tenant_id,
            person_ref=audit.safe_person_ref(person),
            detail={
                "resource": "DocumentReference",
                "document_reference_ids": [r.rendition.id for r in found],
                "submission_ids": list(dict.fromkeys(r.submission.id for r in found)),
            },
        )


def _one(session: Session, tenant_id: str, rendition_id: str, essms: frozenset[str] | None) -> _Row:
    stmt = _base_query(tenant_id, essms).where(Rendition.id == rendition_id)
    found = session.execute(stmt).first()
    if found is None:
        raise NotFound(f"no document {rendition_id}")
    rendition, submission, latest = found
    return _Row(rendition, submission, latest)


@router.get("/DocumentReference/{rendition_id}", response_class=JSONResponse)
def read_document_reference(
    request: Request, session: SessionDep, caller: Reader, tenant_id: TenantId, rendition_id: str
) -> JSONResponse:
    """One document's DocumentReference."""
    row = _one(session, tenant_id, rendition_id, caller.essms)
    resource = _document_reference(
        row,
        _base_url(request),
        _replaced_ids(session, [row], tenant_id),
        _deliveries_of(session, [row]).get(row.submission.id),
    )
    audit.append(
        session,
        actor=caller.actor,
        action="read",
        entity_type="rendition",
        entity_id=row.rendition.id,
        tenant_id=row.submission.tenant_id,
        person_ref=row.submission.person_ref,
        detail={"submission_id": row.submission.id, "view": "DocumentReference", "kind": row.rendition.kind},
    )
    return _fhir(resource)


# --------------------------------------------------------------------------------------------
# Binary
# --------------------------------------------------------------------------------------------


@router.get("/Binary/{rendition_id}")
def read_binary(
    request: Request, session: SessionDep, runtime: RuntimeDep, caller: Reader, tenant_id: TenantId, rendition_id: str
) -> Response:
    """The document itself: raw bytes, or a FHIR Binary when JSON is asked for (audited as a read)."""
    row = _one(session, tenant_id, rendition_id, caller.essms)
    _, content = queries.read_rendition(
        session,
        tenant_id=row.submission.tenant_id,
        submission_id=row.submission.id,
        kind=row.rendition.kind,
        keyring=runtime.keyring,
        actor=caller.actor,
    )
    accept = request.headers.get("accept", "")
    wants_resource = "fhir+json" in accept or request.query_params.get("_format") in ("json", FHIR_JSON)
    if wants_resource and row.rendition.media_type != FHIR_JSON:
        return _fhir(
            {
                "resourceType": "Binary",
                "id": row.rendition.id,
                "contentType": row.rendition.media_type,
                "data": base64.b64encode(content).decode("ascii"),
            }
        )
    return Response(content, media_type=row.rendition.media_type, headers=NO_STORE)


# --------------------------------------------------------------------------------------------
# AuditEvent
# --------------------------------------------------------------------------------------------


@router.get("/AuditEvent", response_class=JSONResponse)
def search_audit_events(
    request: Request,
    session: SessionDep,
    caller: Auditor,
    count: Annotated[int, Query(alias="_count", ge=1, le=MAX_COUNT)] = 50,
    after: Annotated[
        int | None, Query(alias="_after", ge=0, le=MAX_INT64, description="continue after this chain seq")
    ] = None,
) -> JSONResponse:
    """The organisation's audit trail (chain order), paged with ``next`` links."""
    _check_params(request, {"_count", "_after", "_format"})
    events, next_seq = queries.list_audit_events(
        session, tenant_id=caller.tenant_id, actor=caller.actor, after_seq=after, limit=count
    )
    base = _base_url(request)
    links = [{"relation": "self", "url": str(request.url)}]
    if next_seq is not None:
        links.append(
            {"relation": "next", "url": f"{base}/AuditEvent?{urlencode({'_count': count, '_after': next_seq})}"}
        )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": datetime.now(UTC).isoformat(),
        "link": links,
    }
    if events:
        bundle["entry"] = [
            {"fullUrl": f"urn:uuid:{e.id}", "resource": audit.to_fhir_audit_event(e), "search": {"mode": "match"}}
            for e in events
        ]
    return _fhir(bundle)


# HEAD answers what GET would, without the body (uvicorn drops it); not listed twice in OpenAPI.
for _route in [r for r in router.routes if isinstance(r, APIRoute) and r.methods == {"GET"}]:
    router.add_api_route(
        _route.path.removeprefix(PREFIX),
        _route.endpoint,
        methods=["HEAD"],
        response_class=_route.response_class,
        include_in_schema=False,
    )


# --------------------------------------------------------------------------------------------
# OpenAPI: the facade speaks FHIR, not the gateway's problem documents
# --------------------------------------------------------------------------------------------

_RESOURCE_SCHEMA: dict[str, Any] = {
    "title": "FhirResource",
    "description": "A FHIR R4 resource (JSON); its type is named by resourceType.",
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string", "pattern": "^[A-Z][A-Za-z]+$"}},
    "additionalProperties": True,
}
_OUTCOME_SCHEMA: dict[str, Any] = {
    "title": "OperationOutcome",
    "description": "FHIR R4 OperationOutcome: what went wrong, one issue per problem (expression = parameter).",
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"type": "string", "enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_VALIDATE_EXAMPLE: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "279035121518989"}],
    "gender": "female",
}
_ERRORS = {
    400: "Invalid parameter or body",
    401: "Missing or invalid API key",
    403: "Not allowed (scope; the administrator token reads no clinical content)",
    404: "Unknown resource, or another organisation's",
    413: "Body too large",
}


def fix_openapi(schema: dict[str, Any]) -> None:
    """Describe the facade's routes as FHIR: ``application/fhir+json`` answers, OperationOutcome
    errors, the ``$validate`` body, and ``Binary`` in every media type it serves."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["FhirResource"] = _RESOURCE_SCHEMA
    components["OperationOutcome"] = _OUTCOME_SCHEMA
    resource = {"$ref": "#/components/schemas/FhirResource"}
    outcome = {"$ref": "#/components/schemas/OperationOutcome"}
    for path, item in schema.get("paths", {}).items():
        if not path.startswith(PREFIX):
            continue
        for method, operation in item.items():
            if method not in ("get", "post"):
                continue
            responses = operation["responses"]
            responses.pop("422", None)
            ok = responses.setdefault("200", {"description": "OK"})
            if path.startswith(f"{PREFIX}/Binary/"):
                ok["content"] = {
                    FHIR_JSON: {"schema": resource},
                    "application/xml": {"schema": {"type": "string"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                }
                ok["description"] = "The document: its own media type, or a FHIR Binary (Accept: application/fhir+json)"
            else:
                ok["content"] = {FHIR_JSON: {"schema": outcome if path.endswith("$validate") else resource}}
            if path == f"{PREFIX}/metadata":
                continue
            statuses = (400, 401, 403, 413) if method == "post" else (400, 401, 403, 404)
            for status in statuses:
                responses[str(status)] = {"description": _ERRORS[status], "content": {FHIR_JSON: {"schema": outcome}}}
            if path.endswith("$validate"):
                operation["requestBody"] = {
                    "required": True,
                    "description": "The resource to validate, or a Parameters resource (resource, profile)",
                    "content": {
                        FHIR_JSON: {"schema": resource, "example": _VALIDATE_EXAMPLE},
                        "application/json": {"schema": resource, "example": _VALIDATE_EXAMPLE},
                    },
                }
