"""The published TDDUI/PDSm examples against the declared profiles, and broken variants of them."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from profiles import validate
from tests.support.shared import SHARED

EXAMPLES = SHARED / "fhir-examples"
TDDUI = EXAMPLES / "tddui"
PDSM = EXAMPLES / "pdsm4dmp"
SERAFIN = "https://smt.esante.gouv.fr/terminologie-SERAFINPH"

pytestmark = pytest.mark.skipif(not TDDUI.is_dir(), reason="shared FHIR examples not available")


def load(name: str) -> dict[str, Any]:
    folder = TDDUI if (TDDUI / name).exists() else PDSM
    return json.loads((folder / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", sorted(TDDUI.glob("*.json")), ids=lambda p: p.stem)
def test_every_tddui_example_validates_against_its_declared_profile(path: Path) -> None:
    resource = json.loads(path.read_text(encoding="utf-8"))
    report = validate(path.read_bytes())
    assert report.ok, [i.message for i in report.errors]
    declared = resource["meta"]["profile"][0]
    assert declared in report.profiles  # the profile was really checked, not skipped
    assert not [i for i in report.issues if i.code == "not-supported"]


def test_tddui_examples_are_checked_against_rules_not_only_structure() -> None:
    report = validate(load("Patient-tddui-patient-ins-example.json"))
    assert {
        "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-patient-ins",
        "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins",
        "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient",
        "http://hl7.org/fhir/StructureDefinition/Patient",
    } <= set(report.profiles)
    # the IG example carries the INS with status VALI (FR Core 2.1 code): allowed, with a warning; its
    # local identifier has no use, required by FR Core 2.2.0-ballot-2 only (a documented deviation: warning)
    assert sorted((i.severity, i.rule) for i in report.issues if i.severity != "information") == [
        ("warning", "card"),
        ("warning", "dui-ins-2"),
    ]


SOURCE = "Bundle.entry[0].resource.source.reference"


def test_pdsm_document_example_validates() -> None:
    report = validate(load("Bundle-example-annexe-fhir-document.json"))
    assert report.ok, [i.message for i in report.errors]


@pytest.mark.parametrize(
    ("name", "paths"),
    [
        ("DocumentReference-doc-x-id.json", ["DocumentReference.custodian"]),
        ("DocumentReference-example-td2-iti105-publication-simplifiee.json", ["DocumentReference.custodian"]),
        ("Bundle-example-td2-iti65-lot-soumission.json", [SOURCE, "Bundle.entry[1].resource.custodian"]),
        ("Bundle-example-td2-1-remplacement.json", [SOURCE, "Bundle.entry[1].resource.custodian"]),
        (
            "Bundle-example-annexe-searchset-documentreferences.json",
            ["Bundle.entry[0].resource.custodian", "Bundle.entry[1].resource.custodian"],
        ),
    ],
)
def test_draft_pdsm4dmp_examples_only_miss_the_custodian_pdsm_requires(name: str, paths: list[str]) -> None:
    # PDSm 3.x makes DocumentReference.custodian 1.. (comprehensive and simplified publish); the
    # PDSm4DMP 0.1.0 draft examples omit it, and their SubmissionSet's source is a (contained)
    # Practitioner where PDSm allows a PractitionerRole, a Device or a Patient. Their masterIdentifier
    # has no type (IHE MHD 4.2.4-current): a documented warning (MANIFEST deviation), since PDSm 3.1.1
    # is built on MHD 4.2.3.
    report = validate(load(name))
    expected = [(p, "value" if p == SOURCE else "required") for p in paths]
    assert [(i.expression, i.code) for i in report.errors] == expected
    warnings = {(i.expression.rsplit(".", 2)[-2:][0], i.rule) for i in report.issues if i.severity == "warning"}
    assert warnings <= {("masterIdentifier", "card")}
    if "simplifiee" not in name:  # the simplified publish profile does not restrict masterIdentifier's type
        assert warnings == {("masterIdentifier", "card")}


Mutation = Callable[[dict[str, Any]], None]


def _set(path: list[Any], value: Any) -> Mutation:
    def apply(resource: dict[str, Any]) -> None:
        target: Any = resource
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return apply


def _delete(path: list[Any]) -> Mutation:
    def apply(resource: dict[str, Any]) -> None:
        target: Any = resource
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return apply


def _append(path: list[Any], value: Any) -> Mutation:
    def apply(resource: dict[str, Any]) -> None:
        target: Any = resource
        for key in path:
            target = target[key]
        target.append(value)

    return apply


def _drop_ins(resource: dict[str, Any]) -> None:
    resource["identifier"] = [
        i for i in resource["identifier"] if not i["system"].startswith("urn:oid:1.2.250.1.213.1.4.")
    ]


PATIENT_INS = "Patient-tddui-patient-ins-example.json"
PATIENT = "Patient-tddui-pp-pa-patient-example-pp.json"
EVENEMENT = "Encounter-tddui-encounter-evenement-example.json"
SEJOUR = "Encounter-tddui-encounter-sejour-example.json"
BESOIN = "ServiceRequest-tddui-pp-pa-servicerequest-besoin-1-example.json"
CAREPLAN = "CarePlan-tddui-pp-pa-careplan-example.json"
CONSENT = "Consent-tddui-pp-pa-consent-accord-example.json"
GOAL = "Goal-tddui-pp-pa-goal-objectif-1-example.json"
QR = "QuestionnaireResponse-tddui-questionnaire-response-serafin-precision-example.json"
SIMPLIFIED = "DocumentReference-example-td2-iti105-publication-simplifiee.json"
COMPREHENSIVE = "DocumentReference-doc-x-id.json"

BROKEN: list[tuple[str, str, Mutation, str, str, str]] = [
    # (id, example, mutation, expected path, expected code, expected rule)
    (
        "ins-missing-system",
        PATIENT_INS,
        _delete(["identifier", 0, "system"]),
        "Patient.identifier[0].system",
        "required",
        "card",
    ),
    (
        "ins-wrong-system",
        PATIENT_INS,
        _set(["identifier", 0, "system"], "urn:oid:1.2.250.1.213.1.4.99"),
        "Patient.identifier[0].system",
        "value",
        "pattern",
    ),
    (
        "ins-wrong-use",
        PATIENT_INS,
        _set(["identifier", 0, "use"], "usual"),
        "Patient.identifier[0].use",
        "code-invalid",
        "binding",
    ),
    (
        "ins-missing-type",
        PATIENT_INS,
        _delete(["identifier", 0, "type"]),
        "Patient.identifier[0].type",
        "required",
        "card",
    ),
    (
        "ins-malformed-value",
        PATIENT_INS,
        _set(["identifier", 0, "value"], "12345"),
        "Patient.identifier[0].value",
        "invariant",
        "dui-ins-format",
    ),
    (
        "identity-status-not-rniv",
        PATIENT_INS,
        _set(["extension", 0, "extension", 0, "valueCoding", "code"], "XXXX"),
        "Patient",  # identityStatus is bound extensibly (FR Core): the gateway's own dui-ins-1 reports it
        "invariant",
        "dui-ins-1",
    ),
    (
        "ins-with-provisional-identity",
        PATIENT_INS,
        _set(["extension", 0, "extension", 0, "valueCoding", "code"], "PROV"),
        "Patient",
        "invariant",
        "dui-ins-1",
    ),
    ("vali-without-ins", PATIENT_INS, _drop_ins, "Patient", "invariant", "fr-core-1"),
    (
        "two-official-names",
        PATIENT_INS,
        _append(["name"], {"use": "official", "family": "DUPONT", "given": ["Jean"]}),
        "Patient.name[2]",
        "structure",
        "card",
    ),
    (
        "missing-birth-list-given-name",
        PATIENT_INS,
        _delete(["name", 0, "extension"]),
        "Patient.name[0].extension",
        "required",
        "card",
    ),
    (
        "missing-insee-birthplace",
        PATIENT_INS,
        _delete(["extension", 1, "valueAddress", "extension"]),
        "Patient.extension[1].valueAddress.extension",
        "required",
        "card",
    ),
    ("ins-gender-other", PATIENT_INS, _set(["gender"], "other"), "Patient.gender", "code-invalid", "binding"),
    (
        "tddui-patient-without-birth-order",
        PATIENT,
        _delete(["_birthDate"]),
        "Patient.birthDate.extension",
        "required",
        "card",
    ),
    (
        "tddui-patient-carrying-ins",
        PATIENT,
        _append(["identifier"], {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "147720425367411"}),
        "Patient",
        "invariant",
        "dui-tddui-patient-1",
    ),
    (
        "wrong-serafin-prestation",
        EVENEMENT,
        _append(["type"], {"coding": [{"system": SERAFIN, "code": "9.9.9"}]}),
        "Encounter.type[2].coding[0].code",
        "code-invalid",
        "binding",
    ),
    (
        "serafin-besoin-used-as-prestation",
        EVENEMENT,
        _append(["type"], {"coding": [{"system": SERAFIN, "code": "1.2.1.3"}]}),
        "Encounter.type[2].coding[0].code",
        "code-invalid",
        "binding",
    ),
    (
        "serafin-by-oid-not-smt-url",
        EVENEMENT,
        _append(["type"], {"coding": [{"system": "urn:oid:1.2.250.1.213.3.3.60", "code": "2.1.1.2"}]}),
        "Encounter.type[2].coding[0].code",  # not in tddui-encounter-type: its SERAFIN system is the SMT URL
        "code-invalid",
        "binding",
    ),
    ("event-without-end", EVENEMENT, _delete(["period", "end"]), "Encounter.period.end", "required", "card"),
    (
        "event-two-identifiers",
        EVENEMENT,
        _append(["identifier"], {"system": "https://example.org", "value": "x"}),
        "Encounter.identifier[1]",
        "structure",
        "card",
    ),
    (
        "stay-wrong-identifier-system",
        SEJOUR,
        _set(["identifier", 0, "system"], "https://identifiant-medicosocial-evenement.esante.gouv.fr"),
        "Encounter.identifier[0].system",
        "value",
        "pattern",
    ),
    (
        "stay-without-service-provider",
        SEJOUR,
        _delete(["serviceProvider"]),
        "Encounter.serviceProvider",
        "required",
        "card",
    ),
    (
        "stay-subject-not-a-patient",
        SEJOUR,
        _set(["subject", "reference"], "Organization/tddui-organization-example"),
        "Encounter.subject.reference",
        "value",
        "reference",
    ),
    (
        "besoin-with-prestation-code",
        BESOIN,
        _set(["category"], [{"coding": [{"system": SERAFIN, "code": "2.1.1.1"}]}]),
        "ServiceRequest.category[0].coding[0].code",
        "code-invalid",
        "binding",
    ),
    ("besoin-without-careplan", BESOIN, _delete(["basedOn"]), "ServiceRequest.basedOn", "required", "card"),
    ("careplan-without-title", CAREPLAN, _delete(["title"]), "CarePlan.title", "required", "card"),
    (
        "careplan-without-structure-agreement",
        CAREPLAN,
        _set(["supportingInfo", 0, "extension", 0, "valueCodeableConcept", "coding", 0, "code"], "accordUsager"),
        "CarePlan.supportingInfo",
        "required",
        "card",
    ),
    (
        "careplan-wrong-identifier-system",
        CAREPLAN,
        _set(["identifier", 0, "system"], "https://example.org/pp"),
        "CarePlan.identifier[0].system",
        "value",
        "pattern",
    ),
    (
        "consent-two-performers",
        CONSENT,
        _append(["performer"], {"reference": "Patient/tddui-pp-pa-patient-example-pp"}),
        "Consent.performer[1]",
        "structure",
        "card",
    ),
    ("consent-without-date", CONSENT, _delete(["dateTime"]), "Consent.dateTime", "required", "card"),
    ("goal-without-careplan-reference", GOAL, _delete(["extension", 0]), "Goal.extension", "required", "card"),
    (
        "questionnaire-response-without-subject",
        QR,
        _delete(["subject"]),
        "QuestionnaireResponse.subject",
        "required",
        "card",
    ),
    ("base-r4-gender-code", PATIENT, _set(["gender"], "f"), "Patient.gender", "code-invalid", "binding"),
    ("base-r4-unknown-element", PATIENT, _set(["nickname"], "Jo"), "Patient.nickname", "structure", "structure"),
    (
        "simplified-publish-status",
        SIMPLIFIED,
        _set(["status"], "superseded"),
        "DocumentReference.status",
        "value",
        "fixed",
    ),
    (
        "simplified-publish-url",
        SIMPLIFIED,
        _set(["content", 0, "attachment", "url"], "Binary/1"),
        "DocumentReference.content[0].attachment.url",
        "structure",
        "card",
    ),
    (
        "comprehensive-without-hash",
        COMPREHENSIVE,
        _delete(["content", 0, "attachment", "hash"]),
        "DocumentReference.content[0].attachment.hash",
        "required",
        "card",
    ),
    (
        "comprehensive-confidentiality-code",
        COMPREHENSIVE,
        _set(["securityLabel", 0, "coding", 0, "code"], "X"),
        "DocumentReference",
        "invariant",
        "dui-pdsm-confidentiality",
    ),
    (
        "comprehensive-master-identifier-type",
        COMPREHENSIVE,
        _set(["masterIdentifier", "type"], {"coding": [{"system": "urn:ietf:rfc:3986", "code": "uniqueId"}]}),
        "DocumentReference.masterIdentifier.type",
        "value",
        "pattern",
    ),
    (
        "comprehensive-author-not-contained",
        COMPREHENSIVE,
        _set(["author", 0, "reference"], "Practitioner/1"),
        "DocumentReference.author[0]",
        "invariant",
        "aggregation-contained",
    ),
]


@pytest.mark.parametrize(
    ("name", "mutate", "path", "code", "rule"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_broken_variant_is_reported_at_the_right_path(
    name: str, mutate: Mutation, path: str, code: str, rule: str
) -> None:
    original = load(name)
    baseline = {(i.expression, i.rule) for i in validate(original).errors}
    broken = copy.deepcopy(original)
    mutate(broken)
    report = validate(broken)
    assert not report.ok
    new = [(i.expression, i.code, i.rule) for i in report.errors if (i.expression, i.rule) not in baseline]
    assert (path, code, rule) in new, new


def test_at_least_fifteen_broken_variants() -> None:
    assert len(BROKEN) >= 15
    assert len({b[0] for b in BROKEN}) == len(BROKEN)


def test_corsican_finess_and_local_ids_are_accepted() -> None:
    # regression: 2A/2B are the département (characters 1-2), found by the DLU property tests
    organization = {
        "resourceType": "Organization",
        "meta": {"profile": ["https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-organization"]},
        "identifier": [
            {
                "system": "urn:oid:1.2.250.1.71.4.2.2",
                "value": "12A0000000",
                "type": {
                    "coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203", "code": "IDNST"}]
                },
            },
            {"system": "https://finess.esante.gouv.fr", "value": "2A0000000"},
        ],
    }
    assert validate(organization).ok
    organization["identifier"][1]["value"] = "20A000000"
    assert [i.rule for i in validate(organization).errors] == ["dui-finess-1"]
