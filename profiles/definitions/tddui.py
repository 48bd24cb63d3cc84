"""TDDUI (ans.fhir.fr.tddui 2.x) profiles the gateway emits and accepts, declared from the
IG's profile definitions (FSH sources and built examples, TDDUI 2.1-2.2).

Rules keyed ``dui-*`` are the gateway's own (identifier conventions of the IG, stated as
examples there): warnings, not errors, unless the IG states them as constraints.
"""

from __future__ import annotations

from profiles._rules import Binding, Card, Fixed, Invariant, Profile, RefTarget, Rule, Slice, ValueSet
from profiles.definitions.fr_core import (
    FR_CORE_ORGANIZATION,
    FR_CORE_PATIENT,
    FR_CORE_PATIENT_INS,
    FR_CORE_PRACTITIONER,
    INS_SYSTEMS,
)
from profiles.definitions.valuesets import GENDER_INS, SERAFIN_BESOINS, SERAFIN_PRESTATIONS, code_list

__all__ = ["PROFILES", "TDDUI", "TDDUI_ALIASES"]

TDDUI = "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/"
TDDUI_CS = "https://interop.esante.gouv.fr/ig/fhir/tddui/CodeSystem/"
DISCRIMINATOR = TDDUI + "tddui-discriminator"
SERAFIN_SYSTEM = "https://smt.esante.gouv.fr/terminologie-SERAFINPH"
CISIS_SYSTEM = "https://smt.esante.gouv.fr/fhir/CodeSystem/terminologie-cisis"
PATIENT = ("Patient",)

_NO_INS = "identifier.where(" + " or ".join(f"system = '{s}'" for s in sorted(INS_SYSTEMS)) + ").empty()"


def _business_id(path: str, system: str, kind: str) -> tuple[Rule, ...]:
    """The TDDUI business identifier: fixed system, value ``3<FINESS>/<local id>-<KIND>-<n>``."""
    return (
        Card(f"{path}.system", 1, 1),
        Fixed(f"{path}.system", system),
        Card(f"{path}.value", 1, 1),
        Invariant(
            "dui-tddui-id",
            f"matches('^3([0-9]{{2}}|2[AB])[0-9]{{7}}/.+-{kind}-.+$')"
            if kind
            else "matches('^3([0-9]{2}|2[AB])[0-9]{7}/.+$')",
            f"TDDUI identifier value convention: 3+FINESS/localId{'-' + kind + '-n' if kind else ''}",
            severity="warning",
            context=f"{path}.value",
        ),
    )


TDDUI_PATIENT = Profile(
    url=TDDUI + "tddui-patient",
    type="Patient",
    title="TDDUI Patient (no INS transmitted)",
    parents=(FR_CORE_PATIENT.url,),
    slices=(
        Slice(
            "identifier:localIdentifier", (("system", "https://identifiant-medicosocial-localusager.esante.gouv.fr"),)
        ),
    ),
    rules=(
        Card("birthDate", 1, 1),
        Card(f"birthDate.extension({TDDUI}tddui-birth-order)", 1, 1),
        Binding("gender", GENDER_INS),
        Card("name:officialName", 1, 1),
        *_business_id("identifier:localIdentifier", "https://identifiant-medicosocial-localusager.esante.gouv.fr", ""),
        Invariant(
            "dui-tddui-patient-1", _NO_INS, "tddui-patient carries no INS: use tddui-patient-ins to transmit an INS"
        ),
    ),
)

TDDUI_PATIENT_INS = Profile(
    url=TDDUI + "tddui-patient-ins",
    type="Patient",
    title="TDDUI Patient INS",
    parents=(FR_CORE_PATIENT_INS.url,),
    slices=(
        Slice("identifier:localIdentifier", (("type.coding.code", "PLI"),)),
        Slice("identifier:initialNumber", (("type.coding.code", "PIN"),)),
    ),
    rules=(
        Card("identifier:localIdentifier", 0, 1),
        Fixed("identifier:localIdentifier.use", "usual"),
        Card("identifier:localIdentifier.system", 1, 1),
        Card("identifier:localIdentifier.value", 1, 1),
        Card("identifier:initialNumber", 0, 1),
        Fixed("identifier:initialNumber.use", "usual"),
        Card("identifier:initialNumber.system", 1, 1),
        Card("identifier:initialNumber.value", 1, 1),
        Card("name:usualName", 0, 1),
    ),
)

