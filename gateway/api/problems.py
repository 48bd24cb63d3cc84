"""Errors become HTTP here, and only here: RFC 9457 ``application/problem+json`` documents.

One handler per family, chosen by exception class (Starlette looks handlers up along the MRO):

* :class:`gateway.errors.GatewayError` and its subclasses: status, title and type from the class;
  ``ValidationFailed`` carries field errors as JSON pointers into the request body;
* FastAPI's ``RequestValidationError`` (query, path and header parameters): 422 with the
  parameter names;
* Starlette's ``HTTPException`` (unknown route, wrong method): ``about:blank`` with the status;
* SQLAlchemy's ``OperationalError`` and pool ``TimeoutError`` (database saturated or unreachable):
  503 with ``Retry-After``;
* anything else: a bare 500 (:func:`unhandled_error_response`, called by the correlation
  middleware so that the server never prints the exception's message, which could quote
  personal data).

A router mounted under a prefix can render its own error format (the FHIR facade answers with
an ``OperationOutcome``) by registering a renderer with :func:`register_error_renderer`.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from gateway.errors import FieldError, GatewayError, ValidationFailed
from gateway.logging import get_logger

__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_MEDIA_TYPE",
    "InvalidJson",
    "PayloadTooLarge",
    "Problem",
    "ProblemFieldError",
    "Unauthorized",
    "UnsupportedMediaType",
    "fix_openapi_problems",
    "install_error_handlers",
    "problem_response",
    "problem_responses",
    "register_error_renderer",
    "route_template",
    "unhandled_error_response",
]

PROBLEM_BASE = "https://dui-gateway.org/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"

_log = get_logger(__name__)

# (path prefix, renderer(request, status, title, detail, errors) -> Response); ``errors`` are the
# field errors ({"parameter"|"pointer", "detail", "code"}) so a renderer can name what is wrong.
ErrorRenderer = Callable[[Request, int, str, str, Sequence[dict[str, Any]]], Response]


class ProblemFieldError(BaseModel):
    """One field-level error: where (JSON pointer into the body, or a parameter name) and why."""

    pointer: str | None = Field(default=None, description="JSON pointer (RFC 6901) into the request body")
    parameter: str | None = Field(default=None, description="query, path or header parameter name")
    detail: str
    code: str


class Problem(BaseModel):
    """RFC 9457 problem details, with the gateway's extension members."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[PROBLEM_BASE + "validation"])
    title: str
    status: int
    detail: str
    instance: str | None = None
    correlation_id: str | None = None
    errors: list[ProblemFieldError] = []


class Unauthorized(GatewayError):
    status = 401
    title = "Unauthorized"
    type_suffix = "unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="dui-gateway"'}


class InvalidJson(GatewayError):
    status = 400
    title = "Malformed request body"
    type_suffix = "invalid-json"


class PayloadTooLarge(GatewayError):
    status = 413
    title = "Request body too large"
    type_suffix = "payload-too-large"


class UnsupportedMediaType(GatewayError):
    status = 415
    title = "Unsupported media type"
    type_suffix = "unsupported-media-type"


