"""The conformance gate holds a document whose validator cannot run; it rejects only on findings.

Issue 7, defect 9: a Saxon run failure used to become a finding, so the submission was rejected for
the gateway's own fault. Here the kit's DLU example is checked against a test kit whose volet raises
an XSLT dynamic error (held: status ``received``, nothing sent) and one whose assert fails (rejected)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from gateway import pipeline
from gateway.storage.models import Submission
from mappings import Code, registry
from mappings.base import RecordFacts, RenderContext
from mappings.base import Rendition as RenditionDoc
from tests.gateway.engine.support import Clock, FakeConnector, make_runtime, submit, webhook_routing
from tests.support.cisis_kit import BOOM, STRICT, build_test_kit
from tests.support.doctype import NOTE, NoteRecord

pytestmark = pytest.mark.conformance


class _KitDluType:
    """Renders the kit's example DLU, checked against the volet named by the record's text."""

    code: ClassVar[str] = "test-gate-dlu"
    record_model: ClassVar[type[BaseModel]] = NoteRecord
    type_code: ClassVar[Code | None] = None
    class_code: ClassVar[Code | None] = None
    example: ClassVar[bytes] = b""

    def facts(self, record: BaseModel) -> RecordFacts:
        return NOTE.facts(record)

    def render(self, record: BaseModel, ctx: RenderContext) -> list[RenditionDoc]:
        assert isinstance(record, NoteRecord)
        return [
            RenditionDoc(
                kind="cda",
                media_type="application/xml",
                content=self.example,
                document_id=f"{ctx.id_root}^{ctx.submission_id.hex}",
                set_id=f"{ctx.id_root}^{ctx.submission_id.hex}",
                version=1,
                conformance=(f"cisis:{record.text}",),
            )
        ]


def _status(session_factory: Any, sub_id: str) -> tuple[str, dict[str, Any]]:
    with session_factory() as session:
        sub = session.get(Submission, sub_id)
        assert sub is not None
        return sub.status, dict(sub.report or {})


def test_a_validator_run_failure_holds_the_submission_and_a_finding_rejects_it(
    session_factory: Any, keyring: Any, tenant: Any, kit_dir: Path, tmp_path: Path
) -> None:
    _KitDluType.example = (kit_dir / "ExemplesCDA" / "DLU-EHPAD-DLU_2022.01.xml").read_bytes()
    doc_type = registry.register(_KitDluType())
    try:
        peer = FakeConnector()
        routing = webhook_routing("partner")
        routing["rules"][0]["document_types"] = [doc_type.code]
        rt = make_runtime(
            session_factory,
            keyring,
            routing=routing,
            connectors={"partner": peer},
            cisis_kit_dir=build_test_kit(kit_dir, tmp_path / "kit"),
        )
        common = {"tenant_id": tenant.id, "finess": tenant.finess, "document_type": doc_type.code}
        broken_engine = submit(session_factory, keyring, person_ref="a", text=BOOM, **common)
        not_conformant = submit(session_factory, keyring, person_ref="b", text=STRICT, **common)
        pipeline.process_next(rt, worker_id="w1", clock=Clock())
        pipeline.process_next(rt, worker_id="w1", clock=Clock())
    finally:
        registry.unregister(doc_type.code)
    status, report = _status(session_factory, broken_engine)
    assert (status, report.get("outcome"), report.get("stage")) == ("received", "held", "conformance"), report
    assert "ValidationRunError" in report["reason"] or "SaxonFailure" in report["reason"]
    status, report = _status(session_factory, not_conformant)
    assert status == "rejected" and report["stage"] == "conformance"
    assert peer.calls == []