TDDUI_ORGANIZATION = Profile(
    url=TDDUI + "tddui-organization",
    type="Organization",
    title="TDDUI Organization (entité juridique)",
    parents=(FR_CORE_ORGANIZATION.url,),
    rules=(Card("identifier:idNatSt", 1, 1),),
)

TDDUI_PRACTITIONER = Profile(
    url=TDDUI + "tddui-practitioner",
    type="Practitioner",
    title="TDDUI Practitioner",
    parents=(FR_CORE_PRACTITIONER.url,),
)

_ENCOUNTER_ID = TDDUI_CS + "tddui-encounter-identifier"

TDDUI_ENCOUNTER_SEJOUR = Profile(
    url=TDDUI + "tddui-encounter-sejour",
    type="Encounter",
    title="TDDUI Encounter Séjour",
    slices=(
        Slice("identifier:idStay", (("type.coding.code", "SEJ"),)),
        Slice("identifier:AdministrativeFileNumber", (("type.coding.code", "NUMDOSS"),)),
    ),
    rules=(
        Card("identifier", 1, None),
        Card("identifier:idStay", 1, 1),
        Fixed("identifier:idStay.type", {"coding": [{"system": _ENCOUNTER_ID, "code": "SEJ"}]}, pattern=True),
        *_business_id("identifier:idStay", "https://identifiant-medicosocial-sejour.esante.gouv.fr", "SEJOUR"),
        Card("identifier:AdministrativeFileNumber", 0, 1),
        Fixed(
            "identifier:AdministrativeFileNumber.type",
            {"coding": [{"system": _ENCOUNTER_ID, "code": "NUMDOSS"}]},
            pattern=True,
        ),
        Card("identifier:AdministrativeFileNumber.value", 1, 1),
        Card("identifier:AdministrativeFileNumber.system", 1, 1),
        Fixed("identifier:AdministrativeFileNumber.system", "https://identifiant-medicosocial-sejour.esante.gouv.fr"),
        Card("subject", 1, 1),
        RefTarget("subject", PATIENT),
        Card("serviceProvider", 1, 1),
        RefTarget("serviceProvider", ("Organization",)),
        RefTarget("hospitalization.origin", ("Organization",)),
        Card("extension(http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedStartDate)", 0, 1),
        Card("extension(http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedEndDate)", 0, 1),
        Card(f"extension({TDDUI}tddui-admission-date)", 0, 1),
        Card(f"extension({TDDUI}tddui-entry-mode-label)", 0, 1),
        Card(f"extension({TDDUI}tddui-exit-mode-label)", 0, 1),
        Card(f"extension({TDDUI}tddui-comment)", 0, 1),
    ),
)

TDDUI_ENCOUNTER_EVENEMENT = Profile(
    url=TDDUI + "tddui-encounter-evenement",
    type="Encounter",
    title="TDDUI Encounter Évènement",
    slices=(
        Slice("type:ssiad", (("coding.system", CISIS_SYSTEM),)),
        # SERAFIN prestations: recognised by the SMT system (or the SERAFIN-PH OID, then rejected by the fixed system)
        Slice("type:serafin", (("coding.system", SERAFIN_SYSTEM), ("coding.system", "urn:oid:1.2.250.1.213.3.3.60"))),
        Slice("type:text", (("coding.system", "http://terminology.hl7.org/CodeSystem/data-absent-reason"),)),
    ),
    rules=(
        Card("identifier", 1, 1),
        *_business_id("identifier", "https://identifiant-medicosocial-evenement.esante.gouv.fr", "EVN"),
        Card("type:ssiad.coding", 1, 1),
        Card("type:ssiad.coding.code", 1, 1),
        Card("type:serafin.coding", 1, 1),
        Card("type:serafin.coding.code", 1, 1),
        Fixed("type:serafin.coding.system", SERAFIN_SYSTEM),
        Binding("type:serafin.coding.code", SERAFIN_PRESTATIONS),
        Card("type:text.text", 1, 1),
        Fixed("type:text.coding.code", "not-permitted"),
        Card("subject", 1, 1),
        RefTarget("subject", PATIENT),
        RefTarget("serviceProvider", ("Organization",)),
        RefTarget("participant.individual", ("Practitioner", "PractitionerRole", "RelatedPerson")),
        Card("location", 0, 1),
        RefTarget("partOf", ("Encounter",)),
        Card("period.start", 1, 1),
        Card("period.end", 1, 1),
        Card(f"extension({TDDUI}tddui-event-label)", 0, 1),
        Card(f"extension({TDDUI}tddui-event-report)", 0, 1),
        Card(f"extension({TDDUI}tddui-event-reason)", 0, 1),
        Card(f"status.extension({TDDUI}tddui-cancel-reason)", 0, 1),
    ),
)

