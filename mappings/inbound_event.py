"""The ``inbound-event`` document type: something an inbound source heard, for the DUI vendor.

Inbound sources (MSSanté mailbox, MLLP ADT listener, SI-SdO poller) turn what they receive into
events (:class:`connectors.base.InboundEvent`); the gateway stores each as a submission of this
internal type, so it is encrypted, routed (routing rules name ``inbound-event``), delivered with
retries and audited exactly like a document. Its only rendition is the event as JSON. It is not
accepted from the REST API (``internal``).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mappings.base import Code, RecordFacts, RenderContext, Rendition

__all__ = ["INBOUND_EVENT", "InboundEventRecord"]


class InboundEventRecord(BaseModel):
    """An inbound event as stored (the payload is whatever the source normalised, JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.:-]*$")
    source: str = Field(min_length=1, max_length=64)
    inbound_id: str = Field(min_length=1, max_length=36)
    essms_finess: str = Field(pattern=r"^[0-9]{9}$")
    person_ref: str | None = Field(default=None, max_length=128)
    series: str | None = Field(default=None, max_length=128)
    payload: dict[str, Any] = Field(default_factory=dict)


class InboundEventType:
    code: ClassVar[str] = "inbound-event"
    record_model: ClassVar[type[BaseModel]] = InboundEventRecord
    internal: ClassVar[bool] = True  # created by the gateway, never posted by a client
    type_code: ClassVar[Code | None] = None  # not a clinical document: no LOINC type
    class_code: ClassVar[Code | None] = None

    def facts(self, record: BaseModel) -> RecordFacts:
        assert isinstance(record, InboundEventRecord)
        return RecordFacts(
            person_ref=record.person_ref or f"unmatched:{record.inbound_id}",
            essms_finess=record.essms_finess,
            extra={"event_type": record.event_type, "source": record.source, "matched": record.person_ref is not None},
        )

    def render(self, record: BaseModel, ctx: RenderContext) -> list[Rendition]:
        assert isinstance(record, InboundEventRecord)
        body = {
            "resourceType": "dui-gateway.event",
            "id": str(ctx.submission_id),
            "event_type": record.event_type,
            "source": record.source,
            "essms_finess": record.essms_finess,
            "person_ref": record.person_ref,
            "series": record.series,
            "recorded": ctx.now.isoformat(),
            "payload": record.payload,
        }
        document_id = f"urn:uuid:{ctx.submission_id}"
        return [
            Rendition(
                kind="event",
                media_type="application/json",
                content=json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8"),
                document_id=document_id,
                set_id=f"urn:dui-gateway:event-series:{record.series}" if record.series else document_id,
                version=1,
            )
        ]


INBOUND_EVENT = InboundEventType()  # declared in the dui_gateway.document_types entry-point group
