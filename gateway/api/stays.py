"""``/v1/stay-events`` and ``/v1/essms/{finess}/…``: stay events in, activity indicators out (issue #11)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.api.deps import Caller, RuntimeDep, SessionDep, correlation_id, require_scope
from gateway.api.problems import problem_responses
from gateway.api.submissions import read_json_body
from gateway.errors import FieldError, ValidationFailed
from gateway.services import intake, stays
from reporting import Capacity, Period
from reporting.events import ABSENCE_KINDS, EXIT_REASONS, InvalidEvent, StayEvent
from reporting.export import to_csv
from reporting.periods import MAX_YEAR, MIN_YEAR

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["indicators"])

Submitter = Annotated[Caller, Depends(require_scope("submissions:write"))]
Reader = Annotated[Caller, Depends(require_scope("submissions:read"))]
Finess = Annotated[str, Path(pattern=r"^[0-9A-B]{9}$", description="FINESS géographique of the ESSMS")]
PeriodCode = Annotated[str, Path(pattern=r"^\d{4}(-(0[1-9]|1[0-2])|-Q[1-4])?$", description="2026, 2026-Q1 or 2026-03")]
_CODE = r"^[a-z][a-z0-9_]{0,31}$"


class StayEventIn(BaseModel):
    """One stay event. ``event_id`` + ``version``: send the same id with a higher version to correct."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
    version: int = Field(default=1, ge=1, le=2**31 - 1)
    kind: Literal["admission", "exit", "transfer", "accommodation_change", "absence_start", "absence_end", "assessment"]
    person_ref: str = Field(min_length=1, max_length=128)
    essms_finess: str = Field(pattern=r"^[0-9A-B]{9}$")
    occurred_at: AwareDatetime
    cancelled: bool = False
    accommodation: str | None = Field(default=None, pattern=_CODE, description="permanent, temporary, day_care, pasa…")
    unit: str | None = Field(default=None, min_length=1, max_length=64)
    exit_reason: Literal[EXIT_REASONS] | None = None  # type: ignore[valid-type]
    absence_kind: Literal[ABSENCE_KINDS] | None = None  # type: ignore[valid-type]
    provenance: str | None = Field(default=None, pattern=_CODE, description="home, hospital, other_essms…")
    sex: Literal["F", "M", "U"] | None = None
    birth_date: date | None = None
    gir: int | None = Field(default=None, ge=1, le=6)

    @field_validator("occurred_at")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        if not MIN_YEAR <= value.year <= MAX_YEAR:
            raise ValueError(f"the year is {MIN_YEAR} to {MAX_YEAR}")
        return value

    @field_validator("birth_date")
    @classmethod
    def _plausible_birth(cls, value: date | None) -> date | None:
        if value is not None and not 1850 <= value.year <= MAX_YEAR:
            raise ValueError(f"the year is 1850 to {MAX_YEAR}")
        return value

    def to_event(self) -> StayEvent:
        try:
            return StayEvent(
                event_id=self.event_id,
                kind=self.kind,
                person_ref=self.person_ref,
                finess=self.essms_finess,
                at=self.occurred_at,
                version=self.version,
                cancelled=self.cancelled,
                accommodation=self.accommodation,
                unit=self.unit,
                exit_reason=self.exit_reason,
                absence_kind=self.absence_kind,
                provenance=self.provenance,
                sex=self.sex,
                birth_date=self.birth_date,
                gir=self.gir,
            )
        except InvalidEvent as exc:
            raise ValidationFailed(
                "the stay event is not consistent; see errors", [FieldError(f"/{exc.field}", str(exc), "business_rule")]
            ) from None


class StayEventRecorded(BaseModel):
    id: str
    event_id: str
    version: int
    current: bool = Field(description="this version is the one the indicators use")
    affected_from: datetime | None = Field(description="start of the time range whose figures changed")
    affected_to: datetime | None = Field(description="end of that range (null: open)")
    reported_periods_affected: list[str] = Field(description="periods already reported that this changes: send again")


class CapacityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accommodation: str = Field(pattern=_CODE)
    places: int = Field(ge=0, le=100_000)
    valid_from: date = date(1900, 1, 1)
    valid_to: date | None = None
    opening_days: int | None = Field(default=None, ge=1, le=366, description="per year; null: every day")


class RulesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = Field(default="Europe/Paris", max_length=64)
    full_rate_absence_days: dict[str, Annotated[int, Field(ge=0, le=366)]] = Field(
        default_factory=lambda: {"hospitalisation": 3, "holiday": 3, "other": 3}
    )
    billing_stop_days: dict[str, Annotated[int, Field(ge=0, le=3660)]] = Field(default_factory=dict)
    exit_day_counts: list[str] = Field(default_factory=lambda: ["day_care", "pasa"], max_length=32)
    age_bands: list[Annotated[int, Field(ge=1, le=150)]] = Field(default_factory=lambda: [20, 60, 75, 85, 95])


