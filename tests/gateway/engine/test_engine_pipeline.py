"""Pipeline: map -> conformance gate -> routing -> deliveries, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from typing import Any, ClassVar

from pydantic import BaseModel
from sqlalchemy import select

from gateway import conformance, pipeline
from gateway.delivery import deliver_next
from gateway.delivery.engine import as_utc
from gateway.security.crypto import decrypt
from gateway.storage.models import Delivery, Rendition, Submission
from mappings import registry
from mappings.base import RecordFacts, RenderContext
from mappings.base import Rendition as RenditionDoc
from tests.gateway.engine.support import (
    T0,
    Clock,
    FakeConnector,
    audit_actions,
    audit_events,
    make_runtime,
    submit,
    webhook_routing,
)
from tests.support.doctype import NOTE, NoteRecord


def _sub(session_factory, sub_id: str) -> Submission:
    with session_factory() as session:
        sub = session.get(Submission, sub_id)
        assert sub is not None
        session.expunge(sub)
        return sub


def test_happy_path_maps_routes_and_delivers(session_factory, keyring, tenant) -> None:
    clock = Clock()
    peer = FakeConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, text="Bonjour <&>")

    assert pipeline.process_next(rt, worker_id="w1", clock=clock) is True
    assert pipeline.process_next(rt, worker_id="w1", clock=clock) is False  # nothing else to do

    sub = _sub(session_factory, sub_id)
    assert sub.status == "routed"
    assert sub.lease_owner is None
    assert sub.report["routing"]["destinations"] == ["partner"]
    assert sub.facts["person_ref"] == "person-1"
    with session_factory() as session:
        (rendition,) = session.scalars(select(Rendition).where(Rendition.submission_id == sub_id)).all()
        content = decrypt(
            session,
            data_key_id=rendition.data_key_id,
            ciphertext=rendition.content_ct,
            keyring=keyring,
            aad=rendition.id.encode(),
        )
        assert b"Bonjour &lt;&amp;&gt;" in content
        assert rendition.version == 1 and rendition.replaces is None
        assert rendition.content_ct != content
        (delivery,) = session.scalars(select(Delivery).where(Delivery.submission_id == sub_id)).all()
        assert (delivery.status, delivery.destination, delivery.seq) == ("pending", "partner", 1)

    outcome = deliver_next(rt, worker_id="w1", clock=clock)
    assert outcome is not None and outcome.status == "delivered"
    assert deliver_next(rt, worker_id="w1", clock=clock) is None
    (sent,) = peer.accepted
    assert sent.envelope.idempotency_key == delivery.id
    assert sent.envelope.tenant == tenant.code
    assert sent.envelope.renditions[0].content == content
    assert sent.envelope.facts.person_ref == "person-1"
    sub = _sub(session_factory, sub_id)
    assert sub.status == "delivered"
    assert audit_actions(session_factory, sub_id) == ["mapped", "routed"]
    assert audit_actions(session_factory, delivery.id) == ["send_started", "attempt", "delivered"]
    with session_factory() as session:
        row = session.get(Delivery, delivery.id)
        assert row is not None
        assert row.remote_id == "remote-1"
        assert as_utc(row.delivered_at) == T0  # type: ignore[arg-type]
        assert [(a.number, a.outcome) for a in row.attempts] == [(1, "success")]


def test_mapping_failure_rejects_with_report_and_sends_nothing(session_factory, keyring, tenant) -> None:
    peer = FakeConnector()
    rt = make_runtime(session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": peer})
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, fail_mapping=True)

    assert pipeline.process_next(rt, worker_id="w1", clock=Clock()) is True
    assert deliver_next(rt, worker_id="w1", clock=Clock()) is None

    sub = _sub(session_factory, sub_id)
    assert sub.status == "rejected"
    assert sub.report == {
        "outcome": "rejected",
        "stage": "mapping",
        "error": {"message": "mapping failed on purpose", "pointer": "/fail_mapping"},
    }
    with session_factory() as session:
        assert session.scalars(select(Rendition).where(Rendition.submission_id == sub_id)).all() == []
        assert session.scalars(select(Delivery).where(Delivery.submission_id == sub_id)).all() == []
        payload = decrypt(
            session, data_key_id=sub.data_key_id, ciphertext=sub.payload_ct, keyring=keyring, aad=sub_id.encode()
        )
    assert json.loads(payload)["fail_mapping"] is True  # the payload stays retrievable
    assert audit_actions(session_factory, sub_id) == ["rejected"]
    assert peer.calls == []


def test_invalid_record_is_rejected_with_pointers(session_factory, keyring, tenant) -> None:
    rt = make_runtime(
        session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": FakeConnector()}
    )
    raw = {"person_ref": "p", "essms_finess": tenant.finess, "text": "", "unexpected": 1}
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref="p", raw=raw)
    pipeline.process_next(rt, worker_id="w1", clock=Clock())
    sub = _sub(session_factory, sub_id)
    assert sub.status == "rejected" and sub.report["stage"] == "validation"
    assert {e["pointer"] for e in sub.report["errors"]} == {"/text", "/unexpected"}


class _FhirNoteType:
    """A test document type whose rendition declares a FHIR conformance tag (content chosen by the record)."""

    code: ClassVar[str] = "test-fhir-note"
    record_model: ClassVar[type[BaseModel]] = NoteRecord

    def __init__(self, tag: str = "fhir:r4") -> None:
        self.tag = tag

    def facts(self, record: BaseModel) -> RecordFacts:
        return NOTE.facts(record)

    def render(self, record: BaseModel, ctx: RenderContext) -> list[RenditionDoc]:
        assert isinstance(record, NoteRecord)
        if record.text == "valid":
            resource: dict[str, Any] = {"resourceType": "Basic", "id": "n1", "code": {"text": "note"}}
        else:  # Basic.code is mandatory (1..1) and "gender" is not an element of Basic
            resource = {"resourceType": "Basic", "id": "n1", "gender": "other"}
        return [
            RenditionDoc(
                kind="fhir",
                media_type="application/fhir+json",
                content=json.dumps(resource).encode(),
                document_id=f"urn:uuid:{ctx.submission_id}",
                set_id=f"urn:uuid:{ctx.submission_id}",
                version=1,
                conformance=(self.tag,),
            )
        ]


def test_conformance_failure_rejects_with_the_validator_report(session_factory, keyring, tenant) -> None:
    doc_type = _FhirNoteType()
    registry.register(doc_type)
    try:
        peer = FakeConnector()
        routing = webhook_routing("partner")
        routing["rules"][0]["document_types"] = ["test-fhir-note"]
        rt = make_runtime(session_factory, keyring, routing=routing, connectors={"partner": peer})
        bad = submit(
            session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, document_type="test-fhir-note"
        )
        good = submit(
            session_factory,
            keyring,
            tenant_id=tenant.id,
            finess=tenant.finess,
            person_ref="person-2",
            text="valid",
            document_type="test-fhir-note",
        )
        pipeline.process_next(rt, worker_id="w1", clock=Clock())
        pipeline.process_next(rt, worker_id="w1", clock=Clock())
    finally:
        registry.unregister(doc_type.code)

    sub = _sub(session_factory, bad)
    assert sub.status == "rejected"
    assert sub.report["stage"] == "conformance"
    (checked,) = sub.report["renditions"]
    assert checked["kind"] == "fhir" and checked["ok"] is False
    (check,) = checked["checks"]
    assert check["tag"] == "fhir:r4" and check["ok"] is False
    outcome = check["report"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(i["severity"] in ("error", "fatal") for i in outcome["issue"])
    with session_factory() as session:
        assert session.scalars(select(Delivery).where(Delivery.submission_id == bad)).all() == []
    # the valid document of the same type passes the same gate and is routed
    ok = _sub(session_factory, good)
    assert ok.status == "routed"
    assert ok.report["conformance"] == [
        {"kind": "fhir", "document_id": f"urn:uuid:{uuid.UUID(good)}", "ok": True, "tags": ["fhir:r4"]}
    ]


def test_uncheckable_rendition_is_held_never_sent(session_factory, keyring, tenant) -> None:
    """No CI-SIS kit configured: a CDA tagged cisis:* waits (status received) instead of being sent."""

    class _CdaNote(_FhirNoteType):
        code: ClassVar[str] = "test-cda-note"

    doc_type = _CdaNote(tag="cisis:DLU-EHPAD-DLU_2022.01")
    registry.register(doc_type)
    try:
        peer = FakeConnector()
        routing = webhook_routing("partner")
        routing["rules"][0]["document_types"] = ["test-cda-note"]
        rt = make_runtime(session_factory, keyring, routing=routing, connectors={"partner": peer}, cisis_kit_dir=None)
        assert conformance.gate_problems(rt.settings, ["cisis:DLU-EHPAD-DLU_2022.01"]) != []
        sub_id = submit(
            session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, document_type="test-cda-note"
        )
        clock = Clock()
        assert pipeline.process_next(rt, worker_id="w1", clock=clock) is True
        sub = _sub(session_factory, sub_id)
        assert sub.status == "received"
        assert sub.lease_owner == pipeline.HELD_OWNER
        assert sub.report["outcome"] == "held" and "CI-SIS kit" in sub.report["reason"]
        # held for one lease period, then tried again (still held: one audit event only)
        assert pipeline.process_next(rt, worker_id="w1", clock=clock) is False
        clock.advance(61)
        assert pipeline.process_next(rt, worker_id="w2", clock=clock) is True
        assert _sub(session_factory, sub_id).status == "received"
        assert audit_actions(session_factory, sub_id) == ["held"]
        assert deliver_next(rt, worker_id="w1", clock=clock) is None
        assert peer.calls == []
    finally:
        registry.unregister(doc_type.code)


def test_unknown_conformance_tag_is_held(session_factory, keyring, tenant) -> None:
    doc_type = _FhirNoteType(tag="fhir:no-such-profile")
    registry.register(doc_type)
    try:
        routing = webhook_routing("partner")
        routing["rules"][0]["document_types"] = ["test-fhir-note"]
        rt = make_runtime(session_factory, keyring, routing=routing, connectors={"partner": FakeConnector()})
        sub_id = submit(
            session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, document_type="test-fhir-note"
        )
        pipeline.process_next(rt, worker_id="w1", clock=Clock())
    finally:
        registry.unregister(doc_type.code)
    sub = _sub(session_factory, sub_id)
    assert sub.status == "received" and sub.report["outcome"] == "held"
    assert "fhir:no-such-profile" in sub.report["reason"]


def test_new_version_of_a_series_keeps_set_id_and_follows_in_order(session_factory, keyring, tenant) -> None:
    clock = Clock()
    rt = make_runtime(
        session_factory, keyring, routing=webhook_routing("partner"), connectors={"partner": FakeConnector()}
    )
    first = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, created_at=T0)
    second = submit(
        session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, created_at=T0.replace(second=1)
    )
    other = submit(
        session_factory,
        keyring,
        tenant_id=tenant.id,
        finess=tenant.finess,
        person_ref="someone-else",
        created_at=T0.replace(second=2),
    )
    # w1 claims the oldest and "crashes"; the second version of that series must wait for it
    with session_factory() as session, session.begin():
        claimed = pipeline._claim(session, worker_id="w1", now=clock(), lease_seconds=60)
    assert claimed == first
    assert pipeline.process_next(rt, worker_id="w2", clock=clock) is True  # takes `other`, not `second`
    assert _sub(session_factory, other).status == "routed"
    assert pipeline.process_next(rt, worker_id="w2", clock=clock) is False
    assert _sub(session_factory, second).status == "received"
    clock.advance(61)  # w1's lease expires: first, then second
    assert pipeline.process_next(rt, worker_id="w2", clock=clock) is True
    assert _sub(session_factory, first).status == "routed"
    assert pipeline.process_next(rt, worker_id="w2", clock=clock) is True
    assert pipeline.process_next(rt, worker_id="w2", clock=clock) is False
    with session_factory() as session:
        r1 = session.scalars(select(Rendition).where(Rendition.submission_id == first)).one()
        r2 = session.scalars(select(Rendition).where(Rendition.submission_id == second)).one()
        r3 = session.scalars(select(Rendition).where(Rendition.submission_id == other)).one()
        d1 = session.scalars(select(Delivery).where(Delivery.submission_id == first)).one()
        d2 = session.scalars(select(Delivery).where(Delivery.submission_id == second)).one()
        d3 = session.scalars(select(Delivery).where(Delivery.submission_id == other)).one()
    assert (r1.version, r2.version) == (1, 2)
    assert r2.set_id == r1.set_id and r2.replaces == r1.document_id
    assert r3.set_id != r1.set_id and r3.version == 1
    assert d1.series_key == d2.series_key != d3.series_key
    assert (d1.seq, d2.seq, d3.seq) == (1, 2, 1)
    assert "person-1" not in d1.series_key  # the ordering key carries no reference in clear


def test_no_destination_is_routed_with_a_reason(session_factory, keyring, tenant) -> None:
    rt = make_runtime(session_factory, keyring)  # no routing rules at all
    sub_id = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess)
    pipeline.process_next(rt, worker_id="w1", clock=Clock())
    sub = _sub(session_factory, sub_id)
    assert sub.status == "routed"
    assert sub.report["routing"] == {"destinations": [], "refused": [], "matched_rules": [], "reason": "no_destination"}
    (routed,) = audit_events(session_factory, sub_id, "routed")
    assert routed.detail["reason"] == "no_destination"


class _KitCdaType:
    """Renders the kit's example DLU (text == "valid") or a copy with a wrong document code."""

    code: ClassVar[str] = "test-kit-cda"
    record_model: ClassVar[type[BaseModel]] = NoteRecord
    example: ClassVar[bytes] = b""

    def facts(self, record: BaseModel) -> RecordFacts:
        return NOTE.facts(record)

    def render(self, record: BaseModel, ctx: RenderContext) -> list[RenditionDoc]:
        assert isinstance(record, NoteRecord)
        content = (
            self.example if record.text == "valid" else self.example.replace(b'code="74207-2"', b'code="11111-1"', 1)
        )
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


