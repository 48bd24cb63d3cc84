"""A FHIR ``$validate`` operation as a FastAPI router (mounted by the gateway's FHIR facade).

``POST /$validate`` and ``POST /{resourceType}/$validate`` accept the resource itself or a
``Parameters`` resource (``resource`` and optional ``profile`` parameters, FHIR R4 operation
definition ``Resource-validate``); ``?profile=`` works too. The answer is always an
``OperationOutcome``: 200 when the validation ran (valid or not), 400 when the body is not a
FHIR resource.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from profiles._report import Issue, Report
from profiles._validator import validate

__all__ = ["router"]

FHIR_JSON = "application/fhir+json"
router = APIRouter(tags=["fhir"])


def _outcome(report: Report, status: int) -> JSONResponse:
    return JSONResponse(report.to_operation_outcome(), status_code=status, media_type=FHIR_JSON)


def _unwrap(body: dict[str, Any], profile: str | None) -> tuple[dict[str, Any] | Issue, str | None]:
    """A ``Parameters`` body -> (its ``resource`` parameter or why there is none, its ``profile`` parameter)."""
    if body.get("resourceType") != "Parameters":
        return body, profile
    resource: dict[str, Any] | None = None
    parameters = body.get("parameter")
    if parameters is None:
        parameters = []
    if not isinstance(parameters, list):
        return Issue("fatal", "structure", "Parameters.parameter", "Parameters.parameter is not an array"), profile
    for index, parameter in enumerate(parameters):
        if not isinstance(parameter, dict):
            continue
        if parameter.get("name") == "resource" and isinstance(parameter.get("resource"), dict):
            resource = parameter["resource"]
        elif parameter.get("name") == "profile":
            value = parameter.get("valueUri") or parameter.get("valueCanonical")
            if not value:
                continue
            if not isinstance(value, str):
                where = f"Parameters.parameter[{index}]"
                return Issue("fatal", "structure", where, f"{where}: the profile is not a string"), profile
            profile = value
    if resource is None:
        return Issue("fatal", "required", "Parameters.parameter", "no 'resource' parameter"), profile
    return resource, profile


async def _validate(request: Request, resource_type: str | None, profile: str | None) -> JSONResponse:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        return _outcome(Report([Issue("fatal", "structure", "", f"body is not JSON: {exc}")]), 400)
    if not isinstance(body, dict):
        return _outcome(Report([Issue("fatal", "structure", "", "body is not a FHIR resource")]), 400)
    resource, profile = _unwrap(body, profile)
    if isinstance(resource, Issue):
        return _outcome(Report([resource]), 400)
    if resource_type and resource.get("resourceType") != resource_type:
        issue = Issue("fatal", "invalid", "", f"{resource.get('resourceType')} posted to {resource_type}/$validate")
        return _outcome(Report([issue]), 400)
    return _outcome(validate(resource, profile), 200)


@router.post("/$validate", response_class=JSONResponse)
async def validate_any(request: Request, profile: str | None = None) -> JSONResponse:
    """Validate a FHIR R4 resource (or Parameters) against base R4 and its profiles."""
    return await _validate(request, None, profile)


@router.post("/{resource_type}/$validate", response_class=JSONResponse)
async def validate_typed(resource_type: str, request: Request, profile: str | None = None) -> JSONResponse:
    """Validate a resource of the given type against base R4 and its profiles."""
    return await _validate(request, resource_type, profile)