class ReportingConfigIn(BaseModel):
    """Authorised capacity per accommodation type and the funder's counting rules of one ESSMS."""

    model_config = ConfigDict(extra="forbid")

    capacities: list[CapacityIn] = Field(max_length=200)
    rules: RulesIn = Field(default_factory=RulesIn)


def _validated(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise ValidationFailed(
            "the request body must be a JSON object", [FieldError("", "must be a JSON object", "dict_type")]
        )
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = intake.field_errors(exc.errors(include_url=False, include_context=False))
        raise ValidationFailed("the request body is not valid; see errors", errors) from None


@router.post(
    "/stay-events",
    status_code=201,
    response_model=StayEventRecorded,
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StayEventIn"}}},
        }
    },
)
async def post_stay_event(
    response: Response,
    runtime: RuntimeDep,
    caller: Submitter,
    body: Annotated[Any, Depends(read_json_body)],
    session: SessionDep,
) -> StayEventRecorded:
    """Record a stay event (201), or a correction (same id, higher version); a replay answers 200."""
    event = _validated(StayEventIn, body).to_event()
    tenant_id = caller.tenant()
    rec = await run_in_threadpool(
        lambda: stays.record_event(
            session, tenant_id=tenant_id, event=event, keyring=runtime.keyring, actor=caller.actor
        )
    )
    if not rec.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return StayEventRecorded(
        id=rec.row.id,
        event_id=rec.row.event_id,
        version=rec.row.version,
        current=rec.current,
        affected_from=rec.affected_from,
        affected_to=rec.affected_to,
        reported_periods_affected=list(rec.reported_periods),
    )


def _period(code: str) -> Period:
    try:
        return Period.parse(code)
    except ValueError as exc:
        raise ValidationFailed(str(exc), [FieldError("path:period", str(exc), "period")]) from None


def _config_out(caps: list[Capacity], rules: Any) -> dict[str, Any]:
    return {
        "capacities": [
            {
                "accommodation": c.accommodation,
                "places": c.places,
                "valid_from": c.valid_from.isoformat(),
                "valid_to": c.valid_to.isoformat() if c.valid_to else None,
                "opening_days": c.opening_days,
            }
            for c in caps
        ],
        "rules": rules.as_json(),
    }


@router.put(
    "/essms/{finess}/reporting-config",
    responses=problem_responses(400, 401, 403, 413, 415, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReportingConfigIn"}}},
        }
    },
)
async def put_reporting_config(
    finess: Finess, caller: Submitter, body: Annotated[Any, Depends(read_json_body)], session: SessionDep
) -> dict[str, Any]:
    """Set the ESSMS's authorised capacity per accommodation type and its counting rules."""
    config: ReportingConfigIn = _validated(ReportingConfigIn, body)
    try:
        caps = [Capacity(**c.model_dump()) for c in config.capacities]
    except ValueError as exc:
        raise ValidationFailed("a capacity is not valid", [FieldError("/capacities", str(exc), "invalid")]) from None
    tenant_id = caller.tenant()

    def run() -> dict[str, Any]:
        stays.put_config(
            session,
            tenant_id=tenant_id,
            finess=finess,
            capacities=caps,
            rules=config.rules.model_dump(),
            actor=caller.actor,
        )
        return _config_out(*stays.get_config(session, tenant_id=tenant_id, finess=finess))

    return await run_in_threadpool(run)


@router.get("/essms/{finess}/reporting-config", responses=problem_responses(401, 403, 422))
def get_reporting_config(finess: Finess, caller: Reader, session: SessionDep) -> dict[str, Any]:
    """The ESSMS's capacities and counting rules (defaults when never set)."""
    return _config_out(*stays.get_config(session, tenant_id=caller.tenant(), finess=finess))


@router.get(
    "/essms/{finess}/indicators/{period}",
    responses={
        200: {
            "content": {"application/json": {}, "text/csv": {}},
            "description": "the period's dataset, layout 1.0 (docs/indicators.md)",
        },
        **problem_responses(401, 403, 422),
    },
    response_class=Response,
)
def get_indicators(
    finess: Finess,
    period: PeriodCode,
    runtime: RuntimeDep,
    caller: Reader,
    session: SessionDep,
    format: Annotated[Literal["json", "csv"], Query(description="json (default) or csv")] = "json",
) -> Response:
    """The ESSMS's activity indicators for a month, quarter or year (audited read)."""
    ds = stays.dataset(
        session,
        tenant_id=caller.tenant(),
        finess=finess,
        period=_period(period),
        keyring=runtime.keyring,
        actor=caller.actor,
    )
    headers = {"Cache-Control": "no-store"}
    if format == "csv":
        return Response(content=to_csv([ds]), media_type="text/csv; charset=utf-8", headers=headers)
    from reporting.export import to_json_bytes

    return Response(content=to_json_bytes([ds]), media_type="application/json", headers=headers)


