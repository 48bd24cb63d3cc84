"""``/v1/deliveries``: act on one delivery (retry now)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from gateway.api.deps import Caller, SessionDep, require_scope
from gateway.api.problems import problem_responses
from gateway.api.schemas import DeliveryOut
from gateway.services import queries

__all__ = ["router"]

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])

Submitter = Annotated[Caller, Depends(require_scope("submissions:write"))]


@router.post(
    "/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryOut,
    responses=problem_responses(401, 403, 404, 409),
)
def retry(delivery_id: str, caller: Submitter, session: SessionDep) -> DeliveryOut:
    """Retry a failed or dead-lettered delivery now."""
    from gateway.services.operations import retry_delivery

    tenant_id = caller.tenant()
    queries.check_delivery_visible(session, tenant_id=tenant_id, delivery_id=delivery_id, essms=caller.essms)
    delivery = retry_delivery(session, delivery_id=delivery_id, actor=caller.actor, tenant_id=tenant_id)
    session.flush()
    return DeliveryOut.of(delivery)