_QUESTIONNAIRES: ValueSet = code_list(
    "https://interop.esante.gouv.fr/ig/fhir/tddui/Questionnaire",
    "TDDUI questionnaires",
    [
        f"https://interop.esante.gouv.fr/ig/fhir/tddui/Questionnaire/{name}"
        for name in (
            "tddui-questionnaire-serafin",
            "tddui-questionnaire-aggir-pa-ssiad",
            "tddui-questionnaire-aggir-ph-ssiad",
            "tddui-questionnaire-situation-ssiad",
        )
    ],
)

TDDUI_QUESTIONNAIRE_RESPONSE = Profile(
    url=TDDUI + "tddui-questionnaire-response",
    type="QuestionnaireResponse",
    title="TDDUI QuestionnaireResponse (évaluation)",
    rules=(
        Card("identifier", 1, 1),
        *_business_id("identifier", "https://identifiant-medicosocial-evaluation.esante.gouv.fr", "EVAL"),
        Card("subject", 1, 1),
        RefTarget("subject", PATIENT),
        RefTarget("author", ("Practitioner",)),
        RefTarget("source", ("Practitioner",)),
        RefTarget("encounter", ("Encounter",)),
        Binding("questionnaire", _QUESTIONNAIRES, strength="extensible"),
    ),
)


def _discriminated(path: str, code: str) -> Slice:
    return Slice(path, ((f"extension({DISCRIMINATOR}).valueCodeableConcept.coding.code", code),))


_CAREPLAN_RULES: tuple[Rule, ...] = (
    Card("identifier", 1, 1),
    *_business_id("identifier", "https://identifiant-medicosocial-projetpersonnalise.esante.gouv.fr", "PPER"),
    Card("title", 1, 1),
    Card("category", 0, 1),
    Card("supportingInfo:accordStructure", 1, None),
    RefTarget("supportingInfo", ("Consent",)),
    RefTarget("subject", PATIENT),
    Card("note", 0, 1),
)

TDDUI_CAREPLAN = Profile(
    url=TDDUI + "tddui-careplan-projet-personnalise",
    type="CarePlan",
    title="TDDUI CarePlan Projet personnalisé",
    slices=(
        _discriminated("supportingInfo:accordStructure", "accordStructure"),
        _discriminated("supportingInfo:accordUsager", "accordUsager"),
    ),
    rules=_CAREPLAN_RULES,
)

TDDUI_CONSENT_ACCORD = Profile(
    url=TDDUI + "tddui-consent-accord",
    type="Consent",
    title="TDDUI Consent Accord",
    rules=(
        Card("performer", 1, 1),
        RefTarget("performer", ("Organization", "PractitionerRole", "Practitioner", "RelatedPerson", "Patient")),
        Card("dateTime", 1, 1),
    ),
)

TDDUI_GOAL_OBJECTIF = Profile(
    url=TDDUI + "tddui-goal-objectif",
    type="Goal",
    title="TDDUI Goal Objectif",
    slices=(_discriminated("note:titreObjectif", "titreObjectif"),),
    rules=(
        Card("identifier", 1, 1),
        *_business_id("identifier", "https://identifiant-medicosocial-objectif.esante.gouv.fr", "OBJE"),
        Card(f"extension({TDDUI}tddui-careplan-reference)", 1, 1),
        RefTarget(f"extension({TDDUI}tddui-careplan-reference).valueReference", ("CarePlan",)),
        Card("addresses", 1, 1),
        RefTarget("addresses", ("ServiceRequest",)),
        RefTarget("subject", PATIENT),
        Card("note:titreObjectif", 1, 1),
        Card("target.detailString", 0, 1),
    ),
)

TDDUI_SERVICE_REQUEST_BESOIN = Profile(
    url=TDDUI + "tddui-service-request-besoin",
    type="ServiceRequest",
    title="TDDUI ServiceRequest Besoin",
    rules=(
        Card("identifier", 1, 1),
        *_business_id("identifier", "https://identifiant-medicosocial-besoin.esante.gouv.fr", "BESO"),
        Card("category", 0, 1),
        Binding("category", SERAFIN_BESOINS),
        Card("code", 1, 1),
        Card("basedOn", 1, 1),
        RefTarget("basedOn", ("CarePlan",)),
        RefTarget("subject", PATIENT),
    ),
)

