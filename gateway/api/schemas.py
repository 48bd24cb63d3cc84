"""Response models of the REST API (they are the OpenAPI schemas too).

Nothing here carries names, INS or birth dates: a submission is described by references
(``person_ref`` is the DUI's local identifier of the person) and states.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.services.queries import as_utc
from gateway.storage.models import Attempt, Delivery, Rendition, Submission
from gateway.storage.models import Receipt as ReceiptRow

__all__ = [
    "AttemptOut",
    "DeliveryOut",
    "RenditionOut",
    "SubmissionAccepted",
    "SubmissionDetail",
    "SubmissionPage",
    "SubmissionSummary",
]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _ts(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


class SubmissionAccepted(_Out):
    """The answer to an accepted submission: follow ``links.self`` for its progress."""

    id: str
    status: str
    document_type: str
    created_at: datetime
    links: dict[str, str]

    @classmethod
    def of(cls, s: Submission) -> SubmissionAccepted:
        return cls(
            id=s.id,
            status=s.status,
            document_type=s.document_type,
            created_at=as_utc(s.created_at),
            links=_submission_links(s),
        )


class AttemptOut(_Out):
    number: int
    worker: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str = Field(
        description="started | success | transient | permanent | deferred (gateway fault, retried) | "
        "lease_lost | abandoned (worker gone mid-send)"
    )
    error: str | None
    remote_id: str | None

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        return cls(
            number=a.number,
            worker=a.worker,
            started_at=as_utc(a.started_at),
            finished_at=_ts(a.finished_at),
            outcome=a.outcome,
            error=a.error,
            remote_id=a.remote_id,
        )


class ReceiptOut(_Out):
    id: str
    kind: str = Field(description="dsn | mdn | hl7-ack | webhook-receipt | ...")
    outcome: str = Field(description="delivered | failed | info")
    applied: bool = Field(description="whether this receipt moved the delivery")
    remote_id: str | None
    reason: str | None
    received_at: datetime

    @classmethod
    def of(cls, r: ReceiptRow) -> ReceiptOut:
        return cls(
            id=r.id,
            kind=r.kind,
            outcome=r.outcome,
            applied=r.applied,
            remote_id=r.remote_id,
            reason=r.reason,
            received_at=as_utc(r.received_at),
        )


class DeliveryOut(_Out):
    id: str
    destination: str
    connector: str
    status: str = Field(
        description="pending | in_flight | sent (relay accepted, receipt awaited) | delivered | failed "
        "(negative receipt) | unconfirmed (no receipt in time) | dead | cancelled"
    )
    attempt_count: int
    next_attempt_at: datetime | None
    last_error: str | None
    remote_id: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime
    attempts: list[AttemptOut]
    sent_at: datetime | None = None
    receipt_due_at: datetime | None = None
    receipts: list[ReceiptOut] = Field(default_factory=list)
    links: dict[str, str]

    @classmethod
    def of(cls, d: Delivery, receipts: list[ReceiptRow] | None = None) -> DeliveryOut:
        return cls(
            id=d.id,
            destination=d.destination,
            connector=d.connector,
            status=d.status,
            attempt_count=d.attempt_count,
            next_attempt_at=_ts(d.next_attempt_at) if d.status == "pending" else None,
            last_error=d.last_error,
            remote_id=d.remote_id,
            delivered_at=_ts(d.delivered_at),
            created_at=as_utc(d.created_at),
            updated_at=as_utc(d.updated_at),
            attempts=[AttemptOut.of(a) for a in d.attempts],
            sent_at=_ts(d.sent_at),
            receipt_due_at=_ts(d.receipt_due_at) if d.status == "sent" else None,
            receipts=[ReceiptOut.of(r) for r in receipts or []],
            links={"retry": f"/v1/deliveries/{d.id}/retry"},
        )


class RenditionOut(_Out):
    kind: str
    media_type: str
    document_id: str
    set_id: str
    version: int
    replaces: str | None
    sha256: str
    size: int
    created_at: datetime
    links: dict[str, str]

    @classmethod
    def of(cls, r: Rendition) -> RenditionOut:
        return cls(
            kind=r.kind,
            media_type=r.media_type,
            document_id=r.document_id,
            set_id=r.set_id,
            version=r.version,
            replaces=r.replaces,
            sha256=r.sha256,
            size=r.size,
            created_at=as_utc(r.created_at),
            links={"content": f"/v1/submissions/{r.submission_id}/renditions/{r.kind}"},
        )


def _submission_links(s: Submission) -> dict[str, str]:
    base = f"/v1/submissions/{s.id}"
    return {
        "self": base,
        "record": f"{base}/record",
        "replay": f"{base}/replay",
        "cancel": f"{base}/cancel",
    }


class SubmissionSummary(_Out):
    id: str
    document_type: str
    status: str = Field(
        description="received | processing | routed | delivered | partially_failed | failed | rejected | cancelled"
    )
    essms_finess: str
    person_ref: str
    created_at: datetime
    updated_at: datetime
    links: dict[str, str]

    @classmethod
    def of(cls, s: Submission) -> SubmissionSummary:
        return cls(
            id=s.id,
            document_type=s.document_type,
            status=s.status,
            essms_finess=s.essms_finess,
            person_ref=s.person_ref,
            created_at=as_utc(s.created_at),
            updated_at=as_utc(s.updated_at),
            links=_submission_links(s),
        )


class SubmissionDetail(SubmissionSummary):
    correlation_id: str
    facts: dict[str, Any] | None = Field(description="routing facts: references and flags, no names")
    report: dict[str, Any] | None = Field(description="rejection report (validation/conformance findings)")
    renditions: list[RenditionOut]
    deliveries: list[DeliveryOut]

    @classmethod
    def of(cls, s: Submission) -> SubmissionDetail:
        summary = SubmissionSummary.of(s).model_dump()
        return cls(
            **summary,
            correlation_id=s.correlation_id,
            facts=s.facts,
            report=s.report,
            renditions=[RenditionOut.of(r) for r in s.renditions],
            deliveries=[DeliveryOut.of(d, list(d.receipts)) for d in s.deliveries],
        )


class SubmissionPage(_Out):
    items: list[SubmissionSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= to get the next page; null on the last page")
    links: dict[str, str] = Field(description="self, and next when there is a next page")
