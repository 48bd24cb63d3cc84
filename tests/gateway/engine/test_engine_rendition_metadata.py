"""Exchange metadata of a rendition at rest: the person's INS (NIR) is never stored in clear."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import BaseModel
from sqlalchemy import select

from gateway import pipeline
from gateway.delivery import deliver_next
from gateway.storage.models import Rendition
from mappings import registry
from mappings.base import Code, ExchangeMetadata, RecordFacts, RenderContext
from mappings.base import Rendition as RenditionDoc
from tests.gateway.engine.support import Clock, FakeConnector, make_runtime, submit, webhook_routing
from tests.support.doctype import NOTE, NoteRecord

NIR = "2840763220154"  # an INS matricule (NIR), as the DLU/PPA mappings put in patient_id


class _InsNoteType:
    code: ClassVar[str] = "test-ins-note"
    record_model: ClassVar[type[BaseModel]] = NoteRecord

    def facts(self, record: BaseModel) -> RecordFacts:
        return NOTE.facts(record)

    def render(self, record: BaseModel, ctx: RenderContext) -> list[RenditionDoc]:
        code = Code(code="X", system="1.2.3", display="x")
        meta = ExchangeMetadata(
            type_code=code,
            class_code=code,
            format_code=code,
            healthcare_facility_type_code=code,
            practice_setting_code=code,
            confidentiality_code=code,
            mime_type="text/xml",
            title="Note",
            creation_time=datetime(2026, 1, 1, tzinfo=UTC),
            patient_id=NIR,
            patient_id_system="1.2.250.1.213.1.4.8",
        )
        return [
            RenditionDoc(
                kind="note",
                media_type="application/xml",
                content=b"<note/>",
                document_id=f"urn:uuid:{ctx.submission_id}",
                set_id=f"urn:uuid:{ctx.submission_id}",
                version=1,
                metadata=meta,
            )
        ]


def test_ins_in_exchange_metadata_is_encrypted_at_rest_and_reaches_the_connector(
    session_factory, keyring, tenant
) -> None:
    doc_type = _InsNoteType()
    registry.register(doc_type)
    try:
        peer = FakeConnector()
        routing = webhook_routing("partner")
        routing["rules"][0]["document_types"] = [doc_type.code]
        rt = make_runtime(session_factory, keyring, routing=routing, connectors={"partner": peer})
        submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, document_type=doc_type.code)
        clock = Clock()
        assert pipeline.process_next(rt, worker_id="w1", clock=clock) is True
        with session_factory() as session:
            (row,) = session.scalars(select(Rendition)).all()
            stored = json.dumps(row.metadata_json)
        assert NIR not in stored
        assert row.metadata_json["exchange"]["format_code"]["code"] == "X"  # what the FHIR facade reads
        outcome = deliver_next(rt, worker_id="w1", clock=clock)
    finally:
        registry.unregister(doc_type.code)
    assert outcome is not None and outcome.status == "delivered"
    (sent,) = peer.accepted
    meta = sent.envelope.renditions[0].metadata
    assert meta is not None
    assert (meta.patient_id, meta.patient_id_system) == (NIR, "1.2.250.1.213.1.4.8")