def test_cisis_gate_rejects_a_broken_cda_and_passes_the_kit_example(session_factory, keyring, tenant, kit_dir) -> None:
    doc_type = _KitCdaType()
    _KitCdaType.example = (kit_dir / "ExemplesCDA" / "DLU-EHPAD-DLU_2022.01.xml").read_bytes()
    registry.register(doc_type)
    try:
        routing = webhook_routing("partner")
        routing["rules"][0]["document_types"] = ["test-kit-cda"]
        rt = make_runtime(
            session_factory, keyring, routing=routing, connectors={"partner": FakeConnector()}, cisis_kit_dir=kit_dir
        )
        assert conformance.gate_problems(rt.settings) == []
        common = {"tenant_id": tenant.id, "finess": tenant.finess, "document_type": "test-kit-cda"}
        bad = submit(session_factory, keyring, person_ref="a", **common)
        good = submit(session_factory, keyring, person_ref="b", text="valid", **common)
        pipeline.process_next(rt, worker_id="w1", clock=Clock())
        pipeline.process_next(rt, worker_id="w1", clock=Clock())
    finally:
        registry.unregister(doc_type.code)
    sub = _sub(session_factory, bad)
    assert sub.status == "rejected" and sub.report["stage"] == "conformance"
    (check,) = sub.report["renditions"][0]["checks"]
    assert check["tag"] == "cisis:DLU-EHPAD-DLU_2022.01" and check["ok"] is False
    errors = [f for f in check["report"]["findings"] if f["severity"] == "error"]
    assert errors and errors[0]["stage"] == "schematron" and "74207-2" in errors[0]["message"]
    assert _sub(session_factory, good).status == "routed"


class _CrashingType(_FhirNoteType):
    code: ClassVar[str] = "test-crashing-note"

    def render(self, record: BaseModel, ctx: RenderContext) -> list[RenditionDoc]:
        raise KeyError("Jeanne Dupont")  # a bug, with personal data in its message


def test_a_crashing_mapping_rejects_without_quoting_the_record(session_factory, keyring, tenant) -> None:
    doc_type = _CrashingType()
    registry.register(doc_type)
    try:
        rt = make_runtime(session_factory, keyring)
        sub_id = submit(
            session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, document_type=doc_type.code
        )
        assert pipeline.process_next(rt, worker_id="w1", clock=Clock()) is True
    finally:
        registry.unregister(doc_type.code)
    sub = _sub(session_factory, sub_id)
    assert sub.status == "rejected" and sub.report["internal"] is True
    assert sub.report["error"]["message"] == "internal mapping error (KeyError)"
    assert "Dupont" not in json.dumps(sub.report)
