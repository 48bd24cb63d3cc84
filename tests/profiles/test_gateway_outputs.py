"""The gateway's own FHIR renditions pass the conformance gate: the PPA's TDDUI transaction
(sample records and property-generated people/ESSMS/authors) and the DLU document, with every
profile they declare known to the validator (no "not-supported" findings); broken Goal
attente / projet de vie are rejected at the right path."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from pydantic import ValidationError

from mappings.base import RenderContext
from mappings.dlu_fhir import to_fhir
from mappings.ppa import PpaRecord, render_fhir
from mappings.record import DluRecord
from profiles import Report, check_rendition, definitions
from tests.strategies import dui_parts

RECORDS = Path(__file__).resolve().parents[1] / "resources" / "records"
PPA_RECORDS = sorted(RECORDS.glob("ppa-*.json"))
DLU_RECORDS = sorted(p for p in RECORDS.glob("*.json") if "dlu" in json.loads(p.read_text(encoding="utf-8")))
TDDUI = "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/"
CTX = RenderContext(now=datetime(2026, 1, 5, 9, 0, tzinfo=UTC), submission_id=uuid.UUID(int=11))


def ppa_data(path: Path = PPA_RECORDS[0]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _declared(bundle: dict[str, Any]) -> set[str]:
    roots = [bundle, *(e["resource"] for e in bundle.get("entry", []))]
    return {p for r in roots for p in r.get("meta", {}).get("profile", [])}


def assert_every_declared_profile_checked(content: bytes, report: Report) -> None:
    """No profile the rendition declares is unknown to the validator, and each was really checked."""
    unchecked = [(i.expression, i.message) for i in report.issues if i.code == "not-supported"]
    assert unchecked == []
    declared = _declared(json.loads(content))
    assert [p for p in sorted(declared) if not definitions.chain(p)] == []
    assert declared <= set(report.profiles)


def assert_gate_passes(content: bytes) -> None:
    report = check_rendition(content, "fhir:tddui")
    assert report.ok, [(i.expression, i.message) for i in report.errors]
    assert [(i.expression, i.message) for i in report.issues if i.severity == "warning"] == []
    assert_every_declared_profile_checked(content, report)


def test_there_are_ppa_and_dlu_sample_records() -> None:
    assert PPA_RECORDS and DLU_RECORDS


@pytest.mark.parametrize("path", PPA_RECORDS, ids=lambda p: p.stem)
def test_ppa_sample_rendition_passes_the_tddui_gate(path: Path) -> None:
    rendition = render_fhir(PpaRecord.model_validate(ppa_data(path)), CTX)
    assert "fhir:tddui" in rendition.conformance
    assert_gate_passes(rendition.content)
    checked = set(check_rendition(rendition.content, "fhir:tddui").profiles)
    for name in ("tddui-careplan-projet-personnalise", "tddui-task-prestation", "tddui-bundle"):
        assert TDDUI + name in checked
    data = ppa_data(path)
    if data["ppa"]["expression"].get("wishes"):
        assert TDDUI + "tddui-goal-attente" in checked
    if data["ppa"]["expression"].get("life_project"):
        assert TDDUI + "tddui-goal-projet-vie" in checked


@pytest.mark.parametrize("path", DLU_RECORDS, ids=lambda p: p.stem)
def test_dlu_sample_rendition_declares_only_known_profiles(path: Path) -> None:
    rendition = to_fhir(DluRecord.model_validate_json(path.read_text(encoding="utf-8")), CTX)
    for tag in rendition.conformance:
        report = check_rendition(rendition.content, tag)
        assert report.ok, [(i.expression, i.message) for i in report.errors]
        assert_every_declared_profile_checked(rendition.content, report)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(parts=dui_parts())
def test_ppa_renditions_for_generated_people_pass_the_tddui_gate(parts: dict[str, Any]) -> None:
    data = ppa_data()
    for key in ("person", "essms", "author"):
        data[key] = json.loads(parts[key].model_dump_json(exclude_none=True))
    if not parts["person"].ins_usable:
        data["birth_order"] = 1  # TDDUI needs the rang de naissance when the INS is not sent
    try:
        record = PpaRecord.model_validate(data)
    except ValidationError:
        assume(False)  # e.g. a person born after the PPA's dates
        raise
    assert_gate_passes(render_fhir(record, CTX).content)


def _entries(profile_name: str) -> list[tuple[int, dict[str, Any]]]:
    bundle = json.loads(render_fhir(PpaRecord.model_validate(ppa_data()), CTX).content)
    url = f"https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/{profile_name}"
    return [(i, e["resource"]) for i, e in enumerate(bundle["entry"]) if url in e["resource"]["meta"]["profile"]]


def test_task_prestation_rejects_a_besoin_code_as_prestation() -> None:
    from profiles import validate

    (_, task), *_ = _entries("tddui-task-prestation")
    index = next(i for i, item in enumerate(task["input"]) if item["type"]["coding"][0]["code"] == "typePrestation")
    task["input"][index]["valueCodeableConcept"]["coding"][0]["code"] = "1.2.1.3"  # a J285 besoin
    found = {(i.expression, i.rule) for i in validate(task).errors}
    assert (f"Task.input[{index}].valueCodeableConcept.coding[0].code", "binding") in found


def _broken(profile_name: str, change: Any) -> tuple[str, Report]:
    """The sample PPA bundle with ``change`` applied to its first ``profile_name`` entry."""
    bundle = json.loads(render_fhir(PpaRecord.model_validate(ppa_data()), CTX).content)
    index, resource = next(
        (i, e["resource"])
        for i, e in enumerate(bundle["entry"])
        if TDDUI + profile_name in e["resource"]["meta"]["profile"]
    )
    change(resource)
    return f"Bundle.entry[{index}].resource", check_rendition(json.dumps(bundle).encode("utf-8"), "fhir:tddui")


def _errors(report: Report) -> set[tuple[str, str, str]]:
    return {(i.profile, i.expression, i.rule) for i in report.errors}


def test_goal_attente_without_identifier_is_rejected_at_its_identifier() -> None:
    path, report = _broken("tddui-goal-attente", lambda r: r.pop("identifier"))
    assert not report.ok
    assert _errors(report) == {(TDDUI + "tddui-goal-attente", f"{path}.identifier", "card")}


def test_goal_attente_without_careplan_reference_is_rejected_at_its_extension() -> None:
    path, report = _broken("tddui-goal-attente", lambda r: r.pop("extension"))
    assert not report.ok
    assert _errors(report) == {(TDDUI + "tddui-goal-attente", f"{path}.extension", "card")}


def test_goal_attente_with_a_foreign_identifier_system_is_rejected() -> None:
    def change(resource: dict[str, Any]) -> None:
        resource["identifier"][0]["system"] = "https://identifiant-medicosocial-objectif.esante.gouv.fr"

    path, report = _broken("tddui-goal-attente", change)
    assert _errors(report) == {(TDDUI + "tddui-goal-attente", f"{path}.identifier[0].system", "pattern")}


def test_goal_attente_without_its_origin_note_is_rejected() -> None:
    path, report = _broken("tddui-goal-attente", lambda r: r.pop("note"))
    assert _errors(report) == {(TDDUI + "tddui-goal-attente", f"{path}.note", "card")}


def test_goal_projet_vie_without_identifier_is_rejected_at_its_identifier() -> None:
    path, report = _broken("tddui-goal-projet-vie", lambda r: r.pop("identifier"))
    assert not report.ok
    assert _errors(report) == {(TDDUI + "tddui-goal-projet-vie", f"{path}.identifier", "card")}


def test_goal_projet_vie_without_identifier_value_is_rejected() -> None:
    path, report = _broken("tddui-goal-projet-vie", lambda r: r["identifier"][0].pop("value"))
    assert _errors(report) == {(TDDUI + "tddui-goal-projet-vie", f"{path}.identifier[0].value", "card")}


def test_tddui_export_rendition_passes_the_tddui_gate() -> None:
    from mappings.tddui import EXPORT, TdduiExportRecord
    from tests.mappings.test_tddui import _export_data

    rendition = EXPORT.render(TdduiExportRecord.model_validate(_export_data()), CTX)[0]
    assert_gate_passes(rendition.content)


def sdo_outputs() -> list[dict[str, Any]]:
    """The gateway's SDO renditions (mappings.sdo): the Consent and the status Tasks, without and with
    the unit's status (every input slice the mapping writes)."""
    from datetime import date

    from mappings.sdo import SdoConsentRecord, SdoDecision, SdoStatusRecord, SdoUnit, consent_resource, task_resource

    decision = SdoDecision(id_decision="MDPH75-D-1", id_nat_decision="VT-000123")
    common = {"essms_finess": "750000001", "person_ref": "p-1", "decision": decision}
    unit = SdoUnit(
        id_unite="ROR-U-1",
        nom_unite="Unité A",
        categorie_organisation="01",
        mode_prise_charge="46",
        statut_unite="12",
        date_statut_unite=date(2026, 1, 2),
        motif_unite="3",
        temporalite_accueil="01",
        accueil_sequentiel=True,
    )
    statuses = [
        SdoStatusRecord(**common, essms_name="ESSMS", statut_esms="42", date_statut=date(2026, 1, 2)),
        SdoStatusRecord(**common, essms_name="ESSMS", statut_esms="45", motif_esms="109", date_statut=date(2026, 1, 2)),
        SdoStatusRecord(**common, essms_name="ESSMS", statut_esms="47", date_statut=date(2026, 1, 2), unit=unit),
    ]
    set_id = "urn:uuid:00000000-0000-0000-0000-000000000001"
    return [
        consent_resource(SdoConsentRecord(**common, collected_on=date(2026, 1, 2))),
        *(task_resource(s, last_updated="2026-01-05T09:00:00Z", set_id=set_id) for s in statuses),
    ]


