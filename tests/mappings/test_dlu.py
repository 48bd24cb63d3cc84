"""DLU and FLUDT renditions: conformance to the CI-SIS kit, identity rules, versioning, metadata."""

from __future__ import annotations

import importlib.util
import uuid
from typing import Any

import pytest
from lxml import etree

from mappings import registry
from mappings.base import MappingFailed, PreviousVersion, RenderContext
from mappings.dlu import DLU, FLUDT_MODEL, local_person_root, render_dlu, render_fludt
from mappings.record import DluRecord
from tests.mappings.conftest import DLU_VOLET, FLUDT_VOLET, SAMPLES, fixed_ctx, load_record, record_json

NS = {"h": "urn:hl7-org:v3"}
HAS_FHIR = importlib.util.find_spec("mappings.dlu_fhir") is not None


def _tree(content: bytes) -> Any:
    return etree.fromstring(content)


def _assert_conformant(validator: Any, content: bytes, volet: str) -> None:
    report = validator.validate(content, volet)
    assert report.findings == (), [f.message for f in report.findings]
    # the profiles the ANS pipeline leaves optional too, as errors (the gateway's own documents);
    # their closed-template warnings (an element the template does not list) stay warnings
    optional = validator.validate(content, volet, optional="error")
    assert optional.errors == [], [f.message for f in optional.errors]


@pytest.mark.parametrize("name", SAMPLES)
def test_samples_give_conformant_documents(name: str, validator: Any) -> None:
    record = load_record(name)
    renditions = DLU.render(record, fixed_ctx())
    kinds = [r.kind for r in renditions]
    expected = ["cda"] + (["fludt-cda"] if record.transfer else []) + (["fhir"] if HAS_FHIR else [])
    assert kinds == expected
    for rendition in renditions:
        if rendition.kind == "fhir":
            continue
        volet = DLU_VOLET if rendition.kind == "cda" else FLUDT_VOLET
        assert rendition.conformance == (f"cisis:{volet}",)
        assert rendition.media_type == "application/xml"
        _assert_conformant(validator, rendition.content, volet)


def test_the_validator_does_catch_a_broken_document(validator: Any) -> None:
    """Guard against a validator that would accept anything."""
    content = render_dlu(load_record("rich"), fixed_ctx()).content
    tree = _tree(content)
    birth = tree.find(".//h:patient/h:birthTime", NS)
    birth.getparent().remove(birth)
    report = validator.validate(etree.tostring(tree), DLU_VOLET)
    assert any("date de naissance" in f.message for f in report.findings)


def test_qualified_identity_carries_the_ins_first() -> None:
    record = load_record("rich")
    tree = _tree(render_dlu(record, fixed_ctx()).content)
    ids = tree.findall("h:recordTarget/h:patientRole/h:id", NS)
    assert [(i.get("root"), i.get("extension")) for i in ids] == [
        ("1.2.250.1.213.1.4.10", "279035121518989"),  # INS-NIR test OID
        (local_person_root(record, fixed_ctx()), "EHPAD-2024-0042"),
    ]
    name = tree.find("h:recordTarget/h:patientRole/h:patient/h:name", NS)
    parts = [(child.tag.split("}")[1], child.get("qualifier"), child.text) for child in name]
    assert parts == [
        ("family", "BR", "PAT-TROIS"),
        ("given", None, "DOMINIQUE MARIE-LOUISE"),
        ("given", "BR", "DOMINIQUE"),
        ("family", "CL", "D'Aubigné-Lévêque"),
        ("given", "CL", "Dominique"),
    ]
    assert tree.find(".//h:patient/h:birthplace/h:place/h:addr/h:county", NS).text == "51215"


@pytest.mark.parametrize("name", ["not_qualified", "minimal", "transfer_minimal"])
def test_non_qualified_identity_never_shows_the_ins(name: str) -> None:
    record = load_record(name)
    ctx = fixed_ctx()
    for rendition in DLU.render(record, ctx):
        if rendition.kind == "fhir":
            continue
        tree = _tree(rendition.content)
        ids = tree.findall("h:recordTarget/h:patientRole/h:id", NS)
        assert [(i.get("root"), i.get("extension")) for i in ids] == [
            (local_person_root(record, ctx), record.person.local_id)
        ]
        assert b"1.2.250.1.213.1.4." not in rendition.content
        if record.person.ins is not None:
            assert record.person.ins.matricule.encode() not in rendition.content
        assert rendition.metadata is not None
        assert rendition.metadata.patient_id == record.person.local_id
        assert rendition.metadata.extra["ins_transmissible"] is False
    facts = DLU.facts(record)
    assert facts.ins_qualified is False
    assert "DMP/MSSanté patient routing refused" in facts.extra["dmp_refusal"]
    assert record.person.identity_status.value in facts.extra["dmp_refusal"]