@router.get("/essms/{finess}/occupancy", responses=problem_responses(401, 403, 422))
def get_occupancy(
    finess: Finess,
    runtime: RuntimeDep,
    caller: Reader,
    session: SessionDep,
    start: Annotated[date, Query(alias="from", description="first day, inclusive (YYYY-MM-DD)")],
    end: Annotated[date, Query(alias="to", description="last day, exclusive (YYYY-MM-DD)")],
    accommodation: Annotated[str | None, Query(pattern=_CODE)] = None,
) -> dict[str, Any]:
    """Daily occupancy for a chart: people in a stay, present, places, rate (audited read)."""
    series = stays.occupancy(
        session,
        tenant_id=caller.tenant(),
        finess=finess,
        start=start,
        end=end,
        keyring=runtime.keyring,
        actor=caller.actor,
        accommodation=accommodation,
    )
    return {"layout_version": "1.0", "finess": finess, "accommodation": accommodation or "all", "days": series}


def request_schemas() -> dict[str, Any]:
    """JSON Schemas of the request bodies read as raw JSON here (for the OpenAPI components)."""
    from pydantic.json_schema import models_json_schema

    _, top = models_json_schema(
        [(StayEventIn, "validation"), (StayEventBatchIn, "validation"), (ReportingConfigIn, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    defs: dict[str, Any] = top.get("$defs", {})
    return defs


class ReportAccepted(BaseModel):
    submission_id: str
    period: str
    dataset_sha256: str
    created: bool = Field(description="false: this very dataset was already reported (same submission)")


@router.post(
    "/essms/{finess}/indicators/{period}/report",
    status_code=202,
    response_model=ReportAccepted,
    responses=problem_responses(401, 403, 422),
)
def report_indicators(
    finess: Finess, period: PeriodCode, request: Request, runtime: RuntimeDep, caller: Submitter, session: SessionDep
) -> ReportAccepted:
    """Send the period's dataset to the destinations routed for ``indicator-dataset`` (SIDOBA…)."""
    out = stays.report(
        session,
        tenant_id=caller.tenant(),
        finess=finess,
        period=_period(period),
        keyring=runtime.keyring,
        actor=caller.actor,
        correlation_id=correlation_id(request),
    )
    return ReportAccepted(
        submission_id=out.submission_id, period=period, dataset_sha256=out.dataset_sha256, created=out.created
    )


MAX_BATCH = 1000


class StayEventBatchIn(BaseModel):
    """Up to 1000 stay events recorded together: all of them, or none (one transaction)."""

    model_config = ConfigDict(extra="forbid")

    events: list[StayEventIn] = Field(min_length=1, max_length=MAX_BATCH)


class StayEventBatchRecorded(BaseModel):
    items: list[StayEventRecorded]
    created: int = Field(description="how many versions were new (the others were replays)")


def _recorded(rec: stays.Recorded) -> StayEventRecorded:
    return StayEventRecorded(
        id=rec.row.id,
        event_id=rec.row.event_id,
        version=rec.row.version,
        current=rec.current,
        affected_from=rec.affected_from,
        affected_to=rec.affected_to,
        reported_periods_affected=list(rec.reported_periods),
    )


@router.post(
    "/stay-events/batch",
    response_model=StayEventBatchRecorded,
    responses=problem_responses(400, 401, 403, 409, 413, 415, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StayEventBatchIn"}}},
        }
    },
)
async def post_stay_events_batch(
    runtime: RuntimeDep,
    caller: Submitter,
    body: Annotated[Any, Depends(read_json_body)],
    session: SessionDep,
) -> StayEventBatchRecorded:
    """Record up to 1000 stay events in one transaction (a 409 or 422 on one keeps none)."""
    batch: StayEventBatchIn = _validated(StayEventBatchIn, body)
    events: list[StayEvent] = []
    for i, item in enumerate(batch.events):
        try:
            events.append(item.to_event())
        except ValidationFailed as exc:
            errors = [FieldError(f"/events/{i}{e.pointer}", e.message, e.code) for e in exc.errors]
            raise ValidationFailed("a stay event is not consistent; see errors", errors) from None
    tenant_id = caller.tenant()

    def run() -> list[stays.Recorded]:
        return [
            stays.record_event(session, tenant_id=tenant_id, event=e, keyring=runtime.keyring, actor=caller.actor)
            for e in events
        ]

    recorded = await run_in_threadpool(run)
    return StayEventBatchRecorded(items=[_recorded(r) for r in recorded], created=sum(r.created for r in recorded))
