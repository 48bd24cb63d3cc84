"""SDO (ans.fhir.fr.sdo, "Médicosocial - Suivi Décisions Orientation") profiles, as data.

Transcribed from the IG's FSH sources (``ansforge/IG-fhir-medicosocial-suivi-decisions-orientation``,
``sushi-config.yaml`` version 0.1.0 ci-build, status draft, FHIR 4.0.1): ``input/fsh/profiles/
{SDODocumentReference,ESMSDocumentReference,ESMSConsent,SDOTask}.fsh``, the invariants
``regle-Contenu``, ``regle-NomPieceJointe-type``, ``regle-StatutUnite``, ``regle-ModePriseEnCharge``
and the code system ``InputTaskSDOCodeSystem``; checked against the published text in November 2026.

What is not enforced here, and why:

- the bindings of ``statutESMS`` (JDV_J252), ``motifESMS`` (JDV_J251), ``statutUnite`` (JDV_J253) and
  ``motifUnite`` (JDV_J250) are ``required`` in the IG but those value sets live in the NOS/SMT and
  are not in the CI-SIS kit available here: only their presence and type are checked;
- the status/motif pairs of ASS_A32 (a motif is mandatory for some statuses): same reason.

``regle-StatutUnite`` is the IG's expression as published (it looks at ``input.type.text``): the
gateway's mapping sets both the code and the text of every input type.
"""

from __future__ import annotations

from profiles._rules import Binding, Card, Fixed, Invariant, Profile, Slice
from profiles.definitions.valuesets import code_list

__all__ = ["INPUT_TASK_CS", "PROFILES", "SDO", "TASK_INPUTS"]

SDO = "https://interop.esante.gouv.fr/ig/fhir/sdo/StructureDefinition/"
INPUT_TASK_CS = "https://interop.esante.gouv.fr/ig/fhir/sdo/CodeSystem/input-task-sdo-codesystem"
_LOINC = "http://loinc.org"

#: Task.input slices: name -> (min, max, value[x] type)
TASK_INPUTS: dict[str, tuple[int, int, str]] = {
    "idNat_Struct": (1, 1, "Identifier"),
    "nomESMS": (1, 1, "String"),
    "statutESMS": (0, 1, "CodeableConcept"),
    "motifESMS": (0, 1, "CodeableConcept"),
    "dateStatutESMS": (0, 1, "Date"),
    "idUnite": (0, 1, "Identifier"),
    "nomUnite": (0, 1, "String"),
    "categorieOrganisation": (0, 1, "CodeableConcept"),
    "temporaliteAccueil": (0, 1, "CodeableConcept"),
    "accueilSequentiel": (0, 1, "Boolean"),
    "modePriseCharge": (0, 1, "CodeableConcept"),
    "statutUnite": (0, 1, "CodeableConcept"),
    "dateStatutUnite": (0, 1, "Date"),
    "motifUnite": (0, 1, "CodeableConcept"),
    "idDecision": (1, 1, "Identifier"),
    "idNat_Decision": (1, 1, "Identifier"),
}

# value sets of the CI-SIS kit (jeuxDeValeurs): JDV_J264, JDV_J30, JDV_J34
MODE_PRISE_CHARGE = code_list(
    "https://mos.esante.gouv.fr/NOS/JDV_J264-ModeEtCentreDePriseEnCharge-MDPH/FHIR/JDV-J264-ModeEtCentreDePriseEnCharge-MDPH",
    "JDV_J264 ModeEtCentreDePriseEnCharge-MDPH",
    "46|47|48|238",
)
TEMPORALITE_ACCUEIL = code_list(
    "https://mos.esante.gouv.fr/NOS/JDV_J30-TemporaliteAccueil-ROR/FHIR/JDV-J30-TemporaliteAccueil-ROR",
    "JDV_J30 TemporaliteAccueil-ROR",
    "01|02",
)
CATEGORIE_ORGANISATION = code_list(
    "https://mos.esante.gouv.fr/NOS/JDV_J34-CategorieOrganisation-ROR/FHIR/JDV-J34-CategorieOrganisation-ROR",
    "JDV_J34 CategorieOrganisation-ROR",
    [f"{n:02d}" for n in range(1, 177) if n not in (42, 133)],
)
ESMS_DOCUMENT_TYPE = code_list(
    "https://interop.esante.gouv.fr/ig/fhir/sdo/ValueSet/DocumentReferenceTypeESMSValueSet",
    "DocumentReferenceTypeESMSValueSet",
    "57830-2|51848-0",
    frozenset({_LOINC}),
)


def _input_slice(name: str) -> Slice:
    return Slice(f"input:{name}", (("type.coding", [{"system": INPUT_TASK_CS, "code": name}]),))


def _input_rules() -> tuple[Card, ...]:
    rules: list[Card] = []
    for name, (low, high, kind) in TASK_INPUTS.items():
        rules.append(Card(f"input:{name}", low, high))
        rules.append(Card(f"input:{name}.value{kind}", 1, 1))
    return tuple(rules)


