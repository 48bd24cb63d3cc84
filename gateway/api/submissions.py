"""``/v1/submissions``: submit a DUI record, follow it, fetch what was produced, act on it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.orm import Session

from gateway.api.bodies import parse_json_body
from gateway.api.deps import Caller, RuntimeDep, SessionDep, correlation_id, require_scope
from gateway.api.params import IsoDatetime
from gateway.api.problems import UnsupportedMediaType, problem_responses
from gateway.api.schemas import SubmissionAccepted, SubmissionDetail, SubmissionPage, SubmissionSummary
from gateway.errors import FieldError, GatewayError, ValidationFailed
from gateway.metrics import SUBMISSIONS_RECEIVED
from gateway.runtime import Runtime
from gateway.services import intake, queries
from gateway.services.group_commit import GroupCommitter
from gateway.storage.models import Submission

__all__ = ["REQUEST_BODY_REF", "SubmissionEnvelope", "router"]

router = APIRouter(prefix="/v1/submissions", tags=["submissions"])

# The request body schema is built per registered document type when the app is created
# (see gateway.app); the route points at it.
REQUEST_BODY_REF = "#/components/schemas/SubmissionRequest"

# bodies under this size are validated on the event loop (CPU only, well under a millisecond);
# larger ones in a thread, so that a big record never holds up the other requests of the process
INLINE_PREPARE_BYTES = 64 * 1024

_IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")

Submitter = Annotated[Caller, Depends(require_scope("submissions:write"))]
Reader = Annotated[Caller, Depends(require_scope("submissions:read"))]


class SubmissionEnvelope(BaseModel):
    """The request body around the record: which document type, and the DUI record itself."""

    model_config = ConfigDict(extra="forbid")

    document_type: str
    record: dict[str, Any]


def _media_type(request: Request) -> str:
    # straight from the ASGI scope's raw headers (names are lower-case bytes): the first
    # Content-Type, as Headers.get gives it, without building the Headers mapping per request
    headers: list[tuple[bytes, bytes]] = request.scope["headers"]
    for name, value in headers:
        if name == b"content-type":
            return value.decode("latin-1").split(";", 1)[0].strip().lower()
    return ""


async def read_json_body(request: Request) -> Any:
    """The request body parsed as strict JSON: 415 unless JSON, 413 over the limit, 400 saying why."""
    media_type = _media_type(request)
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise UnsupportedMediaType(
            f"send the body as application/json (got {media_type or 'no Content-Type'})",
            extra={"accepted": ["application/json"]},
        )
    chunks: list[bytes] = []
    async for chunk in request.stream():  # the body limit middleware counts while we read
        chunks.append(chunk)
    raw = b"".join(chunks)
    request.state.body_bytes = len(raw)
    return parse_json_body(raw)


def _wake_workers(runtime: Runtime) -> None:
    """Cut the embedded workers' idle sleep short: there is a new submission to process."""
    workers = getattr(runtime, "_workers", None)
    wake = getattr(workers, "wake", None)
    if callable(wake):
        wake()


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _IDEMPOTENCY_RE.match(value):
        raise ValidationFailed(
            "the Idempotency-Key header must be 1 to 255 visible ASCII characters",
            [FieldError("header:Idempotency-Key", "1 to 255 visible ASCII characters", "string_pattern_mismatch")],
        )
    return value