def test_qualified_identity_facts_allow_dmp() -> None:
    facts = DLU.facts(load_record("rich"))
    assert facts.ins_qualified is True
    assert "dmp_refusal" not in facts.extra
    assert facts.extra["has_transfer"] is True


def test_local_id_root_is_the_essms_one_when_given() -> None:
    record = load_record("accented_names")
    assert local_person_root(record, fixed_ctx()) == "1.2.250.1.4242.7"
    other = load_record("minimal")
    assert local_person_root(other, fixed_ctx()) == "1.2.250.1.999.1.1.5.1750000010"
    corsica = DluRecord.model_validate(
        {**record_json("minimal"), "essms": {"finess": "2B0000123", "name": "EHPAD de Bastia"}}
    )
    assert local_person_root(corsica, fixed_ctx()) == "1.2.250.1.999.1.1.5.30000123"


def test_rendering_is_deterministic_and_ids_come_from_the_submission() -> None:
    record = load_record("rich")
    first = DLU.render(record, fixed_ctx(seed=7))
    again = DLU.render(record, fixed_ctx(seed=7))
    assert [r.content for r in first] == [r.content for r in again]
    other = DLU.render(record, fixed_ctx(seed=8))
    assert first[0].document_id != other[0].document_id
    assert first[0].document_id == "1.2.250.1.999.1.1.1.7"
    assert first[1].document_id == "1.2.250.1.999.1.1.2.7"
    assert first[0].set_id == "1.2.250.1.999.1.1.3.7"
    tree = _tree(first[0].content)
    assert tree.find("h:id", NS).get("root") == first[0].document_id
    assert tree.find("h:setId", NS).get("root") == first[0].set_id
    assert tree.find("h:versionNumber", NS).get("value") == "1"
    assert tree.find("h:relatedDocument", NS) is None
    assert first[0].replaces is None


def test_new_version_keeps_the_set_id_and_replaces_the_previous(validator: Any) -> None:
    record = load_record("rich")
    v1 = render_dlu(record, fixed_ctx(seed=1))
    ctx = fixed_ctx(seed=2, previous={"cda": PreviousVersion(v1.set_id, v1.version, v1.document_id)})
    v2 = render_dlu(record, ctx)
    assert (v2.set_id, v2.version, v2.replaces) == (v1.set_id, 2, v1.document_id)
    assert v2.document_id != v1.document_id
    tree = _tree(v2.content)
    assert tree.find("h:setId", NS).get("root") == v1.set_id
    assert tree.find("h:versionNumber", NS).get("value") == "2"
    related = tree.find("h:relatedDocument", NS)
    assert related.get("typeCode") == "RPLC"
    assert related.find("h:parentDocument/h:id", NS).get("root") == v1.document_id
    assert v2.metadata is not None and v2.metadata.extra["version"] == 2
    _assert_conformant(validator, v2.content, DLU_VOLET)


def test_fludt_series_follow_the_transfer() -> None:
    record = load_record("rich")
    first = render_fludt(record, fixed_ctx(seed=1))
    # the same transfer sent again: a new version of its sheet
    same = render_fludt(
        record, fixed_ctx(seed=2, previous={"fludt-cda": PreviousVersion(first.set_id, 1, first.document_id)})
    )
    assert (same.set_id, same.version, same.replaces) == (first.set_id, 2, first.document_id)
    # another transfer: a new sheet, not a replacement of the previous transfer's one
    data = record_json("rich")
    data["transfer"]["transfer_time"] = "2024-06-10T09:00:00+02:00"
    data["last_updated"] = "2024-06-10T08:00:00+02:00"
    later = DluRecord.model_validate(data)
    new = render_fludt(
        later, fixed_ctx(seed=3, previous={"fludt-cda": PreviousVersion(first.set_id, 1, first.document_id)})
    )
    assert new.set_id != first.set_id
    assert (new.version, new.replaces) == (1, None)