SDO_DOCUMENT_REFERENCE = Profile(
    url=SDO + "sdo-document-reference",
    type="DocumentReference",
    title="SDO DocumentReference (individu, décision, évaluation)",
    slices=(
        Slice("identifier:idDecision", (("use", "usual"),)),
        Slice("identifier:idNat_Decision", (("use", "official"),)),
    ),
    rules=(
        Card("identifier", 1, 2),
        Card("identifier:idDecision", 1, 1),
        Card("identifier:idDecision.value", 1, 1),
        Card("identifier:idNat_Decision", 0, 1),
        Card("identifier:idNat_Decision.value", 1, 1),
        Card("content", 1, 1),  # R4 content 1..*, SDO ..1
        Card("content.attachment.title", 1, 1),
        Invariant(
            "regle-Contenu",
            "content.attachment.data.exists()",
            "the complete resource carries its content in content.attachment.data",
            severity="warning",
        ),
    ),
)

ESMS_DOCUMENT_REFERENCE = Profile(
    url=SDO + "esms-document-reference",
    type="DocumentReference",
    title="ESMS DocumentReference (dossier ESMS)",
    parents=(SDO_DOCUMENT_REFERENCE.url,),
    rules=(
        Card("identifier", 2, None),
        Card("type", 1, 1),
        Binding("type", ESMS_DOCUMENT_TYPE),
        Invariant(
            "regle-NomPieceJointe-type",
            "(type.coding.code='57830-2' implies (content.attachment.title='Document Individu et décision')) and "
            "(type.coding.code='51848-0' implies (content.attachment.title='Document évaluation'))",
            "title 'Document Individu et décision' goes with 57830-2, 'Document évaluation' with 51848-0",
        ),
    ),
)

ESMS_CONSENT = Profile(
    url=SDO + "esms-consent",
    type="Consent",
    title="ESMS Consent (accord de la personne orientée)",
    rules=(
        Card("meta", 1, 1),
        Card("meta.source", 1, 1),
        Fixed(
            "scope",
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            pattern=True,
        ),
        Card("category", 1, None),
        Fixed("category", {"coding": [{"system": _LOINC, "code": "59284-0"}]}, pattern=True),
        Card("dateTime", 1, 1),
        Card("provision", 1, 1),
        Card("provision.data", 1, 1),
        Fixed("provision.data.meaning", "related"),
        Card("provision.data.reference.identifier", 1, 1),
        Card("provision.data.reference.identifier.use", 1, 1),
        Fixed("provision.data.reference.identifier.use", "official"),
        Card("provision.data.reference.identifier.value", 1, 1),
        Invariant(
            "dui-sdo-consent-ref",
            "provision.data.reference.reference.exists() implies "
            "provision.data.reference.reference.startsWith('DocumentReference/')",
            "provision.data.reference points to a DocumentReference",
        ),
    ),
)

SDO_TASK = Profile(
    url=SDO + "sdo-task",
    type="Task",
    title="SDO Task (statut de la personne orientée)",
    slices=tuple(_input_slice(name) for name in TASK_INPUTS),
    rules=(
        Card("meta.lastUpdated", 1, 1),
        Fixed("intent", "plan"),
        Fixed("status", "completed"),
        *_input_rules(),
        Binding("input:modePriseCharge.valueCodeableConcept", MODE_PRISE_CHARGE),
        Card("input:modePriseCharge.valueCodeableConcept.coding", 1, 1),
        Binding("input:temporaliteAccueil.valueCodeableConcept", TEMPORALITE_ACCUEIL),
        Binding("input:categorieOrganisation.valueCodeableConcept", CATEGORIE_ORGANISATION),
        Invariant(
            "regle-ModePriseEnCharge",
            "(value.coding.where(code='48').exists()) or (value.coding.where(code='47').exists()) or "
            "(value.coding.where(code='46').exists())",
            "the mode de prise en charge is 46 (hébergement), 47 (accueil de jour) or 48 (accueil de nuit)",
            context="input:modePriseCharge",
        ),
        Invariant(
            "regle-StatutUnite",
            "input.type.where(text='idUnite').exists() and input.type.where(text='nomUnite').exists() and "
            "input.type.where(text='categorieOrganisation').exists() and "
            "input.type.where(text='modePriseCharge').exists() and "
            "input.type.where(text='dateStatutUnite').exists() or input.type.where(text='statutUnite').exists().not()",
            "statutUnite needs idUnite, nomUnite, categorieOrganisation, modePriseCharge and dateStatutUnite",
        ),
    ),
)

PROFILES: tuple[Profile, ...] = (SDO_DOCUMENT_REFERENCE, ESMS_DOCUMENT_REFERENCE, ESMS_CONSENT, SDO_TASK)
