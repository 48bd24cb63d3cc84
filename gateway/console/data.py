"""Read models of the console that the API has no use for: counts, timelines, dead letters,
inbound messages left aside, dashboard series. Each one is scoped to the tenants the caller
names (``tenant_ids``): the routes pass only tenants the user holds a role in (or, for the
platform operator's metadata views, every tenant).

The dashboard reads the same tables as ``/metrics`` (:class:`gateway.api.metrics.DatabaseCollector`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.services.queries import SubmissionFilter, as_utc
from gateway.storage.models import AuditEvent, Delivery, InboundMessage, Submission

__all__ = [
    "Dashboard",
    "audit_page",
    "dashboard",
    "dead_letters",
    "filter_options",
    "status_counts",
    "timeline",
    "unmatched_inbound",
]

SUBMISSION_STATUSES = (
    "received",
    "processing",
    "routed",
    "delivered",
    "partially_failed",
    "failed",
    "rejected",
    "cancelled",
)


def _scoped(stmt: Any, filters: SubmissionFilter) -> Any:
    if filters.document_type is not None:
        stmt = stmt.where(Submission.document_type == filters.document_type)
    if filters.essms is not None:
        stmt = stmt.where(Submission.essms_finess == filters.essms)
    if filters.essms_any:
        stmt = stmt.where(Submission.essms_finess.in_(list(filters.essms_any)))
    if filters.person_ref is not None:
        stmt = stmt.where(Submission.person_ref == filters.person_ref)
    if filters.created_from is not None:
        stmt = stmt.where(Submission.created_at >= as_utc(filters.created_from))
    if filters.created_to is not None:
        stmt = stmt.where(Submission.created_at < as_utc(filters.created_to))
    if filters.destination is not None:
        stmt = stmt.where(
            select(Delivery.id)
            .where(Delivery.submission_id == Submission.id, Delivery.destination == filters.destination)
            .exists()
        )
    return stmt


def status_counts(session: Session, *, tenant_id: str, filters: SubmissionFilter) -> dict[str, int]:
    """Submissions per status under the filters (the status filter itself aside): no person data."""
    stmt = select(Submission.status, func.count()).where(Submission.tenant_id == tenant_id)
    stmt = _scoped(stmt, filters).group_by(Submission.status)
    counts = dict.fromkeys(SUBMISSION_STATUSES, 0)
    for row in session.execute(stmt):
        counts[str(row[0])] = int(row[1])
    return counts


def filter_options(session: Session, *, tenant_id: str, essms_any: Sequence[str] = ()) -> dict[str, list[str]]:
    """The values the filter menus offer: this tenant's document types, destinations, ESSMS."""
    doc_types = select(Submission.document_type).where(Submission.tenant_id == tenant_id).distinct()
    essms = select(Submission.essms_finess).where(Submission.tenant_id == tenant_id).distinct()
    if essms_any:
        essms = essms.where(Submission.essms_finess.in_(list(essms_any)))
    destinations = select(Delivery.destination).where(Delivery.tenant_id == tenant_id).distinct()
    return {
        "document_types": sorted(session.scalars(doc_types)),
        "essms": sorted(session.scalars(essms)),
        "destinations": sorted(session.scalars(destinations)),
    }


def timeline(session: Session, submission: Submission) -> list[AuditEvent]:
    """Audit events about the submission, its deliveries and its renditions, oldest first."""
    ids = [submission.id, *(d.id for d in submission.deliveries), *(r.id for r in submission.renditions)]
    stmt = (
        select(AuditEvent)
        .where(AuditEvent.tenant_id == submission.tenant_id, AuditEvent.entity_id.in_(ids))
        .order_by(AuditEvent.seq)
        .limit(500)
    )
    return list(session.scalars(stmt))


def dead_letters(
    session: Session, *, tenant_id: str, essms_any: Sequence[str] = (), limit: int = 200
) -> list[tuple[Delivery, Submission]]:
    stmt = (
        select(Delivery, Submission)
        .join(Submission, Submission.id == Delivery.submission_id)
        .where(Delivery.tenant_id == tenant_id, Delivery.status == "dead")
    )
    if essms_any:
        stmt = stmt.where(Submission.essms_finess.in_(list(essms_any)))
    rows = session.execute(stmt.order_by(Delivery.updated_at.desc()).limit(limit))
    return [(d, s) for d, s in rows]


