"""``/v1/unmatched-persons``: inbound events about persons the gateway could not match, for the
DUI's operators to link (docs/hl7v2.md). Tenant API clients only: the list carries the peer's
identifiers (personal data), which the administrator token does not read."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from gateway import audit, persons
from gateway.api.deps import Caller, RuntimeDep, SessionDep, require_scope
from gateway.api.problems import problem_responses
from gateway.errors import NotFound

__all__ = ["router"]

router = APIRouter(prefix="/v1/unmatched-persons", tags=["persons"])

Reader = Annotated[Caller, Depends(require_scope("submissions:read"))]
Submitter = Annotated[Caller, Depends(require_scope("submissions:write"))]
UnmatchedId = Annotated[str, Path(min_length=36, max_length=36, pattern=r"^[0-9a-f-]{36}$")]


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    person_ref: str = Field(
        min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$", description="the DUI's person reference"
    )


class LinkOut(BaseModel):
    linked: int = Field(description="unmatched entries closed (this one and those sharing an identifier)")
    person_ref: str


@router.get("", responses=problem_responses(401, 403, 422))
def list_unmatched(
    caller: Reader,
    session: SessionDep,
    runtime: RuntimeDep,
    status: Annotated[str, Query(pattern=r"^(open|linked)$")] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Inbound events whose person no known identifier matched (the peer's identifiers included)."""
    tenant_id = caller.tenant()
    found = persons.list_unmatched(session, runtime.keyring, tenant_id=tenant_id, status=status, limit=limit)
    if found:  # the peer's identifiers are a person's data: who viewed them is recorded (ids only)
        audit.append(
            session,
            actor=caller.actor,
            action="searched",
            entity_type="tenant",
            entity_id=tenant_id,
            tenant_id=tenant_id,
            detail={"resource": "unmatched_persons", "status": status, "unmatched_ids": [u.id for u in found]},
        )
    return [u.to_dict() for u in found]


@router.post(
    "/{unmatched_id}/link", response_model=LinkOut, responses=problem_responses(400, 401, 403, 404, 413, 415, 422)
)
def link(
    unmatched_id: UnmatchedId, body: LinkIn, caller: Submitter, session: SessionDep, runtime: RuntimeDep
) -> LinkOut:
    """Say who an unmatched event was about: its identifiers are indexed for that person (audited)."""
    try:
        linked = persons.link(
            session,
            runtime.keyring,
            unmatched_id=unmatched_id,
            person_ref=body.person_ref,
            actor=caller.actor,
            tenant_id=caller.tenant(),
        )
    except LookupError:
        raise NotFound("no open unmatched person with this id") from None
    return LinkOut(linked=linked, person_ref=body.person_ref)
