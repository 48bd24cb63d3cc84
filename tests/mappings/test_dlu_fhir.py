"""The DLU as a FHIR R4 document Bundle: valid (R4B models + profiles validator), same sections
as the CDA DLU, deterministic, INS only for a qualified identity, versioned series."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from hypothesis import HealthCheck, given, settings

from mappings.base import PreviousVersion, RenderContext
from mappings.dlu_fhir import SECTIONS, to_fhir
from mappings.record import DluRecord, IdentityStatus
from profiles import check_rendition, validate
from tests.strategies import dlu_records

RECORDS = Path(__file__).resolve().parents[1] / "resources" / "records"
INS_OIDS = {f"urn:oid:1.2.250.1.213.1.4.{n}" for n in (8, 9, 10, 11)}
MANDATORY = ("11302-7", "10160-0", "42348-3", "42545-4", "30954-2", "55107-7")  # 1..1 in DLU-EHPAD-DLU


def dlu_samples() -> list[Path]:
    out = []
    for path in sorted(RECORDS.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if "dlu" in data:
            out.append(path)
    return out


def ctx(seed: int = 1, **kwargs: Any) -> RenderContext:
    now = datetime(2036, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    return RenderContext(now=now, submission_id=uuid.UUID(int=seed), **kwargs)


def bundle_of(record: DluRecord, context: RenderContext | None = None) -> dict[str, Any]:
    rendition = to_fhir(record, context or ctx())
    return json.loads(rendition.content)


def resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def assert_valid(content: bytes) -> None:
    Bundle.model_validate_json(content)  # parses with the R4B models (same as R4 for these resources)
    report = check_rendition(content, "fhir:r4")
    assert report.ok, [(i.expression, i.message) for i in report.errors]
    assert "http://hl7.org/fhir/StructureDefinition/Composition" in report.profiles


def test_there_are_dlu_sample_records() -> None:
    assert len(dlu_samples()) >= 2


@pytest.mark.parametrize("path", dlu_samples(), ids=lambda p: p.stem)
def test_sample_records_give_valid_document_bundles(path: Path) -> None:
    record = DluRecord.model_validate_json(path.read_text(encoding="utf-8"))
    rendition = to_fhir(record, ctx())
    assert (rendition.kind, rendition.media_type, rendition.conformance) == (
        "fhir",
        "application/fhir+json",
        ("fhir:r4",),
    )
    assert_valid(rendition.content)
    bundle = json.loads(rendition.content)
    assert bundle["type"] == "document"
    assert bundle["timestamp"] == "2036-01-02T03:04:05+01:00"
    assert bundle["identifier"] == {"system": "urn:ietf:rfc:3986", "value": rendition.document_id}
    composition = bundle["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition"
    assert composition["type"]["coding"][0] == {"system": "http://loinc.org", "code": "74207-2"}
    codes = [s["code"]["coding"][0]["code"] for s in composition["section"]]
    order = [loinc for loinc, _ in SECTIONS.values()]
    assert codes == sorted(codes, key=order.index)  # the CDA section order
    assert set(MANDATORY) <= set(codes)
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urls)) == len(urls) and all(u.startswith("urn:uuid:") for u in urls)


def test_rich_record_maps_every_block() -> None:
    record = DluRecord.model_validate_json((RECORDS / "rich.json").read_text(encoding="utf-8"))
    bundle = bundle_of(record)
    dlu = record.dlu
    assert len(resources(bundle, "Condition")) == len(dlu.active_problems) + len(dlu.medical_history)
    assert len(resources(bundle, "AllergyIntolerance")) == len(dlu.allergies)
    assert len(resources(bundle, "MedicationStatement")) == len(dlu.treatments)
    assert len(resources(bundle, "Immunization")) == len(dlu.vaccinations)
    assert len(resources(bundle, "DocumentReference")) == len(dlu.attached_documents)
    observed = {o["code"]["coding"][0]["code"] for o in resources(bundle, "Observation")}
    assert {s.code for s in dlu.observed_state} <= observed
    assert {"75320-2", "U83.71"} <= observed
    (patient,) = resources(bundle, "Patient")
    assert patient["birthDate"] == record.person.traits.birth_date.isoformat()
    assert patient["name"][0]["family"] == record.person.traits.birth_family_name


def test_ins_only_for_a_qualified_identity() -> None:
    record = DluRecord.model_validate_json((RECORDS / "rich.json").read_text(encoding="utf-8"))
    assert record.person.ins_usable and record.person.ins is not None
    (patient,) = resources(bundle_of(record), "Patient")
    assert patient["meta"]["profile"] == ["https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins"]
    ins = [i for i in patient["identifier"] if i["system"] in INS_OIDS]
    assert ins == [
        {
            "use": "official",
            "type": {
                "coding": [
                    {"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203", "code": "INS-NIR-TEST"}
                ]
            },
            "system": "urn:oid:1.2.250.1.213.1.4.10",
            "value": record.person.ins.matricule,
        }
    ]
    status = patient["extension"][0]["extension"][0]["valueCoding"]["code"]
    assert status == "QUAL"
    # the same person with a recovered (not qualified) identity: no INS anywhere in the document
    person = record.person.model_copy(update={"identity_status": IdentityStatus.RECUPEREE})
    recovered = record.model_copy(update={"person": person})
    content = to_fhir(recovered, ctx()).content
    assert record.person.ins.matricule.encode() not in content
    (patient,) = resources(json.loads(content), "Patient")
    assert patient["meta"]["profile"] == ["https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"]
    assert patient["extension"][0]["extension"][0]["valueCoding"]["code"] == "RECUP"
    assert_valid(content)


def test_deterministic_and_seeded_by_the_submission() -> None:
    record = DluRecord.model_validate_json((RECORDS / "rich.json").read_text(encoding="utf-8"))
    first, again, other = to_fhir(record, ctx(1)), to_fhir(record, ctx(1)), to_fhir(record, ctx(2))
    assert first.content == again.content
    assert first.document_id == again.document_id != other.document_id
    assert first.content != other.content
    expected = uuid.uuid5(uuid.UUID(int=1), "dlu-fhir/document")
    assert first.document_id == f"urn:uuid:{expected}"


def test_a_new_version_replaces_the_previous_one() -> None:
    record = DluRecord.model_validate_json((RECORDS / "minimal.json").read_text(encoding="utf-8"))
    v1 = to_fhir(record, ctx(1))
    assert (v1.version, v1.replaces) == (1, None)
    previous = PreviousVersion(set_id=v1.set_id, version=v1.version, document_id=v1.document_id)
    v2 = to_fhir(record, ctx(2, previous={"fhir": previous}))
    assert (v2.set_id, v2.version, v2.replaces) == (v1.set_id, 2, v1.document_id)
    composition = json.loads(v2.content)["entry"][0]["resource"]
    assert composition["identifier"]["value"] == v1.set_id
    assert composition["extension"][0]["valueString"] == "2"
    assert composition["relatesTo"][0]["targetIdentifier"]["value"] == v1.document_id
    assert_valid(v2.content)


def test_naive_clock_is_refused() -> None:
    record = DluRecord.model_validate_json((RECORDS / "minimal.json").read_text(encoding="utf-8"))
    with pytest.raises(ValueError, match="timezone-aware"):
        to_fhir(record, RenderContext(now=datetime(2036, 1, 1), submission_id=uuid.UUID(int=1)))


def test_dlu_document_type_renders_the_fhir_bundle() -> None:
    from mappings.dlu import DLU

    record = DluRecord.model_validate_json((RECORDS / "minimal.json").read_text(encoding="utf-8"))
    fhir = [r for r in DLU.render(record, ctx()) if r.kind == "fhir"]
    assert len(fhir) == 1 and fhir[0].content == to_fhir(record, ctx()).content


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=dlu_records())
def test_generated_records_give_valid_bundles(record: DluRecord) -> None:
    now = max(record.last_updated, datetime(2036, 1, 1, tzinfo=UTC))
    rendition = to_fhir(record, RenderContext(now=now, submission_id=uuid.UUID(int=3)))
    assert_valid(rendition.content)
    bundle = json.loads(rendition.content)
    (patient,) = resources(bundle, "Patient")
    ins = [i for i in patient["identifier"] if i["system"] in INS_OIDS]
    assert bool(ins) == record.person.ins_usable
    if record.person.ins is not None and not record.person.ins_usable:
        assert record.person.ins.matricule.encode() not in rendition.content
    report = validate(patient)
    assert report.ok, [i.message for i in report.errors]