def unmatched_inbound(session: Session, *, tenant_id: str, limit: int = 200) -> list[InboundMessage]:
    """Inbound messages the gateway could not attach to anything (held or ignored, with the reason)."""
    stmt = (
        select(InboundMessage)
        .where(InboundMessage.tenant_id == tenant_id, InboundMessage.status.in_(("held", "ignored")))
        .order_by(InboundMessage.received_at.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def audit_page(
    session: Session, *, tenant_id: str, action: str | None = None, before_seq: int | None = None, limit: int = 100
) -> list[AuditEvent]:
    """The tenant's audit events, newest first (the administrators' page)."""
    stmt = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if before_seq is not None:
        stmt = stmt.where(AuditEvent.seq < before_seq)
    return list(session.scalars(stmt.order_by(AuditEvent.seq.desc()).limit(limit)))


@dataclass(frozen=True)
class Dashboard:
    hours: list[datetime]
    throughput: list[int]  # submissions received per hour
    errors: dict[str, tuple[int, int]]  # destination -> (failed or dead, all) deliveries in the window
    queue_depth: int  # due pending deliveries + submissions waiting in received (as /metrics)
    queue_by_destination: dict[str, int]
    latency_seconds: dict[str, float | None]  # p50 / p90 / p99 of received -> delivered
    delivered: int


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def dashboard(
    session: Session, *, tenant_ids: Sequence[str] | None, now: datetime | None = None, hours: int = 24
) -> Dashboard:
    """Figures for the last ``hours`` hours; ``tenant_ids=None`` means every tenant (platform operator)."""
    now = now or datetime.now(UTC)
    start = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)

    def mine_s(stmt: Any) -> Any:
        return stmt if tenant_ids is None else stmt.where(Submission.tenant_id.in_(list(tenant_ids)))

    def mine_d(stmt: Any) -> Any:
        return stmt if tenant_ids is None else stmt.where(Delivery.tenant_id.in_(list(tenant_ids)))

    created = session.scalars(mine_s(select(Submission.created_at).where(Submission.created_at >= start)))
    per_hour: Counter[datetime] = Counter(as_utc(c).replace(minute=0, second=0, microsecond=0) for c in created)
    slots = [start + timedelta(hours=i) for i in range(hours)]
    errors: dict[str, tuple[int, int]] = {}
    stmt = mine_d(
        select(Delivery.destination, Delivery.status, func.count())
        .where(Delivery.created_at >= start)
        .group_by(Delivery.destination, Delivery.status)
    )
    for destination, status, count in session.execute(stmt):
        bad, total = errors.get(destination, (0, 0))
        errors[destination] = (bad + (count if status in ("failed", "dead") else 0), total + count)
    due = mine_d(
        select(Delivery.destination, func.count())
        .where(Delivery.status == "pending", Delivery.next_attempt_at <= now)
        .group_by(Delivery.destination)
    )
    by_destination = {d: int(c) for d, c in session.execute(due)}
    waiting = session.scalar(
        mine_s(select(func.count()).select_from(Submission).where(Submission.status == "received"))
    )
    latencies = [
        (as_utc(delivered) - as_utc(received)).total_seconds()
        for delivered, received in session.execute(
            mine_d(
                select(Delivery.delivered_at, Submission.created_at)
                .join(Submission, Submission.id == Delivery.submission_id)
                .where(Delivery.status == "delivered", Delivery.delivered_at >= start)
            )
        )
        if delivered is not None
    ]
    return Dashboard(
        hours=slots,
        throughput=[per_hour.get(slot, 0) for slot in slots],
        errors=dict(sorted(errors.items())),
        queue_depth=sum(by_destination.values()) + int(waiting or 0),
        queue_by_destination=dict(sorted(by_destination.items())),
        latency_seconds={
            "p50": _percentile(latencies, 0.50),
            "p90": _percentile(latencies, 0.90),
            "p99": _percentile(latencies, 0.99),
        },
        delivered=len(latencies),
    )