_TASK_PRESTATION_INPUT = TDDUI_CS + "tddui-task-input-prestation"

TDDUI_TASK_PRESTATION = Profile(
    url=TDDUI + "tddui-task-prestation",
    type="Task",
    title="TDDUI Task Prestation (projet personnalisé)",
    slices=(
        Slice("input:titre", (("type.coding.code", "titre"),)),
        Slice("input:typePrestation", (("type.coding.code", "typePrestation"),)),
    ),
    rules=(
        Card("identifier", 1, 1),
        Card("input:titre", 1, 1),
        Fixed("input:titre.type", {"coding": [{"system": _TASK_PRESTATION_INPUT, "code": "titre"}]}, pattern=True),
        Card("input:titre.valueString", 1, 1),
        Fixed(
            "input:typePrestation.type",
            {"coding": [{"system": _TASK_PRESTATION_INPUT, "code": "typePrestation"}]},
            pattern=True,
        ),
        Card("input:typePrestation.valueCodeableConcept", 1, 1),
        Binding("input:typePrestation.valueCodeableConcept", SERAFIN_PRESTATIONS),
        Card("partOf", 0, 1),
        RefTarget("partOf", ("Task",)),
        Card("basedOn", 1, 1),
        RefTarget("basedOn", ("CarePlan",)),
    ),
)

_TASK_BILAN_INPUT = TDDUI_CS + "tddui-task-input-bilan"
_TASK_BILAN_OUTPUT = TDDUI_CS + "tddui-task-output-bilan"
#: JDV_J366 StatutBilanProjetPersonnaliseMs (TRE_R389): category of a review
BILAN_CATEGORIES: ValueSet = code_list(
    "https://smt.esante.gouv.fr/fhir/ValueSet/jdv-j366-statut-bilan-projet-personnalise-ms",
    "JDV_J366 StatutBilanProjetPersonnaliseMs",
    "PARTIEL|INTERMEDIAIRE|FINAL",
    frozenset({"https://smt.esante.gouv.fr/fhir/CodeSystem/tre-r389-statut-bilan-projet-personnalise"}),
)


def _typed_input(element: str, code: str, system: str, value: str, high: int | None) -> tuple[Rule, ...]:
    """A Task input/output slice recognised by its ``type`` code, with its cardinality and value type."""
    path = f"{element}:{code}"
    return (
        Card(path, 0, high),
        Fixed(f"{path}.type", {"coding": [{"system": system, "code": code}]}, pattern=True),
        Card(f"{path}.{value}", 1, 1),
    )


TDDUI_TASK_BILAN = Profile(
    url=TDDUI + "tddui-task-bilan",
    type="Task",
    title="TDDUI Task Bilan (review of the projet personnalisé, TDDUI 2.2.0)",
    slices=(
        *(
            Slice(f"input:{code}", (("type.coding.code", code),))
            for code in (
                "perimetre",
                "problematique",
                "invite",
                "pieceJointe",
                "dateProchainBilan",
                "synthesePreparationBilan",
            )
        ),
        Slice("output:syntheseBilan", (("type.coding.code", "syntheseBilan"),)),
    ),
    rules=(
        Card("identifier", 1, 1),
        *_business_id("identifier", "https://identifiant-medicosocial-bilan.esante.gouv.fr", "BILA"),
        Card("basedOn", 1, 1),
        RefTarget("basedOn", ("CarePlan",)),
        Binding("code", BILAN_CATEGORIES),
        Card("executionPeriod", 1, 1),
        Card("executionPeriod.start", 1, 1),
        *_typed_input("input", "perimetre", _TASK_BILAN_INPUT, "valueString", 1),
        *_typed_input("input", "problematique", _TASK_BILAN_INPUT, "valueString", 1),
        *_typed_input("input", "invite", _TASK_BILAN_INPUT, "valueString", 1),
        *_typed_input("input", "pieceJointe", _TASK_BILAN_INPUT, "valueReference", None),
        RefTarget("input:pieceJointe.valueReference", ("DocumentReference",)),
        *_typed_input("input", "dateProchainBilan", _TASK_BILAN_INPUT, "valueDateTime", 1),
        *_typed_input("input", "synthesePreparationBilan", _TASK_BILAN_INPUT, "valueAnnotation", None),
        Card("input:synthesePreparationBilan.valueAnnotation.text", 1, 1),
        Card("input:synthesePreparationBilan.valueAnnotation.authorReference", 1, 1),
        RefTarget(
            "input:synthesePreparationBilan.valueAnnotation.authorReference",
            ("Practitioner", "Patient", "RelatedPerson"),
        ),
        *_typed_input("output", "syntheseBilan", _TASK_BILAN_OUTPUT, "valueString", 1),
        RefTarget("for", PATIENT),
    ),
)