@router.post(
    "",
    status_code=202,
    response_model=SubmissionAccepted,
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REQUEST_BODY_REF}}},
        }
    },
)
async def submit(
    request: Request,
    background: BackgroundTasks,
    runtime: RuntimeDep,
    caller: Submitter,
    body: Annotated[Any, Depends(read_json_body)],
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="same key + same body returns the first answer"),
    ] = None,
) -> Response:
    """Submit a DUI record; answered 202 once it is stored, processed asynchronously."""
    guard = getattr(request.app.state, "queue_guard", None)
    if guard is not None and not guard.check_cached():
        await run_in_threadpool(guard.check)  # 503 + Retry-After while the queue is too deep
    key = _idempotency_key(idempotency_key)
    document_type, record = _envelope(body)
    client = caller.client
    assert client is not None  # the "submit" scope is only ever given to API clients
    # validated once, here (CPU only); the database work is group-committed with the other
    # submissions of this moment, and this answers only after that commit
    if getattr(request.state, "body_bytes", INLINE_PREPARE_BYTES) < INLINE_PREPARE_BYTES:
        # a usual record validates in a fraction of a millisecond: a hop to a thread would cost more
        prepared = intake.prepare(document_type=document_type, record_json=record)
    else:
        prepared = await run_in_threadpool(intake.prepare, document_type=document_type, record_json=record)
    item = intake.StoreRequest(
        client=client, prepared=prepared, idempotency_key=key, correlation_id=correlation_id(request)
    )
    committer: GroupCommitter | None = getattr(request.app.state, "intake_committer", None)
    store_many = store_many_for(runtime)
    if committer is not None:
        # with the other submissions of this moment: one INSERT for all, one commit
        submission, created = await committer.run_item(store_many, item)
    else:
        submission, created = await run_in_threadpool(_store_alone, runtime, store_many, item)
    accepted = SubmissionAccepted.of(submission)
    headers = {"Location": f"/v1/submissions/{accepted.id}"}
    if created:
        SUBMISSIONS_RECEIVED.labels(document_type=accepted.document_type).inc()
        if runtime._workers is not None:  # embedded workers (SQLite): cut their idle sleep short
            background.add_task(_wake_workers, runtime)  # runs after the response (FastAPI attaches it)
    else:
        headers["Idempotent-Replayed"] = "true"
    # serialised here, once: returned as a model, FastAPI would validate it again against the
    # response model and serialise it through its own path (the model stays the OpenAPI schema)
    return Response(content=accepted.model_dump_json(), status_code=202, media_type="application/json", headers=headers)


StoreMany = Callable[[Session, list[intake.StoreRequest]], list[tuple[Submission, bool] | GatewayError]]


def store_many_for(runtime: Runtime) -> StoreMany:
    """:func:`intake.store_many` bound to this runtime's key ring and ESSMS cache; one function per
    runtime, so that the committer writes the submissions of one transaction in one call."""
    fn: StoreMany | None = runtime._intake_store_many
    if fn is None:
        keyring, essms_cache = runtime.keyring, runtime.auth_caches.tenant_essms

        def fn(session: Session, items: list[intake.StoreRequest]) -> list[tuple[Submission, bool] | GatewayError]:
            return intake.store_many(session, items, keyring=keyring, essms_cache=essms_cache)

        runtime._intake_store_many = fn
    return fn


def _store_alone(runtime: Runtime, store_many: StoreMany, item: intake.StoreRequest) -> tuple[Submission, bool]:
    """Without a committer (an app built around a bare runtime): one transaction for this request."""
    with runtime.session_factory() as session:
        [outcome] = store_many(session, [item])
        if isinstance(outcome, GatewayError):
            raise outcome
        session.commit()
        return outcome


def _envelope(body: Any) -> tuple[str, dict[str, Any]]:
    """``(document_type, record)`` of the request body; pydantic only to explain a wrong one."""
    if (
        isinstance(body, dict)
        and len(body) == 2
        and isinstance(body.get("document_type"), str)
        and isinstance(body.get("record"), dict)
    ):
        return body["document_type"], body["record"]
    if not isinstance(body, dict):
        raise ValidationFailed(
            "the request body must be a JSON object", [FieldError("", "must be a JSON object", "dict_type")]
        )
    try:
        envelope = SubmissionEnvelope.model_validate(body)
    except ValidationError as exc:
        errors = [
            replace(e, message=f"{e.message}; a submission has only 'document_type' and 'record'")
            if e.code == "extra_forbidden"
            else e
            for e in intake.field_errors(exc.errors(include_url=False, include_context=False))
        ]
        raise ValidationFailed("the request body is not a valid submission; see errors", errors) from None
    return envelope.document_type, envelope.record