def test_exchange_metadata() -> None:
    record = load_record("rich")
    dlu, fludt = (r for r in DLU.render(record, fixed_ctx()) if r.kind != "fhir")
    meta = dlu.metadata
    assert meta is not None
    assert (meta.type_code.code, meta.type_code.system) == ("74207-2", "2.16.840.1.113883.6.1")
    assert meta.format_code.code == "urn:asip:ci-sis:dlu:2015"
    assert meta.healthcare_facility_type_code.code == "SA17"
    assert meta.practice_setting_code.code == "ESSMS"
    assert meta.confidentiality_code.code == "N"
    assert meta.author_institution_id == "1.2.250.1.71.4.2.2^1750803447"
    assert meta.author_person_id == "801234567897"
    assert (meta.patient_id, meta.patient_id_system) == ("279035121518989", "1.2.250.1.213.1.4.10")
    assert meta.creation_time == fixed_ctx().now
    assert meta.service_start == record.last_updated
    assert fludt.metadata is not None
    assert fludt.metadata.format_code.code == "urn:asip:ci-sis:fludt:2017"
    assert fludt.metadata.extra["model"] == FLUDT_MODEL
    assert record.transfer is not None
    assert fludt.metadata.service_start == record.transfer.transfer_time


def test_header_parts() -> None:
    tree = _tree(render_dlu(load_record("rich"), fixed_ctx()).content)
    assert [t.get("root") for t in tree.findall("h:templateId", NS)] == [
        "2.16.840.1.113883.2.8.2.1",
        "1.2.250.1.213.1.1.1.1",
        "1.2.250.1.213.1.1.1.22",
    ]
    assert tree.find("h:author/h:assignedAuthor/h:id", NS).get("extension") == "801234567897"
    org = tree.find("h:custodian//h:representedCustodianOrganization/h:id", NS)
    assert (org.get("root"), org.get("extension")) == ("1.2.250.1.71.4.2.2", "1750803447")
    informants = [e.get("classCode") for e in tree.findall("h:informant/h:relatedEntity", NS)]
    assert informants == ["ECON", "NOK"]
    pcp = tree.find("h:participant[@typeCode='INF']", NS)
    assert pcp.find("h:functionCode", NS).get("code") == "PCP"
    assert pcp.find("h:associatedEntity/h:id", NS).get("extension") == "810101234564"
    guardian = tree.find(".//h:patient/h:guardian", NS)
    assert guardian.find("h:code", NS).get("code") == "TUTEUR"
    assert tree.find("h:documentationOf/h:serviceEvent/h:code", NS).get("code") == "34117-2"
    assert tree.find("h:documentationOf/h:serviceEvent/h:effectiveTime/h:low", NS).get("value") == "20240502100000+0200"
    facility = tree.find("h:componentOf/h:encompassingEncounter/h:location/h:healthCareFacility/h:code", NS)
    assert (facility.get("code"), facility.get("codeSystem")) == ("SA17", "1.2.250.1.71.4.2.4")


def test_no_general_practitioner_gives_a_null_participant(validator: Any) -> None:
    rendition = render_dlu(load_record("minimal"), fixed_ctx())
    tree = _tree(rendition.content)
    assert tree.find("h:participant/h:functionCode", NS).get("code") == "PCP"
    assert tree.find("h:participant/h:associatedEntity", NS) is not None
    assert tree.find("h:participant/h:associatedEntity/h:id", NS) is None
    assert tree.find("h:author/h:assignedAuthor/h:id", NS).get("extension") == "3750000010/IDE-04"
    _assert_conformant(validator, rendition.content, DLU_VOLET)


def test_observed_state_is_coded_from_the_value_set() -> None:
    record = load_record("rich")
    tree = _tree(render_dlu(record, fixed_ctx()).content)
    (section,) = tree.xpath(".//h:section[h:templateId/@root='1.3.6.1.4.1.19376.1.7.3.1.1.13.7']", namespaces=NS)
    coded = [
        (o.find("h:code", NS).get("code"), o.find("h:value", NS).get("value"))
        for o in section.iterfind(".//h:observation", NS)
    ]
    assert coded == [(s.code, "true" if s.present else "false") for s in record.dlu.observed_state]
    for obs in section.iterfind(".//h:observation", NS):
        ref = obs.find("h:text/h:reference", NS).get("value")
        assert section.find(f".//h:content[@ID='{ref[1:]}']", NS) is not None