def mhd_outputs() -> list[dict[str, Any]]:
    """The gateway's ITI-65 Provide Document Bundles (connectors.dmp.mhd, the DMP's PDSm route) for a
    DLU's CDA: a new document and a replacement, with a visibility code among the security labels."""
    from types import SimpleNamespace

    from connectors.dmp.metadata import document_entry, visibility_codes
    from connectors.dmp.mhd import provide_bundle
    from tests.connectors.dmp.conftest import render

    rendition, facts = render(seed=7)
    assert rendition.metadata is not None
    envelope: Any = SimpleNamespace(idempotency_key="delivery-mhd-1", facts=facts)
    entry = document_entry(
        rendition.content,
        rendition.metadata,
        document_id=rendition.document_id,
        entry_id="urn:uuid:6b3c3ad5-6a26-4a6e-9a1e-5d4d9c2b2f10",
        document_ref="d",
        visibility=visibility_codes(["invisible_to_person"]),
    )
    source = "1.2.250.1.999.1.1"
    return [
        provide_bundle(envelope, [entry], [rendition], {}, source),
        provide_bundle(
            envelope, [entry], [rendition], {entry.entry_id: "00000000-0000-4000-8000-000000000001"}, source
        ),
    ]


@pytest.mark.parametrize("index", [0, 1], ids=["new", "replacement"])
def test_the_gateways_iti65_bundle_passes_the_pdsm_gate(index: int) -> None:
    content = json.dumps(mhd_outputs()[index]).encode()
    report = check_rendition(content, "fhir:pdsm")
    assert report.ok, [(i.expression, i.message) for i in report.errors]
    assert [(i.expression, i.message) for i in report.issues if i.severity == "warning"] == []
    assert_every_declared_profile_checked(content, report)
    for name in ("IHE.MHD.Comprehensive.ProvideBundle", "IHE.MHD.Comprehensive.SubmissionSet"):
        assert "https://profiles.ihe.net/ITI/MHD/StructureDefinition/" + name in report.profiles