def route_template(scope: Any) -> str | None:
    """The matched route's template (``/v1/submissions/{submission_id}``), for logs: never the raw path
    or query string, whose segments and filters may name a person. ``None`` when no route matched."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    return path


def _correlation_id(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("correlation_id")
    return value if isinstance(value, str) else None


def _field_error_dict(err: FieldError) -> dict[str, Any]:
    if err.pointer.startswith("header:") or err.pointer.startswith("query:") or err.pointer.startswith("path:"):
        return {"parameter": err.pointer.split(":", 1)[1], "detail": err.message, "code": err.code}
    return {"pointer": err.pointer, "detail": err.message, "code": err.code}


def problem_response(
    request: Request,
    *,
    status: int,
    title: str,
    detail: str,
    type_uri: str,
    errors: Sequence[dict[str, Any]] = (),
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """Build the problem document (or hand it to the prefix's own renderer, e.g. FHIR)."""
    for prefix, renderer in getattr(request.app.state, "error_renderers", []):
        if request.url.path.startswith(prefix):
            response: Response = renderer(request, status, title, detail, errors)
            if headers:
                response.headers.update(headers)
            return response
    body: dict[str, Any] = {
        "type": type_uri,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "correlation_id": _correlation_id(request),
    }
    if errors:
        body["errors"] = list(errors)
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    if exc.status >= 500:  # the gateway's own state: operators need the diagnostic (str(), never input data)
        _log.error(
            "gateway_error", error_type=type(exc).__name__, route=route_template(request.scope), diagnostic=str(exc)
        )
    errors = [_field_error_dict(e) for e in exc.errors] if isinstance(exc, ValidationFailed) else []
    headers = getattr(exc, "headers", None)
    return problem_response(
        request,
        status=exc.status,
        title=exc.title,
        detail=exc.detail,
        type_uri=PROBLEM_BASE + exc.type_suffix,
        errors=errors,
        headers=dict(headers) if headers else None,
        extra=exc.extra,
    )


def _request_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors: list[dict[str, Any]] = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where, rest = (loc[0], loc[1:]) if loc else ("body", [])
        code = str(err.get("type", "invalid"))
        message = str(err.get("msg", "invalid value"))
        if where == "body":
            pointer = "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in rest)
            errors.append({"pointer": pointer, "detail": message, "code": code})
        else:
            errors.append({"parameter": ".".join(rest) or where, "detail": message, "code": code})
    return problem_response(
        request,
        status=422,
        title=ValidationFailed.title,
        detail="The request parameters are not valid; see errors",
        type_uri=PROBLEM_BASE + "validation",
        errors=errors,
    )


def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = "Error"
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return problem_response(
        request,
        status=exc.status_code,
        title=phrase,
        detail=detail,
        type_uri="about:blank",
        headers=headers,
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's)."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def unhandled_error_response(request: Request, exc: Exception) -> Response:
    """A bare 500 problem; the log line names the exception type and frames, never its message."""
    # The message may quote input (personal data): log the type and the frames only.
    _log.error(
        "unhandled_error",
        error_type=type(exc).__name__,
        route=route_template(request.scope),
        # file:line:function only; source lines could hold literals and messages quote values
        frames=[f"{f.filename}:{f.lineno}:{f.name}" for f in traceback.extract_tb(exc.__traceback__)[-8:]],
    )
    return problem_response(
        request,
        status=500,
        title="Internal error",
        detail="The gateway could not process this request; the correlation id identifies it in the logs",
        type_uri=PROBLEM_BASE + "internal",
    )


def register_error_renderer(app: FastAPI, prefix: str, renderer: ErrorRenderer) -> None:
    """Let the routes under ``prefix`` answer errors in their own format (e.g. FHIR OperationOutcome)."""
    renderers: list[tuple[str, ErrorRenderer]] = getattr(app.state, "error_renderers", [])
    renderers.append((prefix, renderer))
    app.state.error_renderers = renderers


def _database_saturated(request: Request, exc: Exception) -> Response:
    """The database refused or timed out (pool exhausted, locked, unreachable): 503 + Retry-After.

    The request's transaction was rolled back, so nothing was accepted. The log names the exception
    type only: a driver's message quotes the statement and its parameters."""
    _log.warning("database_unavailable", error_type=type(exc).__name__, route=route_template(request.scope))
    runtime = getattr(request.app.state, "runtime", None)
    retry_after = getattr(getattr(runtime, "settings", None), "busy_retry_after_seconds", 5)
    return problem_response(
        request,
        status=503,
        title="Service unavailable",
        detail="the database is saturated or unreachable; nothing was stored: try again later",
        type_uri=PROBLEM_BASE + "unavailable",
        headers={"Retry-After": str(retry_after)},
        extra={"retry_after": retry_after},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(OperationalError, _database_saturated)
    app.add_exception_handler(PoolTimeout, _database_saturated)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem documents for these statuses."""
    return {
        status: {
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}},
            "description": HTTPStatus(status).phrase,
        }
        for status in statuses
    }


def fix_openapi_problems(schema: dict[str, Any]) -> None:
    """Publish the Problem schemas and replace FastAPI's default 422 body by a problem document."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ProblemFieldError"] = ProblemFieldError.model_json_schema()
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    problem.pop("$defs", None)
    components["Problem"] = problem
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            response = operation.get("responses", {}).get("422")
            if response and "HTTPValidationError" in str(response.get("content", {})):
                operation["responses"]["422"] = {
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}},
                    "description": HTTPStatus(422).phrase,
                }
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
