"""The PPA's CDA R2 level 1: XSD + CI-SIS common checks of the kit, header, body, versions, metadata."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pikepdf
import pytest
from lxml import etree

from ci_sis import Validator, load_validator
from mappings import registry
from mappings.base import MappingFailed, PreviousVersion, RenderContext
from mappings.ppa import PPA, PpaRecord, render_cda

RESOURCES = Path(__file__).parents[1] / "resources" / "records"
FIXTURE = RESOURCES / "ppa-ehpad.json"
GOLDEN = RESOURCES / "ppa-ehpad.cda.sha256"
NS = {"h": "urn:hl7-org:v3"}
NOW = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
SUBMISSION = uuid.UUID("6f1c2d3e-4b5a-4978-8a6b-5c4d3e2f1a0b")


def _data() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _ctx(**kwargs: Any) -> RenderContext:
    return RenderContext(now=NOW, submission_id=kwargs.pop("submission_id", SUBMISSION), **kwargs)


@pytest.fixture(scope="module")
def validator(kit_dir: Path) -> Validator:
    return load_validator(kit_dir)


@pytest.fixture(scope="module")
def record() -> PpaRecord:
    return PpaRecord.model_validate(_data())


def _xml(content: bytes) -> etree._Element:
    return etree.fromstring(content)


def _one(doc: etree._Element, path: str) -> etree._Element:
    found = doc.xpath(path, namespaces=NS)
    assert len(found) == 1, f"{path}: {len(found)} matches"
    return found[0]  # type: ignore[no-any-return]


def test_registered_at_import() -> None:
    assert registry.get("ppa") is PPA
    assert registry.get("tddui-export") is not None


def test_passes_xsd_and_cisis_common_checks(validator: Validator, record: PpaRecord) -> None:
    rendition = render_cda(record, _ctx())
    assert rendition.conformance == ("cisis:CDA-N1",)
    report = validator.validate(rendition.content, "CDA-N1")
    assert list(report.findings) == [] and report.ok


def test_a_broken_header_is_caught(validator: Validator, record: PpaRecord) -> None:
    doc = _xml(render_cda(record, _ctx()).content)
    doc.remove(_one(doc, "h:custodian"))
    report = validator.validate(etree.tostring(doc), "CDA-N1")
    assert not report.ok  # the checks we rely on can fail


def test_header(record: PpaRecord) -> None:
    rendition = render_cda(record, _ctx())
    doc = _xml(rendition.content)
    templates = [t.get("root") for t in doc.xpath("h:templateId", namespaces=NS)]
    assert templates == ["2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1", "1.3.6.1.4.1.19376.1.2.20"]
    code = _one(doc, "h:code")
    assert (code.get("code"), code.get("codeSystem")) == ("80788-3", "2.16.840.1.113883.6.1")
    assert _one(doc, "h:languageCode").get("code") == "fr-FR"
    assert _one(doc, "h:id").get("root") == rendition.document_id
    assert _one(doc, "h:setId").get("root") == rendition.set_id
    assert _one(doc, "h:versionNumber").get("value") == "1"
    assert doc.xpath("h:relatedDocument", namespaces=NS) == []
    assert _one(doc, "h:effectiveTime").get("value") == "20240301093000+0000"
    # qualified identity: INS (test OID) first, then the local id
    ids = [(i.get("root"), i.get("extension")) for i in doc.xpath("h:recordTarget/h:patientRole/h:id", namespaces=NS)]
    assert ids[0] == ("1.2.250.1.213.1.4.10", "279035121518989")
    assert ids[1][1] == "EHPAD-2024-0042"
    facility = _one(doc, "h:componentOf/h:encompassingEncounter/h:location/h:healthCareFacility/h:code")
    assert facility.get("code") == "SA17"
    assert _one(doc, "h:documentationOf/h:serviceEvent/h:effectiveTime/h:low").get("value") == "20240301000000+0000"


def test_body_is_the_pdfa(record: PpaRecord) -> None:
    rendition = render_cda(record, _ctx())
    text = _one(_xml(rendition.content), "h:component/h:nonXMLBody/h:text")
    assert (text.get("mediaType"), text.get("representation")) == ("application/pdf", "B64")
    pdf = base64.b64decode(text.text or "", validate=True)
    assert pdf.startswith(b"%PDF-1.7")
    with pikepdf.open(__import__("io").BytesIO(pdf)) as doc:
        assert "/OutputIntents" in doc.Root
        assert bytes(doc.trailer.ID[0]) == hashlib.sha256(rendition.document_id.encode()).digest()[:16]


def test_update_is_a_new_version_replacing_the_previous(validator: Validator, record: PpaRecord) -> None:
    first = render_cda(record, _ctx())
    previous = PreviousVersion(set_id=first.set_id, version=first.version, document_id=first.document_id)
    second = render_cda(record, _ctx(submission_id=uuid.uuid4(), previous={"cda": previous}))
    assert (second.set_id, second.version, second.replaces) == (first.set_id, 2, first.document_id)
    assert second.document_id != first.document_id
    doc = _xml(second.content)
    assert _one(doc, "h:versionNumber").get("value") == "2"
    assert _one(doc, "h:relatedDocument").get("typeCode") == "RPLC"
    assert _one(doc, "h:relatedDocument/h:parentDocument/h:id").get("root") == first.document_id
    assert validator.validate(second.content, "CDA-N1").ok


def test_another_ppa_starts_its_own_series(record: PpaRecord) -> None:
    first = render_cda(record, _ctx())
    data = _data()
    data["ppa"]["id"] = "PP2"
    other = PpaRecord.model_validate(data)
    previous = PreviousVersion(set_id=first.set_id, version=3, document_id=first.document_id)
    rendition = render_cda(other, _ctx(submission_id=uuid.uuid4(), previous={"cda": previous}))
    assert rendition.set_id != first.set_id and rendition.version == 1 and rendition.replaces is None


def test_unqualified_identity_sends_no_ins(validator: Validator) -> None:
    data = _data()
    data["person"]["identity_status"] = "recuperee"
    record = PpaRecord.model_validate(data)
    rendition = render_cda(record, _ctx())
    assert b"279035121518989" not in rendition.content
    assert rendition.metadata is not None and rendition.metadata.patient_id == "EHPAD-2024-0042"
    assert PPA.facts(record).ins_qualified is False
    assert validator.validate(rendition.content, "CDA-N1").ok


def test_exchange_metadata(record: PpaRecord) -> None:
    meta = render_cda(record, _ctx()).metadata
    assert meta is not None
    assert (meta.type_code.code, meta.type_code.system) == ("80788-3", "2.16.840.1.113883.6.1")
    assert meta.format_code.code == "urn:ihe:iti:xds-sd:pdf:2008"
    assert meta.mime_type == "text/xml"
    assert meta.healthcare_facility_type_code.code == "SA17"
    assert meta.practice_setting_code.code == "ESSMS"
    assert meta.confidentiality_code.code == "N"
    assert (meta.patient_id, meta.patient_id_system) == ("279035121518989", "1.2.250.1.213.1.4.10")
    assert meta.author_institution_id == "1.2.250.1.71.4.2.2^1750803447"
    assert meta.creation_time == NOW
    assert meta.service_start is not None and meta.service_start.date().isoformat() == "2024-03-01"
    assert meta.extra["model"] == "CDA-N1" and meta.extra["version"] == 1


def test_facts_carry_sharing_refusals(record: PpaRecord) -> None:
    facts = PPA.facts(record)
    assert facts.person_ref == "EHPAD-2024-0042"
    assert facts.sharing_refused_with == frozenset({"viatrajectoire"})
    assert "PAT-TROIS" not in repr(facts) and "1979" not in repr(facts)


def test_draft_is_not_shared() -> None:
    data = _data()
    data["ppa"]["status"] = "draft"
    record = PpaRecord.model_validate(data)
    with pytest.raises(MappingFailed) as failed:
        PPA.render(record, _ctx())
    assert failed.value.pointer == "/ppa/status"


def test_render_is_pure_and_golden(record: PpaRecord) -> None:
    renditions = PPA.render(record, _ctx())
    assert [r.kind for r in renditions] == ["cda", "fhir"]
    again = PPA.render(record, _ctx())
    assert [r.content for r in again] == [r.content for r in renditions]
    digest = hashlib.sha256(renditions[0].content).hexdigest()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(digest + "\n", encoding="ascii")
    assert GOLDEN.read_text(encoding="ascii").strip() == digest, "CDA bytes changed: UPDATE_GOLDEN=1 if intended"