#: what the gateway's SDO outputs may warn about: the value sets without a code list here (the unit's
#: status and motif, JDV_J253/J250) and the typeDroitPrestation slice (placeholder value set in the IG)
SDO_DOCUMENTED_WARNINGS = {
    ("binding-unchecked", "JDV-J253-StatutPersonnePriseChargeUnite"),
    ("binding-unchecked", "JDV-J250-MotifStatutPersonnePriseChargeUnite"),
    ("card", "Task.input (slice typeDroitPrestation)"),
}


@pytest.mark.parametrize("resource", sdo_outputs(), ids=lambda r: f"{r['resourceType']}-{len(r.get('input', []))}")
def test_sdo_outputs_conform_to_the_generated_sdo_profiles(resource: dict[str, Any]) -> None:
    content = json.dumps(resource).encode()
    report = check_rendition(content, "fhir:r4")
    assert report.ok, [(i.expression, i.message) for i in report.errors]
    assert set(report.profiles) >= set(resource["meta"]["profile"])
    warnings = {
        (i.rule, next((w for _, w in SDO_DOCUMENTED_WARNINGS if w in i.message), i.message))
        for i in report.issues
        if i.severity == "warning"
    }
    assert warnings <= SDO_DOCUMENTED_WARNINGS
    # every declared profile is known (an unknown one is "not-supported" too)
    assert [i for i in report.issues if i.code == "not-supported" and i.rule != "binding-unchecked"] == []
