"""Exchange metadata of a rendition at rest: the person's INS (NIR) is never stored in clear."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import BaseModel
from sqlalchemy import select

from gateway import pipeline
from gateway.delivery import deliver_next
from gateway.storage.models import Delivery, Rendition, Submission
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


class _KitCdaBadBirthTime:
    """The kit's example DLU with a birth date the XSD refuses (the XSD error quotes the value)."""

    code: ClassVar[str] = "test-kit-birthtime"
    record_model: ClassVar[type[BaseModel]] = NoteRecord
    example: ClassVar[bytes] = b""

    def facts(self, record: BaseModel) -> RecordFacts:
        return NOTE.facts(record)

    def render(self, record: BaseModel, ctx: RenderContext) -> list[RenditionDoc]:
        content = re.sub(rb'<birthTime value="\d+"', b'<birthTime value="1937-02-11"', self.example, count=1)
        return [
            RenditionDoc(
                kind="cda",
                media_type="application/xml",
                content=content,
                document_id=f"{ctx.id_root}^{ctx.submission_id.hex}",
                set_id=f"{ctx.id_root}^{ctx.submission_id.hex}",
                version=1,
                conformance=("cisis:DLU-EHPAD-DLU_2022.01",),
            )
        ]


def test_rejection_report_does_not_quote_the_documents_personal_values(
    session_factory, keyring, tenant, kit_dir
) -> None:
    doc_type = _KitCdaBadBirthTime()
    _KitCdaBadBirthTime.example = (kit_dir / "ExemplesCDA" / "DLU-EHPAD-DLU_2022.01.xml").read_bytes()
    registry.register(doc_type)
    try:
        rt = make_runtime(session_factory, keyring, cisis_kit_dir=kit_dir)
        sub_id = submit(
            session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, document_type=doc_type.code
        )
        assert pipeline.process_next(rt, worker_id="w1", clock=Clock()) is True
    finally:
        registry.unregister(doc_type.code)
    with session_factory() as session:
        sub = session.get(Submission, sub_id)
        assert sub is not None
        report = sub.report
    assert sub.status == "rejected" and report["stage"] == "conformance"
    (check,) = report["renditions"][0]["checks"]
    xsd = [f for f in check["report"]["findings"] if f["stage"] == "xsd"]
    assert xsd and "birthTime" in xsd[0]["message"]  # still says what is wrong, and where
    assert "1937-02-11" not in json.dumps(report)


def test_a_delivery_that_cannot_be_prepared_is_dead_lettered_and_does_not_block_the_others(
    session_factory, keyring, tenant
) -> None:
    """A rendition that no longer decrypts used to roll the claim back: the same delivery was
    claimed again on every iteration and every other delivery waited behind it forever."""
    peer = FakeConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    clock = Clock()
    broken = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref="p-broken")
    assert pipeline.process_next(rt, worker_id="w1", clock=clock) is True
    clock.advance(1)
    fine = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref="p-fine")
    assert pipeline.process_next(rt, worker_id="w1", clock=clock) is True
    with session_factory() as session, session.begin():
        (row,) = session.scalars(select(Rendition).where(Rendition.submission_id == broken)).all()
        blob = bytearray(row.content_ct)
        blob[-1] ^= 0xFF
        row.content_ct = bytes(blob)

    outcomes = [deliver_next(rt, worker_id="w1", clock=clock) for _ in range(3)]
    # the broken one is dead-lettered (a stored document that no longer authenticates is never
    # sendable), the other delivered; neither blocks the other
    assert sorted(o.status for o in outcomes if o is not None) == ["dead", "delivered"]
    (sent,) = peer.accepted
    assert sent.envelope.submission_id == fine
    with session_factory() as session:
        (dead,) = session.scalars(select(Delivery).where(Delivery.submission_id == broken)).all()
        assert dead.status == "dead"
        assert "cannot be read" in (dead.last_error or "")
        assert session.get(Submission, broken).status == "failed"


def test_a_submission_whose_record_cannot_be_read_is_rejected_not_retried_forever(
    session_factory, keyring, tenant
) -> None:
    rt = make_runtime(
        session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": FakeConnector()}
    )
    clock = Clock()
    broken = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    with session_factory() as session, session.begin():
        sub = session.get(Submission, broken)
        assert sub is not None
        blob = bytearray(sub.payload_ct)
        blob[-1] ^= 0xFF
        sub.payload_ct = bytes(blob)
    clock.advance(1)
    later = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, created_at=clock())

    assert pipeline.process_next(rt, worker_id="w1", clock=clock) is True
    assert pipeline.process_next(rt, worker_id="w1", clock=clock) is True  # the series moves on
    with session_factory() as session:
        first = session.get(Submission, broken)
        assert first is not None and first.status == "rejected"
        assert first.report["stage"] == "load" and "DecryptionError" in first.report["error"]["message"]
        second = session.get(Submission, later)
        assert second is not None and second.status == "routed"
