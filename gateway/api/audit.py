"""``/v1/audit-events``: the audit trail exported as FHIR R4 ``AuditEvent`` resources."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from gateway import audit
from gateway.api.deps import Caller, SessionDep, require_scope
from gateway.api.params import MAX_INT64, IsoDatetime
from gateway.api.problems import problem_responses
from gateway.services import queries

__all__ = ["FHIR_JSON", "router"]

FHIR_JSON = "application/fhir+json"

router = APIRouter(prefix="/v1/audit-events", tags=["audit"])

Auditor = Annotated[Caller, Depends(require_scope("audit:read", "admin"))]


@router.get(
    "",
    response_class=JSONResponse,
    responses={
        200: {"content": {FHIR_JSON: {}}, "description": "FHIR R4 Bundle (searchset) of AuditEvent"},
        **problem_responses(401, 403, 422, 503),
    },
)
def export_audit_events(
    request: Request,
    session: SessionDep,
    caller: Auditor,
    since: Annotated[IsoDatetime | None, Query(description="recorded at or after (ISO 8601)")] = None,
    until: Annotated[IsoDatetime | None, Query(description="recorded before (ISO 8601)")] = None,
    entity_id: Annotated[str | None, Query(max_length=36)] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_INT64, description="continue after this chain sequence number")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """Export the organisation's audit events as a FHIR R4 Bundle of AuditEvent."""
    events, next_seq = queries.list_audit_events(
        session,
        tenant_id=caller.tenant_id,
        actor=caller.actor,
        since=since,
        until=until,
        entity_id=entity_id,
        after_seq=after,
        limit=limit,
    )
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
    links: list[dict[str, str]] = [{"relation": "self", "url": str(request.url)}]
    if next_seq is not None:
        base = str(request.url).split("?", 1)[0]
        links.append({"relation": "next", "url": f"{base}?{urlencode([*query, ('after', str(next_seq))])}"})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": datetime.now(UTC).isoformat(),
        "total": len(events) if next_seq is None and after is None else None,
        "link": links,
        "entry": [
            {
                "fullUrl": f"urn:uuid:{event.id}",
                "resource": audit.to_fhir_audit_event(event),
                "search": {"mode": "match"},
            }
            for event in events
        ],
    }
    if bundle["total"] is None:
        del bundle["total"]
    if not bundle["entry"]:
        del bundle["entry"]
    return JSONResponse(bundle, media_type=FHIR_JSON)