TDDUI_GOAL_ATTENTE = Profile(
    url=TDDUI + "tddui-goal-attente",
    type="Goal",
    title="TDDUI Goal Attente",
    slices=(
        _discriminated("note:origineAttente", "origineAttente"),
        _discriminated("note:commentaireAttente", "commentaireAttente"),
    ),
    rules=(
        Card(f"extension({TDDUI}tddui-careplan-reference)", 1, 1),
        Card(f"extension({TDDUI}tddui-careplan-reference).valueReference", 1, 1),
        RefTarget(f"extension({TDDUI}tddui-careplan-reference).valueReference", ("CarePlan",)),
        Card("identifier", 1, 1),
        *_business_id("identifier", "https://identifiant-medicosocial-attente.esante.gouv.fr", "ATTE"),
        Card("note:origineAttente", 1, 1),
        Card("note:origineAttente.text", 1, 1),
        Card("expressedBy", 1, 1),
        RefTarget("expressedBy", ("PractitionerRole", "Practitioner", "Patient", "RelatedPerson")),
        RefTarget("subject", PATIENT),
    ),
)

TDDUI_GOAL_PROJET_VIE = Profile(
    url=TDDUI + "tddui-goal-projet-vie",
    type="Goal",
    title="TDDUI Goal Projet de vie",
    rules=(
        Card("identifier", 1, 1),
        *_business_id("identifier", "https://identifiant-medicosocial-projetvie.esante.gouv.fr", "PDV"),
        Card("description.text", 1, 1),
        RefTarget("subject", PATIENT),
    ),
)

TDDUI_RELATED_PERSON_CONTACT = Profile(
    url=TDDUI + "tddui-related-person-contact",
    type="RelatedPerson",
    title="TDDUI RelatedPerson Contact",
    rules=(
        RefTarget("patient", PATIENT),
        Binding("gender", GENDER_INS),
        Card("address", 0, 1),
        Card(f"extension({TDDUI}tddui-comment)", 0, 1),
    ),
)

TDDUI_DOCUMENT_REFERENCE = Profile(
    url=TDDUI + "tddui-document-reference",
    type="DocumentReference",
    title="TDDUI DocumentReference (pièce jointe, MHD SimplifiedPublish)",
    rules=(
        Card("content.attachment.contentType", 1, 1),
        Card("content.attachment.data", 1, 1),
        RefTarget("subject", PATIENT),
    ),
)

TDDUI_BUNDLE = Profile(
    url=TDDUI + "tddui-bundle",
    type="Bundle",
    title="TDDUI Bundle (transaction)",
    rules=(
        Fixed("type", "transaction"),
        Card("entry.request", 1, 1),
        Fixed("entry.request.method", "POST"),
        Card("entry.resource", 1, 1),
    ),
)

PROFILES = (
    TDDUI_PATIENT,
    TDDUI_PATIENT_INS,
    TDDUI_ORGANIZATION,
    TDDUI_PRACTITIONER,
    TDDUI_ENCOUNTER_SEJOUR,
    TDDUI_ENCOUNTER_EVENEMENT,
    TDDUI_QUESTIONNAIRE_RESPONSE,
    TDDUI_CAREPLAN,
    TDDUI_CONSENT_ACCORD,
    TDDUI_GOAL_OBJECTIF,
    TDDUI_SERVICE_REQUEST_BESOIN,
    TDDUI_TASK_PRESTATION,
    TDDUI_TASK_BILAN,
    TDDUI_GOAL_ATTENTE,
    TDDUI_GOAL_PROJET_VIE,
    TDDUI_RELATED_PERSON_CONTACT,
    TDDUI_DOCUMENT_REFERENCE,
    TDDUI_BUNDLE,
)

#: earlier canonical ids of the same profiles (2.2.0-ballot FSH ids)
TDDUI_ALIASES = {
    TDDUI + "tddui-careplan-projet-perso": TDDUI_CAREPLAN.url,
}