def test_fludt_content() -> None:
    tree = _tree(render_fludt(load_record("rich"), fixed_ctx()).content)
    assert tree.find("h:documentationOf/h:serviceEvent/h:code", NS).get("code") == "28651-8"
    codes = [c.get("code") for c in tree.iterfind(".//h:observation/h:code", NS)]
    for expected in ("57277-6", "8867-4", "8310-5", "29463-7", "8480-6", "8462-4", "DLU_002", "R52.9", "GEN-244"):
        assert expected in codes
    assert codes.count("P0102") == 1 and codes.count("Q021003") == 1
    (transfer,) = tree.xpath(".//h:act[h:code/@code='80413-8']", namespaces=NS)
    assert transfer.find("h:effectiveTime/h:low", NS).get("value") == "20240502143000+0200"
    assert transfer.find(".//h:playingEntity/h:name", NS).text == "Service des urgences de l'hôpital Ambroise-Paré"


def test_business_rules_that_cannot_be_met_raise_mapping_failed() -> None:
    record = load_record("minimal")
    biggest = RenderContext(now=fixed_ctx().now, submission_id=uuid.UUID(int=2**128 - 1))
    assert len(render_dlu(record, biggest).document_id) == 17 + 3 + 39  # default root: fits
    long_root = RenderContext(now=biggest.now, submission_id=biggest.submission_id, id_root="1.2.250.1.999.1.1.12345")
    with pytest.raises(MappingFailed, match="within 64"):
        render_dlu(record, long_root)
    with pytest.raises(MappingFailed, match="not a valid OID"):
        render_dlu(record, fixed_ctx(id_root="1.2.x"))
    with pytest.raises(MappingFailed) as caught:
        render_fludt(record, fixed_ctx())
    assert caught.value.pointer == "/record/transfer"


def test_wrong_record_type_is_refused() -> None:
    with pytest.raises(TypeError):
        DLU.render(load_record("minimal").person, fixed_ctx())  # type: ignore[arg-type]


def test_registered_under_dlu() -> None:
    assert registry.get("dlu") is DLU
    assert "dlu" in registry.codes()
    assert DLU.record_model is DluRecord
    assert isinstance(fixed_ctx(), RenderContext)


def test_fludt_of_an_earlier_transfer_continues_its_own_series() -> None:
    """Issue 7 defect 6: the FLUDT series is found by its setId (one per transfer), not by kind."""
    from mappings.base import PreviousVersion

    record = load_record("rich")
    first = render_fludt(record, fixed_ctx(seed=1))
    other = PreviousVersion(set_id="1.2.3.4.5", version=4, document_id="1.2.3.4.6")  # transfer B, newest
    again = render_fludt(
        record,
        fixed_ctx(
            seed=2,
            previous={"fludt-cda": other},
            series={
                "1.2.3.4.5": other,
                first.set_id: PreviousVersion(set_id=first.set_id, version=1, document_id=first.document_id),
            },
        ),
    )
    assert (again.set_id, again.version, again.replaces) == (first.set_id, 2, first.document_id)
    # and a version that reached nobody is numbered on, but not replaced
    unsent = render_fludt(
        record,
        fixed_ctx(seed=3, series={first.set_id: PreviousVersion(set_id=first.set_id, version=2, document_id=None)}),
    )
    assert (unsent.version, unsent.replaces) == (3, None)
    assert b"RPLC" not in unsent.content


def test_dmp_visibility_choices_reach_the_facts_never_the_document() -> None:
    """Issue 8: masking/invisibility choices travel to the DMP connector (confidentiality codes of
    the submission), derived from the record, and are never written in the CDA."""
    data = record_json("rich")
    data["person"]["dmp_visibility"] = ["invisible_to_person", "masked_to_professionals"]
    record = DluRecord.model_validate(data)
    facts = DLU.facts(record)
    assert facts.extra["sharing_choices"] == ["invisible_to_person", "masked_to_professionals"]
    content = render_dlu(record, fixed_ctx()).content
    assert b"MASQUE_PS" not in content and b"INVISIBLE" not in content
    data["person"]["dmp_visibility"] = ["masked_to_professionals", "masked_to_professionals"]
    with pytest.raises(ValueError, match="duplicates"):
        DluRecord.model_validate(data)
