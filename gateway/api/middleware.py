"""ASGI middleware: correlation id and request body size limit.

Pure ASGI (no ``BaseHTTPMiddleware``) so streaming and exception handling are untouched.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.problems import PayloadTooLarge, route_template, unhandled_error_response
from gateway.logging import get_logger

__all__ = ["CORRELATION_HEADER", "BodyLimitMiddleware", "CorrelationIdMiddleware"]

CORRELATION_HEADER = "X-Correlation-ID"
_CORRELATION_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# A correlation id is bound to every log line: one holding 13 digits or more in a row (a NIR/INS,
# with or without its key, a Corsican 2A/2B one) is replaced by a fresh id rather than logged.
_DIGIT_RUN_RE = re.compile(r"[0-9]{13}|[0-9]{5}2[AB][0-9]{6}", re.IGNORECASE)

_log = get_logger("gateway.api.access")


class CorrelationIdMiddleware:
    """Accept the caller's ``X-Correlation-ID`` (or make one), bind it to the logs, echo it back.

    One access-log line per request: method, route template (never the raw path or the query
    string: path segments and filters may name a person), status and duration. An exception no
    handler took becomes a bare 500 problem here, logged by type and frames only.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = ""
        for name, value in scope.get("headers", []):
            if name == b"x-correlation-id":
                supplied = value.decode("latin-1").strip()
                break
        acceptable = _CORRELATION_RE.match(supplied) and not _DIGIT_RUN_RE.search(supplied)
        correlation_id = supplied if acceptable else uuid.uuid4().hex
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_with_header(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = list(message.get("headers", []))
                headers.append((CORRELATION_HEADER.lower().encode(), correlation_id.encode()))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
            try:
                await self.app(scope, receive, send_with_header)
            except Exception as exc:
                # Last resort, here rather than in the server: its traceback would print the
                # exception message, which may quote personal data. Type and frames only.
                response = unhandled_error_response(Request(scope), exc)
                if not response_started:
                    await response(scope, receive, send_with_header)
            finally:
                _log.info(
                    "request",
                    method=scope.get("method"),
                    route=route_template(scope),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` (413), counting while reading.

    ``Content-Length`` over the limit is refused before anything is read; a body that claims
    less (or uses chunked encoding) is cut off as soon as the bytes received pass the limit.
    The error is raised from ``receive`` so the route's exception handlers turn it into a
    problem document and its transaction rolls back.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        limit = self.max_bytes
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit} bytes")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)
