"""TDDUI transaction Bundles: the PPA's "fhir" rendition and the "tddui-export" document type."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import profiles
from mappings import registry
from mappings.base import MappingFailed, PreviousVersion, RenderContext
from mappings.ppa import PpaRecord, render_fhir
from mappings.tddui import EXPORT, TASK_REASON, TDDUI, TdduiExportRecord

FIXTURE = Path(__file__).parents[1] / "resources" / "records" / "ppa-ehpad.json"
NOW = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
SUBMISSION = uuid.UUID("0d8f7a61-2c4b-4e3a-9f1e-7b6a5c4d3e2f")


def _data() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def _ctx(**kwargs: Any) -> RenderContext:
    return RenderContext(now=NOW, submission_id=kwargs.pop("submission_id", SUBMISSION), **kwargs)


def _bundle(content: bytes) -> dict[str, Any]:
    return json.loads(content)


def _resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def _assert_references_resolve(bundle: dict[str, Any]) -> None:
    urls = {e["fullUrl"] for e in bundle["entry"]}
    assert len(urls) == len(bundle["entry"])

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str):
                assert ref in urls, f"dangling reference {ref}"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk([e["resource"] for e in bundle["entry"]])


def _assert_valid(content: bytes) -> None:
    report = profiles.check_rendition(content, "fhir:tddui")
    errors = [i for i in report.issues if i.severity in ("error", "fatal")]
    assert report.ok and errors == [], errors


def test_ppa_bundle_is_a_valid_tddui_transaction() -> None:
    rendition = render_fhir(PpaRecord.model_validate(_data()), _ctx())
    assert (rendition.kind, rendition.media_type, rendition.conformance) == (
        "fhir",
        "application/fhir+json",
        ("fhir:tddui",),
    )
    bundle = _bundle(rendition.content)
    assert bundle["type"] == "transaction" and bundle["meta"]["profile"] == [TDDUI + "tddui-bundle"]
    assert {e["request"]["method"] for e in bundle["entry"]} == {"POST"}
    assert all(e["fullUrl"].startswith("urn:uuid:") for e in bundle["entry"])
    assert all(e["request"]["url"] == e["resource"]["resourceType"] for e in bundle["entry"])
    _assert_references_resolve(bundle)
    _assert_valid(rendition.content)


def test_careplan_and_its_graph() -> None:
    bundle = _bundle(render_fhir(PpaRecord.model_validate(_data()), _ctx()).content)
    (careplan,) = _resources(bundle, "CarePlan")
    assert careplan["identifier"] == [
        {
            "system": "https://identifiant-medicosocial-projetpersonnalise.esante.gouv.fr",
            "value": "3750803447/EHPAD-2024-0042-PPER-PP1",
        }
    ]
    assert careplan["status"] == "active" and careplan["intent"] == "plan"
    assert careplan["period"] == {"start": "2024-03-01", "end": "2025-02-28"}
    # TDDUI 2.2.0: every supportingInfo carries its discriminator (1..1), the sharing refusal included
    slices = [i["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] for i in careplan["supportingInfo"]]
    assert slices == ["accordStructure", "accordUsager", "accordUsager", "accordUsager"]
    needs = _resources(bundle, "ServiceRequest")
    assert [n["category"][0]["coding"][0]["code"] for n in needs] == ["1.2.1.3", "1.3.4.1"]
    assert {n["category"][0]["coding"][0]["system"] for n in needs} == {
        "https://smt.esante.gouv.fr/terminologie-SERAFINPH"
    }
    assert needs[0]["identifier"][0]["value"] == "3750803447/EHPAD-2024-0042-BESO-B1"
    goals = [g for g in _resources(bundle, "Goal") if g["meta"]["profile"] == [TDDUI + "tddui-goal-objectif"]]
    assert [g["lifecycleStatus"] for g in goals] == ["active", "proposed"]
    assert goals[0]["achievementStatus"]["coding"][0]["code"] == "improving"
    assert goals[0]["target"] == [{"detailString": "Quatre sorties par mois", "dueDate": "2024-08-31"}]
    notes = {n["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]: n["text"] for n in goals[0]["note"]}
    assert notes["titreObjectif"] == "Sortir au parc chaque dimanche"
    assert notes["avisUsagerObjectif"] == "C'est ce qui compte le plus pour moi."
    wishes = [g for g in _resources(bundle, "Goal") if g["meta"]["profile"] == [TDDUI + "tddui-goal-attente"]]
    assert [w["description"]["text"] for w in wishes] == [
        "Marcher jusqu'au parc le dimanche",
        "Chanter à la chorale du jeudi",
    ]
    assert [w["identifier"] for w in wishes] == [
        [
            {
                "system": "https://identifiant-medicosocial-attente.esante.gouv.fr",
                "value": f"3750803447/EHPAD-2024-0042-ATTE-PP1-{n}",
            }
        ]
        for n in (1, 2)
    ]
    careplan_url = next(e["fullUrl"] for e in bundle["entry"] if e["resource"] is careplan)
    for wish in wishes:
        assert wish["extension"] == [
            {"url": TDDUI + "tddui-careplan-reference", "valueReference": {"reference": careplan_url}}
        ]
    life = [g for g in _resources(bundle, "Goal") if g["meta"]["profile"] == [TDDUI + "tddui-goal-projet-vie"]]
    assert [g["identifier"] for g in life] == [
        [
            {
                "system": "https://identifiant-medicosocial-projetvie.esante.gouv.fr",
                "value": "3750803447/EHPAD-2024-0042-PDV-PP1",
            }
        ]
    ]
    tasks = _resources(bundle, "Task")
    kinds = [t["input"][1]["valueCodeableConcept"]["coding"][0]["code"] for t in tasks]
    assert kinds == ["2.1.2.1", "2.3.4.2", "3.2.4.3"]  # direct (J284) and indirect (J283) prestations
    consents = _resources(bundle, "Consent")
    refusal = [c for c in consents if "provision" in c]
    assert (
        refusal[0]["provision"]["type"] == "deny" and refusal[0]["provision"]["purpose"][0]["code"] == "viatrajectoire"
    )
    (stay,) = _resources(bundle, "Encounter")
    assert stay["identifier"][0]["value"] == "3750803447/EHPAD-2024-0042-SEJOUR-S1012"


def test_patient_with_qualified_ins() -> None:
    bundle = _bundle(render_fhir(PpaRecord.model_validate(_data()), _ctx()).content)
    (patient,) = _resources(bundle, "Patient")
    assert patient["meta"]["profile"] == [TDDUI + "tddui-patient-ins"]
    ins = patient["identifier"][0]
    assert (ins["system"], ins["value"], ins["type"]["coding"][0]["code"]) == (
        "urn:oid:1.2.250.1.213.1.4.10",
        "279035121518989",
        "INS-NIR-TEST",
    )
    status = patient["extension"][0]["extension"][0]["valueCoding"]["code"]
    assert status == "QUAL"


def test_patient_without_qualified_ins_carries_no_ins_but_its_birth_order() -> None:
    data = _data()
    data["person"]["identity_status"] = "recuperee"
    rendition = render_fhir(PpaRecord.model_validate(data), _ctx())
    assert b"279035121518989" not in rendition.content
    (patient,) = _resources(_bundle(rendition.content), "Patient")
    assert patient["meta"]["profile"] == [TDDUI + "tddui-patient"]
    # rang de naissance taken from the NIR (characters 11-13 of 279035121518989 -> 189)
    assert patient["_birthDate"]["extension"][0]["valuePositiveInt"] == 189
    _assert_valid(rendition.content)


def test_birth_order_required_without_ins() -> None:
    data = _data()
    data["person"]["identity_status"] = "provisoire"
    data["person"]["ins"] = None
    with pytest.raises(MappingFailed) as failed:
        render_fhir(PpaRecord.model_validate(data), _ctx())
    assert failed.value.pointer == "/birth_order"
    data["birth_order"] = 2
    rendition = render_fhir(PpaRecord.model_validate(data), _ctx())
    _assert_valid(rendition.content)


def test_versions_of_the_ppa_bundle() -> None:
    record = PpaRecord.model_validate(_data())
    first = render_fhir(record, _ctx())
    previous = PreviousVersion(set_id=first.set_id, version=1, document_id=first.document_id)
    second = render_fhir(record, _ctx(submission_id=uuid.uuid4(), previous={"fhir": previous}))
    assert (second.set_id, second.version, second.replaces) == (first.set_id, 2, first.document_id)
    # business identifiers are stable across versions: the consumer recognises the same PPA
    ids = lambda r: sorted(json.dumps(x["identifier"]) for x in _resources(_bundle(r.content), "CarePlan"))  # noqa: E731
    assert ids(first) == ids(second)


def _export_data() -> dict[str, Any]:
    data = _data()
    ppa = data.pop("ppa")
    stay = data.pop("stay")
    data["stays"] = [stay, {"id": "S900", "start": "2019-01-02", "end": "2019-03-31", "encounter_class": "SS"}]
    data["events"] = [
        {
            "id": "E1",
            "stay_id": "S1012",
            "start": "2024-03-04T10:00:00+01:00",
            "end": "2024-03-04T10:45:00+01:00",
            "label": "Séance de kinésithérapie",
            "prestations": ["2.1.2.1"],
            "professional": ppa["contributors"][1]["professional"],
            "report": "Marche de 250 mètres avec déambulateur.",
        },
        {
            "id": "E2",
            "start": "2024-03-07T14:00:00+01:00",
            "end": "2024-03-07T15:00:00+01:00",
            "label": "Chorale",
            "status": "cancelled",
        },
    ]
    data["evaluations"] = [
        {
            "id": "EV1",
            "questionnaire": "serafin",
            "authored": "2024-02-15",
            "stay_id": "S1012",
            "items": [{"link_id": "besoin-mobilite", "text": "Besoins pour la mobilité", "value": 31}],
        }
    ]
    data["ppa"] = ppa
    return data


def test_export_bundle_carries_stays_events_evaluations_and_ppa() -> None:
    record = TdduiExportRecord.model_validate(_export_data())
    assert registry.get("tddui-export") is EXPORT
    (rendition,) = EXPORT.render(record, _ctx())
    assert rendition.conformance == ("fhir:tddui",) and rendition.version == 1
    bundle = _bundle(rendition.content)
    _assert_references_resolve(bundle)
    _assert_valid(rendition.content)
    encounters = _resources(bundle, "Encounter")
    profiles_ = [e["meta"]["profile"][0].rsplit("/", 1)[1] for e in encounters]
    assert profiles_ == [
        "tddui-encounter-sejour",
        "tddui-encounter-sejour",
        "tddui-encounter-evenement",
        "tddui-encounter-evenement",
    ]
    assert encounters[1]["status"] == "finished" and encounters[0]["status"] == "in-progress"
    event = encounters[2]
    assert event["identifier"][0]["value"] == "3750803447/EHPAD-2024-0042-EVN-E1"
    assert event["type"][0]["coding"][0] == {
        "system": "https://smt.esante.gouv.fr/terminologie-SERAFINPH",
        "code": "2.1.2.1",
        "display": "Prestations des auxiliaires médicaux, des instructeurs en locomotion et avéjistes",
    }
    assert event["partOf"]["reference"] == bundle["entry"][2]["fullUrl"]
    (qr,) = _resources(bundle, "QuestionnaireResponse")
    assert qr["questionnaire"].endswith("/tddui-questionnaire-serafin")
    assert qr["identifier"]["value"] == "3750803447/EHPAD-2024-0042-EVAL-EV1"
    assert len(_resources(bundle, "CarePlan")) == 1
    facts = EXPORT.facts(record)
    assert facts.sharing_refused_with == frozenset({"viatrajectoire"})


def test_export_rejects_dangling_references_and_empty_exports() -> None:
    data = _export_data()
    data["events"][0]["stay_id"] = "S404"
    with pytest.raises(ValueError, match="unknown stay"):
        TdduiExportRecord.model_validate(data)
    data = _export_data()
    for key in ("stays", "events", "evaluations"):
        data[key] = []
    data["ppa"] = None
    with pytest.raises(ValueError, match="at least"):
        TdduiExportRecord.model_validate(data)
    data = _export_data()
    data["events"][0]["prestations"] = ["1.2.1.3"]
    with pytest.raises(ValueError, match="not a SERAFIN-PH prestation"):
        TdduiExportRecord.model_validate(data)


def test_an_invalid_bundle_is_caught_by_the_gate() -> None:
    bundle = _bundle(render_fhir(PpaRecord.model_validate(_data()), _ctx()).content)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "CarePlan":
            entry["resource"]["supportingInfo"] = []
    report = profiles.check_rendition(json.dumps(bundle).encode(), "fhir:tddui")
    assert not report.ok


def _with_reviews() -> dict[str, Any]:
    data = _data()
    data["ppa"]["reviews"] = [
        {
            "on": "2024-05-20",
            "kind": "intermediate",
            "participants": ["ide", "kine"],
            "person_present": True,
            "synthesis": "Sorties au parc reprises ; chorale à poursuivre.",
        },
        {"on": "2024-06-10", "participants": ["anim"], "person_present": False, "synthesis": "Point chorale."},
    ]
    return data


def _bilans(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in _resources(bundle, "Task") if t["meta"]["profile"] == [TDDUI + "tddui-task-bilan"]]


def _url_of(bundle: dict[str, Any], resource: dict[str, Any]) -> str:
    return next(e["fullUrl"] for e in bundle["entry"] if e["resource"] is resource)


def test_reviews_are_task_bilans_of_the_careplan() -> None:
    content = render_fhir(PpaRecord.model_validate(_with_reviews()), _ctx()).content
    bundle = _bundle(content)
    (careplan,) = _resources(bundle, "CarePlan")
    bilans = _bilans(bundle)
    assert [b["identifier"] for b in bilans] == [
        [
            {
                "system": "https://identifiant-medicosocial-bilan.esante.gouv.fr",
                "value": f"3750803447/EHPAD-2024-0042-BILA-PP1-{n}",
            }
        ]
        for n in (1, 2)
    ]
    assert {b["basedOn"][0]["reference"] for b in bilans} == {_url_of(bundle, careplan)}
    assert [b["executionPeriod"] for b in bilans] == [{"start": "2024-05-20"}, {"start": "2024-06-10"}]
    assert [b["status"] for b in bilans] == ["completed", "completed"]
    assert {b["code"]["coding"][0]["code"] for b in bilans} == {"INTERMEDIAIRE"}
    first, last = ({i["type"]["coding"][0]["code"]: i for i in b.get("input", [])} for b in bilans)
    assert first["invite"]["valueString"] == (
        "Usager; Anne LEROY (Infirmière coordinatrice); Stéphane MÉDIONI (Masseur-kinésithérapeute)"
    )
    assert "dateProchainBilan" not in first  # only the latest review carries the next evaluation
    assert last["invite"]["valueString"] == "Karim Benali (Animateur)"
    assert last["dateProchainBilan"]["valueDateTime"] == "2024-08-20"
    assert [b["output"] for b in bilans] == [
        [
            {
                "type": {
                    "coding": [
                        {
                            "system": "https://interop.esante.gouv.fr/ig/fhir/tddui/CodeSystem/tddui-task-output-bilan",
                            "code": "syntheseBilan",
                        }
                    ]
                },
                "valueString": text,
            }
        ]
        for text in ("Sorties au parc reprises ; chorale à poursuivre.", "Point chorale.")
    ]
    report = profiles.check_rendition(content, "fhir:tddui")
    assert [i.message for i in report.issues if i.severity != "information" or i.code == "not-supported"] == []
    assert TDDUI + "tddui-task-bilan" in report.profiles
    # same record, same context: same bundle
    assert render_fhir(PpaRecord.model_validate(_with_reviews()), _ctx()).content == content


def test_a_final_review_and_no_review() -> None:
    data = _with_reviews()
    data["ppa"]["reviews"][1]["kind"] = "final"
    bundle = _bundle(render_fhir(PpaRecord.model_validate(data), _ctx()).content)
    assert [b["code"]["coding"][0]["code"] for b in _bilans(bundle)] == ["INTERMEDIAIRE", "FINAL"]
    assert _bilans(_bundle(render_fhir(PpaRecord.model_validate(_data()), _ctx()).content)) == []


def _break(resource: dict[str, Any], change: str) -> None:
    if change == "no-date":
        del resource["executionPeriod"]
    elif change == "bad-category":
        resource["code"]["coding"][0]["code"] = "ANNUEL"
    elif change == "two-invites":
        resource["input"].append(dict(resource["input"][0]))
    elif change == "invite-not-text":
        resource["input"][0] = {"type": resource["input"][0]["type"], "valueInteger": 3}
    elif change == "no-careplan":
        del resource["basedOn"]
    elif change == "bad-identifier-system":
        resource["identifier"][0]["system"] = "https://identifiant-medicosocial-prestation.esante.gouv.fr"


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ("no-date", "executionPeriod"),
        ("bad-category", "code"),
        ("two-invites", "input"),
        ("invite-not-text", "input"),
        ("no-careplan", "basedOn"),
        ("bad-identifier-system", "identifier"),
    ],
)
def test_a_broken_bilan_is_rejected_at_its_path(change: str, path: str) -> None:
    bundle = _bundle(render_fhir(PpaRecord.model_validate(_with_reviews()), _ctx()).content)
    index = next(i for i, e in enumerate(bundle["entry"]) if e["resource"] in _bilans(bundle))
    _break(bundle["entry"][index]["resource"], change)
    report = profiles.check_rendition(json.dumps(bundle).encode(), "fhir:tddui")
    errors = [i for i in report.issues if i.severity in ("error", "fatal")]
    assert errors and all(i.path.startswith(f"Bundle.entry[{index}].resource.{path}") for i in errors), errors


def test_a_prestation_links_every_need_it_answers() -> None:
    record = PpaRecord.model_validate(_data())
    bundle = _bundle(render_fhir(record, _ctx()).content)
    need_urls = {
        n["identifier"][0]["value"].rsplit("-", 1)[1]: _url_of(bundle, n) for n in _resources(bundle, "ServiceRequest")
    }
    prestations = [t for t in _resources(bundle, "Task") if t["meta"]["profile"] == [TDDUI + "tddui-task-prestation"]]
    assert record.ppa is not None
    for item, task in zip(record.ppa.prestations, prestations, strict=True):
        linked = [x["valueReference"]["reference"] for x in task["extension"] if x["url"] == TASK_REASON]
        assert linked == [need_urls[n] for n in item.need_ids]
        assert task["reasonReference"] == {"reference": need_urls[item.need_ids[0]]}
    p3 = prestations[2]
    assert len([x for x in p3["extension"] if x["url"] == TASK_REASON]) == 2  # P3 answers B1 and B2


def test_prestation_inputs_use_the_released_tddui_code_system() -> None:
    """TDDUI 2.2.0 (released) binds Task.input.type of a prestation to CodeSystem tddui-task-input-prestation;
    the 2.2.0 ballot's input-tddui-task-prestation-codesystem is refused."""
    released = "https://interop.esante.gouv.fr/ig/fhir/tddui/CodeSystem/tddui-task-input-prestation"
    bundle = _bundle(render_fhir(PpaRecord.model_validate(_data()), _ctx()).content)
    prestations = [
        t for t in _resources(bundle, "Task") if any("tddui-task-prestation" in p for p in t["meta"]["profile"])
    ]
    assert prestations
    for task in prestations:
        assert {c["system"] for i in task["input"] for c in i["type"]["coding"]} == {released}
    for coding in prestations[0]["input"][0]["type"]["coding"]:
        coding["system"] = released.replace("tddui-task-input-prestation", "input-tddui-task-prestation-codesystem")
    report = profiles.check_rendition(json.dumps(bundle).encode(), "fhir:tddui")
    assert not report.ok
    assert any("input" in (i.expression or "") for i in report.issues if i.severity == "error")