@router.get("", response_model=SubmissionPage, responses=problem_responses(401, 403, 422))
def list_submissions(
    request: Request,
    session: SessionDep,
    caller: Reader,
    status: Annotated[list[str] | None, Query(description="one or more statuses")] = None,
    document_type: Annotated[str | None, Query(max_length=32)] = None,
    essms: Annotated[str | None, Query(description="FINESS of the ESSMS", max_length=9)] = None,
    person_ref: Annotated[str | None, Query(max_length=128)] = None,
    created_from: Annotated[IsoDatetime | None, Query(description="inclusive, ISO 8601 with offset")] = None,
    created_to: Annotated[IsoDatetime | None, Query(description="exclusive, ISO 8601 with offset")] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE_SIZE)] = 50,
) -> SubmissionPage:
    """List the organisation's submissions, newest first, with filters and a cursor."""
    filters = queries.SubmissionFilter(
        status=tuple(status or ()),
        document_type=document_type,
        essms=essms,
        person_ref=person_ref,
        created_from=created_from,
        created_to=created_to,
    )
    page = queries.list_submissions(
        session,
        tenant_id=caller.tenant(),
        actor=caller.actor,
        filters=filters,
        cursor=cursor,
        limit=limit,
        essms=caller.essms,
    )
    params: list[tuple[str, str]] = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    links = {"self": str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")}
    if page.next_cursor is not None:
        links["next"] = f"{request.url.path}?{urlencode([*params, ('cursor', page.next_cursor)])}"
    return SubmissionPage(
        items=[SubmissionSummary.of(s) for s in page.items], next_cursor=page.next_cursor, links=links
    )


@router.get("/{submission_id}", response_model=SubmissionDetail, responses=problem_responses(401, 403, 404))
def get_submission(submission_id: str, session: SessionDep, caller: Reader) -> SubmissionDetail:
    """A submission's status, rejection report, renditions and deliveries with their attempts."""
    submission = queries.view_submission(
        session, tenant_id=caller.tenant(), submission_id=submission_id, actor=caller.actor, essms=caller.essms
    )
    return SubmissionDetail.of(submission)


@router.get(
    "/{submission_id}/record",
    responses={
        200: {"content": {"application/json": {}}, "description": "the record as submitted"},
        **problem_responses(401, 403, 404),
    },
    response_class=Response,
)
def get_record(submission_id: str, runtime: RuntimeDep, session: SessionDep, caller: Reader) -> Response:
    """The DUI record as it was submitted (audited read)."""
    _, content = queries.read_record(
        session,
        tenant_id=caller.tenant(),
        submission_id=submission_id,
        keyring=runtime.keyring,
        actor=caller.actor,
        essms=caller.essms,
    )
    return Response(content=content, media_type="application/json", headers={"Cache-Control": "no-store"})


@router.get(
    "/{submission_id}/renditions/{kind}",
    responses={
        200: {
            "content": {"application/xml": {}, "application/fhir+json": {}},
            "description": "the document produced (CDA, FHIR Bundle...), with its media type",
        },
        **problem_responses(401, 403, 404),
    },
    response_class=Response,
)
def get_rendition(submission_id: str, kind: str, runtime: RuntimeDep, session: SessionDep, caller: Reader) -> Response:
    """A document produced from the submission, e.g. the CDA or the FHIR Bundle (audited read)."""
    rendition, content = queries.read_rendition(
        session,
        tenant_id=caller.tenant(),
        submission_id=submission_id,
        kind=kind,
        keyring=runtime.keyring,
        actor=caller.actor,
        essms=caller.essms,
    )
    return Response(
        content=content,
        media_type=rendition.media_type,
        headers={"Cache-Control": "no-store", "ETag": f'"{rendition.sha256}"'},
    )


@router.post(
    "/{submission_id}/replay",
    status_code=202,
    response_model=SubmissionDetail,
    responses=problem_responses(400, 401, 403, 404, 409, 429),
)
def replay(
    submission_id: str,
    session: SessionDep,
    caller: Submitter,
    runtime: RuntimeDep,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="the same key returns the first replay instead of a new one"),
    ] = None,
) -> SubmissionDetail:
    """Send the submission again (409 if a destination holds a newer version; 429 if replayed too recently)."""
    from gateway.services.operations import replay_submission

    tenant_id = caller.tenant()
    queries.check_submission_visible(session, tenant_id=tenant_id, submission_id=submission_id, essms=caller.essms)
    replay_submission(
        session,
        submission_id=submission_id,
        actor=caller.actor,
        tenant_id=tenant_id,
        idempotency_key=_idempotency_key(idempotency_key),
        min_interval_seconds=runtime.settings.replay_min_interval_seconds,
    )
    session.expire_all()
    return SubmissionDetail.of(queries.get_submission(session, tenant_id=tenant_id, submission_id=submission_id))


@router.post(
    "/{submission_id}/cancel",
    response_model=SubmissionDetail,
    responses=problem_responses(401, 403, 404, 409),
)
def cancel(submission_id: str, session: SessionDep, caller: Submitter) -> SubmissionDetail:
    """Cancel the submission: deliveries not yet done are cancelled."""
    from gateway.services.operations import cancel_submission

    tenant_id = caller.tenant()
    queries.check_submission_visible(session, tenant_id=tenant_id, submission_id=submission_id, essms=caller.essms)
    cancel_submission(session, submission_id=submission_id, actor=caller.actor, tenant_id=tenant_id)
    session.expire_all()
    return SubmissionDetail.of(queries.get_submission(session, tenant_id=tenant_id, submission_id=submission_id))
