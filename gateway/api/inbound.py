"""``POST /inbound/{source}``: messages pushed by peers to an HTTP inbound source.

The source authenticates the request itself (e.g. a Standard Webhooks signature for webhook
receipts), not with an API key. The message is stored durably before the 202 answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from connectors.base import InboundRejected
from gateway.api.deps import RuntimeDep
from gateway.api.problems import PROBLEM_BASE, problem_response, problem_responses
from gateway.inbound import InboundTooLarge, sink_for

__all__ = ["router"]

router = APIRouter(prefix="/inbound", tags=["inbound"])


@router.post(
    "/{source}",
    status_code=202,
    responses={202: {"description": "stored"}, **problem_responses(400, 401, 404, 413, 415)},
)
async def receive(source: str, request: Request, runtime: RuntimeDep) -> Response:
    """Store a message pushed to an HTTP inbound source (authenticated by the source itself)."""
    configured = runtime.sources.get(source)
    accept = getattr(configured.source, "accept", None) if configured is not None else None
    if accept is None:
        return problem_response(
            request,
            status=404,
            title="Not found",
            detail=f"no HTTP inbound source named {source!r}",
            type_uri=PROBLEM_BASE + "not-found",
        )
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        message = await run_in_threadpool(accept, headers, body)  # a signature check: CPU, off the loop
    except InboundRejected as exc:
        return problem_response(
            request,
            status=exc.status,
            title="Inbound message refused",
            detail=str(exc),
            type_uri=PROBLEM_BASE + "inbound-refused",
        )
    _source, sink = sink_for(runtime, source)
    try:
        # a database write: never on the event loop (on SQLite it waited for the write lock while
        # the loop could not finish the request holding it: 30 s, then both failed)
        stored = await run_in_threadpool(sink.store, message)
    except InboundTooLarge as exc:
        return problem_response(
            request, status=413, title="Payload too large", detail=str(exc), type_uri=PROBLEM_BASE + "too-large"
        )
    body_out: dict[str, Any] = {"id": stored.id, "duplicate": stored.duplicate}
    return JSONResponse(body_out, status_code=202)
