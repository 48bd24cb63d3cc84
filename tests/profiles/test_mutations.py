"""Coverage as a standing measure: each generated constraint broken once, on valid samples (IG
examples and the gateway's PPA bundle entries), must be reported at its location; valid
variations must raise no error. The coverage table is printed (``pytest -s``) and pinned."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mappings.base import RenderContext
from mappings.dlu_fhir import to_fhir
from mappings.ppa import PpaRecord, render_fhir
from profiles import validate
from profiles.definitions.generated import load
from tests.profiles.conftest import COVERAGE
from tests.profiles.mutations import run
from tests.support.shared import SHARED

EXAMPLES = (SHARED / "fhir-examples") if (SHARED / "fhir-examples").is_dir() else None
RECORDS = Path(__file__).resolve().parents[1] / "resources" / "records"
CTX = RenderContext(now=datetime(2026, 1, 5, 9, 0, tzinfo=UTC), submission_id=uuid.UUID(int=11))


def _with_entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [bundle, *(e["resource"] for e in bundle.get("entry", []) if isinstance(e.get("resource"), dict))]


def _with_custodian(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` with a custodian (an ESSMS's FINESS) on each PDSm DocumentReference lacking one."""
    for item in _with_entries(resource):
        declared = item.get("meta", {}).get("profile", [])
        if item.get("resourceType") == "DocumentReference" and "custodian" not in item and declared:
            item["custodian"] = {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1750000001"}}
    return resource


def samples() -> list[dict[str, Any]]:
    """Valid carriers: the IG examples (TDDUI, PDSm/MHD, SDO) and every FHIR output of the gateway
    (PPA TDDUI bundle, TDDUI export, DLU document bundle, SDO Consent and Tasks, the DMP's MHD ITI-65
    Provide Document Bundles), with their entries."""
    from mappings.record import DluRecord
    from mappings.tddui import EXPORT, TdduiExportRecord
    from tests.mappings.test_tddui import _ctx as tddui_ctx
    from tests.mappings.test_tddui import _export_data

    out: list[dict[str, Any]] = []
    if EXAMPLES is not None:
        for folder in ("tddui", "pdsm4dmp", "sdo"):
            for path in sorted((EXAMPLES / folder).glob("*.json")):
                data = json.loads(path.read_text(encoding="utf-8"))
                out += _with_entries(data) if data.get("resourceType") == "Bundle" else [data]
                if folder == "pdsm4dmp":  # the PDSm4DMP drafts miss only the custodian PDSm 3.x requires
                    repaired = _with_custodian(copy.deepcopy(data))
                    out += _with_entries(repaired) if repaired.get("resourceType") == "Bundle" else [repaired]
    for path in sorted(RECORDS.glob("ppa-*.json")):
        out += _with_entries(
            json.loads(render_fhir(PpaRecord.model_validate_json(path.read_text(encoding="utf-8")), CTX).content)
        )
    (export,) = EXPORT.render(TdduiExportRecord.model_validate(_export_data()), tddui_ctx())
    out += _with_entries(json.loads(export.content))
    for path in sorted(RECORDS.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if "dlu" in data:
            out += _with_entries(json.loads(to_fhir(DluRecord.model_validate(data), CTX).content))
    from tests.profiles.test_gateway_outputs import mhd_outputs, sdo_outputs

    out += sdo_outputs()
    for bundle in mhd_outputs():
        out += _with_entries(bundle)
    return [s for s in out if validate(s).ok]  # a carrier must be valid to begin with


EVENEMENT = "Encounter-tddui-encounter-evenement-example.json"
PATIENT_INS = "Patient-tddui-patient-ins-example.json"
TDDUI = "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/"


def example(name: str) -> dict[str, Any]:
    if EXAMPLES is None:
        pytest.skip("the shared FHIR examples are not available")
    data: dict[str, Any] = json.loads((EXAMPLES / "tddui" / name).read_text(encoding="utf-8"))
    return data


#: why a generated constraint may have no mutation: no valid carrier instance holds its context
NOT_EXERCISABLE = {
    "no carrier: no IG example or gateway output declares the profile",
    "its parent element is absent from every carrier",
    "a discriminator of its slice (removing it takes the item out of the slice)",
    "a discriminator of its slice (changing it takes the item out of the slice)",
    "absent from every carrier, and a valid item cannot be made up",
    "absent from every carrier, and no value breaking it can be made up",
    "value set without (complete) code list here: a code outside it is a warning, not checked",
    "meta holds the declared profile (removing it takes the resource out of the profile)",
}

#: the issue's kinds, each of which must be exercised by the suite
KINDS = ("binding", "card0", "cardmin", "extcard", "slice", "pattern", "reference", "types")


def test_each_generated_constraint_broken_once_is_reported_at_its_path() -> None:
    result = run(samples(), load())
    COVERAGE.append(result.table())
    by_kind = result.by_kind()
    caught = sum(c for c, _, _ in by_kind.values())
    tried = sum(t for _, t, _ in by_kind.values())
    assert all(by_kind.get(k, (0, 0, 0))[1] > 0 for k in KINDS), by_kind
    assert tried >= 350  # every constraint with a valid carrier (IG examples, gateway outputs) is broken once
    assert caught / tried >= 0.95, [o.detail for o in result.outcomes if o.status == "missed"]
    # every IG has carriers; the PDSm / IHE MHD ITI-65 rules are in the measure too
    for family, (c, t, _) in result.by_family().items():
        assert t > 0 and c / t >= 0.95, (family, c, t)
    assert {"PDSm", "IHE MHD (ITI-65, ITI-105)"} <= set(result.by_family())
    # what cannot be exercised is listed with its reason (printed with the table)
    assert set(result.reasons()) <= NOT_EXERCISABLE, set(result.reasons()) - NOT_EXERCISABLE
    # what is missed is only codes inside whole code systems without a code list here (reported as
    # information, documented in docs/profiles.md)
    missed = [o for o in result.outcomes if o.status == "missed"]
    assert all(o.kind == "binding" and getattr(o.rule, "valueset").open_systems for o in missed)


def _ressources(*parts: tuple[str, str]) -> dict[str, Any]:
    return {
        "url": TDDUI + "tddui-ressources-used",
        "extension": [
            {"url": url, "valueCodeableConcept": {"coding": [{"system": CISIS, "code": code}]}} for url, code in parts
        ],
    }


CISIS = "https://smt.esante.gouv.fr/fhir/CodeSystem/terminologie-cisis"


@pytest.mark.parametrize(
    ("parts", "key"),
    [
        ((("TDDUIRessourceType", "ORG-207"), ("TDDUIMaterialDetail", "ORG-208")), "MatDetailOnlyIfTypeOrg206"),
        ((("TDDUIMaterialDetail", "ORG-208"),), "MatDetailOnlyIfTypeOrg206"),
        ((("TDDUIRessourceType", "ORG-206"), ("TDDUIFacilityResource", "ORG-211")), "FacilityOnlyIfTypeOrg207"),
    ],
)
def test_evenement_invariants_are_evaluated(parts: tuple[tuple[str, str], ...], key: str) -> None:
    encounter = example(EVENEMENT)
    encounter["extension"][0] = _ressources(*parts)
    assert key in {i.rule for i in validate(encounter).errors}


def test_generated_fr_core_invariant_is_evaluated() -> None:
    patient = example("Patient-tddui-patient-ins-example.json")
    patient["identifier"] = [i for i in patient["identifier"] if "1.2.250.1.213.1.4." not in i.get("system", "")]
    assert "fr-core-1" in {i.rule for i in validate(patient).errors}


def _drop(path: list[Any]) -> Any:
    def apply(resource: dict[str, Any]) -> None:
        target = resource
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return apply


VALID_VARIATIONS = [
    # identityStatus is 0..1 in FR Core's identity-reliability extension
    ("identity-status-absent", "Patient-tddui-pp-pa-patient-example-pp.json", lambda r: r.pop("extension", None)),
    # TDDUI 2.2.0 removed Goal objectif addresses 1..1
    ("objectif-without-addresses", "Goal-tddui-pp-pa-goal-objectif-1-example.json", lambda r: r.pop("addresses")),
    # a text-only CodeableConcept is not checked against the required binding
    (
        "evenement-text-only-type",
        EVENEMENT,
        lambda r: r.__setitem__("type", [{"text": "visite"}]),
    ),
    (
        "unknown-extension",
        "CarePlan-tddui-pp-pa-careplan-example.json",
        lambda r: r.setdefault("extension", []).append({"url": "https://example.org/ext", "valueString": "x"}),
    ),
    (
        "consent-by-related-person",
        "Consent-tddui-pp-pa-consent-accord-example.json",
        lambda r: r.__setitem__("performer", [{"reference": "RelatedPerson/x"}]),
    ),
    ("identifiers-reordered", "Patient-tddui-patient-ins-example.json", lambda r: r["identifier"].reverse()),
    # optional R4 elements the profiles leave open
    ("patient-telecom", PATIENT_INS, lambda r: r.__setitem__("telecom", [{"system": "phone", "value": "0102030405"}])),
    (
        "patient-primitive-extension",
        PATIENT_INS,
        lambda r: r.__setitem__("_birthDate", {"extension": [{"url": "https://example.org/ext", "valueString": "x"}]}),
    ),
    (
        "careplan-narrative",
        "CarePlan-tddui-pp-pa-careplan-example.json",
        lambda r: r.__setitem__(
            "text", {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">PPA</div>'}
        ),
    ),
    (
        "sejour-period-end",
        "Encounter-tddui-encounter-sejour-example.json",
        lambda r: r["period"].__setitem__("end", "2099-12-31"),
    ),
    (
        "servicerequest-note",
        "ServiceRequest-tddui-pp-pa-servicerequest-besoin-1-example.json",
        lambda r: r.__setitem__("note", [{"text": "besoin exprimé par la personne"}]),
    ),
    (
        "questionnaire-response-meta-last-updated",
        "QuestionnaireResponse-tddui-questionnaire-response-serafin-precision-example.json",
        lambda r: r["meta"].__setitem__("lastUpdated", "2026-01-05T09:00:00+01:00"),
    ),
    (
        "patient-identifier-period",
        PATIENT_INS,
        lambda r: r["identifier"][0].__setitem__("period", {"start": "2020-01-01"}),
    ),
    ("consent-no-id", "Consent-tddui-pp-pa-consent-accord-example.json", lambda r: r.pop("id")),
    (
        "evenement-cancelled-with-reason",
        EVENEMENT,
        lambda r: r.update(
            status="cancelled",
            _status={
                "extension": [
                    {
                        "url": TDDUI + "tddui-event-cancel-reason",
                        "valueCodeableConcept": {"coding": [{"system": CISIS, "code": "GEN-357"}]},
                    }
                ]
            },
        ),
    ),
]


@pytest.mark.parametrize(("name", "mutate"), [v[1:] for v in VALID_VARIATIONS], ids=[v[0] for v in VALID_VARIATIONS])
def test_valid_variations_raise_no_error(name: str, mutate: Any) -> None:
    resource = example(name)
    assert validate(resource).ok
    changed = copy.deepcopy(resource)
    mutate(changed)
    report = validate(changed)
    assert report.ok, [(i.expression, i.message) for i in report.errors]


def test_goal_attente_expressed_by_is_optional() -> None:
    from tests.profiles.test_gateway_outputs import _broken

    _, report = _broken("tddui-goal-attente", lambda r: r.pop("expressedBy", None))
    assert report.ok, [(i.expression, i.message) for i in report.errors]


def test_tddui_2_2_drift_is_gone() -> None:
    # the 2.1 cancel-reason URL is no longer the declared extension; 2.2.0's is checked (0..1)
    encounter = example(EVENEMENT)
    reason = {
        "url": TDDUI + "tddui-event-cancel-reason",
        "valueCodeableConcept": {"coding": [{"system": CISIS, "code": "GEN-357"}]},
    }
    encounter["_status"] = {"extension": [reason, reason]}
    assert "card" in {i.rule for i in validate(encounter).errors}
    # Consent.performer no longer accepts an Organization
    consent = example("Consent-tddui-pp-pa-consent-accord-example.json")
    consent["performer"] = [{"reference": "Organization/x"}]
    assert "reference" in {i.rule for i in validate(consent).errors}
    # Patient: the 2.2.0 slice InitialNumberMDPH (type PIN) is checked
    patient = example("Patient-tddui-pp-pa-patient-example-pp.json")
    patient["identifier"].append(
        {
            "type": {
                "coding": [
                    {
                        "system": "https://interop.esante.gouv.fr/ig/fhir/tddui/CodeSystem/tddui-identifier",
                        "code": "PIN",
                    }
                ]
            },
            "value": "1",
        }
    )
    assert ("Patient.identifier[1].system", "card") in {(i.expression, i.rule) for i in validate(patient).errors}


def _docref(bundle: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = bundle["entry"][1]["resource"]
    return resource


def _submission_set(bundle: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = bundle["entry"][0]["resource"]
    return resource


def _second_document(bundle: dict[str, Any]) -> None:
    doc, binary = copy.deepcopy(bundle["entry"][1]), copy.deepcopy(bundle["entry"][2])
    doc["fullUrl"] = "urn:uuid:6b3c3ad5-6a26-4a6e-9a1e-5d4d9c2b2f11"
    doc["resource"]["identifier"][0]["value"] = doc["fullUrl"]
    doc["resource"]["masterIdentifier"]["value"] += ".2"
    binary["fullUrl"] = "urn:uuid:6b3c3ad5-6a26-4a6e-9a1e-5d4d9c2b2f12"
    doc["resource"]["content"][0]["attachment"]["url"] = binary["fullUrl"]
    bundle["entry"] += [doc, binary]
    _submission_set(bundle)["entry"].append({"item": {"reference": doc["fullUrl"]}})


def _author_org(bundle: dict[str, Any]) -> None:
    ss = _submission_set(bundle)
    ss["contained"].append({"resourceType": "Organization", "id": "org", "name": "ESSMS"})
    ss["source"]["extension"] = [
        {
            "url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-authorOrg",
            "valueReference": {"reference": "#org"},
        }
    ]


def _intended_recipient(bundle: dict[str, Any]) -> None:
    ss = _submission_set(bundle)
    ss["contained"].append({"resourceType": "PractitionerRole", "id": "dest"})
    ss["extension"].append(
        {
            "url": "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-intended-recipient",
            "valueReference": {"reference": "#dest"},
        }
    )


#: valid variations of the gateway's ITI-65 bundle (elements PDSm / IHE MHD allow and the gateway does not write)
PDSM_VARIATIONS = [
    (
        "docref-archived-false",
        lambda b: (
            _docref(b)
            .setdefault("extension", [])
            .append(
                {
                    "url": "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived",
                    "valueBoolean": False,
                }
            )
        ),
    ),
    (
        "docref-home-community-id",
        lambda b: (
            _docref(b)
            .setdefault("extension", [])
            .append(
                {
                    "url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-HomeCommunityId",
                    "valueOid": "urn:oid:1.2.250.1.1",
                }
            )
        ),
    ),
    ("docref-description", lambda b: _docref(b).__setitem__("description", "commentaire")),
    (
        "docref-event",
        lambda b: _docref(b)["context"].__setitem__(
            "event", [{"coding": [{"system": "urn:oid:1.2.250.1.213.2.5", "code": "DEQP003"}]}]
        ),
    ),
    ("docref-period-end", lambda b: _docref(b)["context"]["period"].__setitem__("end", "2025-03-02T10:00:00Z")),
    ("docref-authenticator", lambda b: _docref(b).__setitem__("authenticator", {"reference": "#author"})),
    ("submission-set-title-note", lambda b: _submission_set(b).update(title="Lot", note=[{"text": "note"}])),
    ("submission-set-identifiers-reordered", lambda b: _submission_set(b)["identifier"].reverse()),
    ("submission-set-author-org", _author_org),
    ("submission-set-intended-recipient", _intended_recipient),
    ("two-documents", _second_document),
]


@pytest.mark.parametrize("mutate", [v[1] for v in PDSM_VARIATIONS], ids=[v[0] for v in PDSM_VARIATIONS])
def test_valid_pdsm_variations_raise_no_error(mutate: Any) -> None:
    from profiles import check_rendition
    from tests.profiles.test_gateway_outputs import mhd_outputs

    bundle = mhd_outputs()[0]
    mutate(bundle)
    report = check_rendition(json.dumps(bundle).encode(), "fhir:pdsm")
    assert report.ok, [(i.expression, i.message) for i in report.errors]
    assert [i.message for i in report.issues if i.severity == "warning"] == []
