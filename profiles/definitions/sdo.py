"""SDO (ans.fhir.fr.sdo, "Médicosocial - Suivi Décisions Orientation") profiles, as data.

Transcribed from the IG's FSH sources (``ansforge/IG-fhir-medicosocial-suivi-decisions-orientation``,
``sushi-config.yaml`` version 0.1.0 ci-build, status draft, FHIR 4.0.1): ``input/fsh/profiles/
{SDODocumentReference,ESMSDocumentReference,ESMSConsent,SDOTask}.fsh``, the invariants
``regle-Contenu``, ``regle-NomPieceJointe-type``, ``regle-StatutUnite``, ``regle-ModePriseEnCharge``
and the code system ``InputTaskSDOCodeSystem``; checked against the published text in November 2026.

What is not enforced here, and why:

- the bindings of ``statutUnite`` (JDV_J253) and ``motifUnite`` (JDV_J250) are ``required`` in the IG
  but those value sets live in the NOS/SMT, not in the CI-SIS kit available here: only their presence
  and type are checked. JDV_J252 and JDV_J251 are enforced from their published expansion
  (``ans.fr.terminologies`` 1.12.0, value set version 20230922120000);
- the status/motif pairs of ASS_A32 (a motif is mandatory for some statuses): the table is a PDF
  not available here (the ``sdo-status`` document type requires a motif for status 45).

``regle-StatutUnite`` is the IG's expression as published (it looks at ``input.type.text``): the
gateway's mapping sets both the code and the text of every input type.
"""

from __future__ import annotations

from profiles._rules import Binding, Card, Fixed, Invariant, Profile, Slice
from profiles.definitions.valuesets import code_list

__all__ = ["INPUT_TASK_CS", "MOTIF_ESMS", "PROFILES", "SDO", "STATUT_ESMS", "TASK_INPUTS", "TRE_R357", "TRE_R358"]

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
_NOS = "https://mos.esante.gouv.fr/NOS/"
TRE_R357 = _NOS + "TRE_R357-StatutPersonnePriseCharge/FHIR/TRE-R357-StatutPersonnePriseCharge"
TRE_R358 = _NOS + "TRE_R358-MotifStatutPersonnePriseCharge/FHIR/TRE-R358-MotifStatutPersonnePriseCharge"
#: JDV_J252 StatutPersonnePriseChargeESMS (TRE_R357), ans.fr.terminologies 1.12.0
STATUT_ESMS: dict[str, str] = {
    "37": "Décision d'orientation annulée",
    "39": "Notification envoyée",
    "40": "Notification lue",
    "41": "Contact effectué",
    "42": "Liste d'attente. En cours d'analyse, demande d'admission reçue dans l'ESMS",
    "43": "Période d'essai en cours dans l'ESMS",
    "44": "Période d'essai non concluante dans l'ESMS",
    "45": "Admission impossible signalée",
    "46": "Admission impossible entérinée",
    "47": "Usager entré",
    "48": "Usager sorti",
    "49": "Notification annulée",
    "51": "Demande de réorientation dans l'ESMS",
    "54": "Notification réactivée",
    "71": "Liste d'attente. Admis dans l'ESMS",
    "72": "Liste d'attente. Admissible dans l'ESMS",
}
#: JDV_J251 MotifStatutPersonnePriseChargeESMS (TRE_R358), ans.fr.terminologies 1.12.0
MOTIF_ESMS: dict[str, str] = {
    "86": "Le plateau technique n'est pas adapté à la prise en charge de l'usager",
    "109": "Déménagement",
    "112": "Erreur d'utilisation du logiciel",
    "113": "Eloignement géographique",
    "114": "Les ressources de l'ESMS ne sont pas suffisantes",
    "115": "L'ESMS n'est pas adapté au projet de vie actuel de l'usager",
    "116": "Le type de handicap ne relève pas de l'ESMS",
    "117": "La situation de l'usager a changé, l'ESMS n'est pas adapté",
    "118": "L'usager ou son représentant légal refuse de s'inscrire dans l'ESMS",
    "119": "L'usager a été admis dans un autre ESMS, l'orientation n'est plus pertinente",
    "120": "L'usager a déménagé, l'orientation n'est plus pertinente géographiquement",
    "121": "L'usager ou son représentant légal refuse d'adhérer au projet de vie de l'ESMS",
    "122": "L'âge de l'usager est incompatible",
    "124": "L'usager est décédé",
    "127": "L'usager a fait valoir ses droits à la retraite (ESAT)",
    "148": "L'ESMS n'a pas réussi à joindre l'usager",
    "150": "L'usager a pris contact avec l'ESMS",
    "151": "L'ESMS a pris contact avec l'usager",
    "152": "L'usager a visité l'ESMS",
    "153": "L'ESMS a envoyé une documentation à l'usager",
    "168": "Pour placer l'usager en liste d'attente",
    "170": "Pour prendre en charge l'usager à temps adapté",
    "173": "Une autre décision annule et remplace cette décision",
    "174": "Décision clôturée par la MDPH",
}
STATUT_ESMS_VS = code_list(
    _NOS + "JDV_J252-StatutPersonnePriseChargeESMS/FHIR/JDV-J252-StatutPersonnePriseChargeESMS",
    "JDV_J252 StatutPersonnePriseChargeESMS",
    list(STATUT_ESMS),
    frozenset({TRE_R357}),
)
MOTIF_ESMS_VS = code_list(
    _NOS + "JDV_J251-MotifStatutPersonnePriseChargeESMS/FHIR/JDV-J251-MotifStatutPersonnePriseChargeESMS",
    "JDV_J251 MotifStatutPersonnePriseChargeESMS",
    list(MOTIF_ESMS),
    frozenset({TRE_R358}),
)
ESMS_DOCUMENT_TYPE = code_list(
    "https://interop.esante.gouv.fr/ig/fhir/sdo/ValueSet/DocumentReferenceTypeESMSValueSet",
    "DocumentReferenceTypeESMSValueSet",
    "57830-2|51848-0",
    frozenset({_LOINC}),
)


def _input_slice(name: str) -> Slice:
    return Slice(f"input:{name}", (("type.coding", {"system": INPUT_TASK_CS, "code": name}),))


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
        Binding("input:statutESMS.valueCodeableConcept", STATUT_ESMS_VS),
        Binding("input:motifESMS.valueCodeableConcept", MOTIF_ESMS_VS),
        Binding("input:modePriseCharge.valueCodeableConcept", MODE_PRISE_CHARGE),
        Card("input:modePriseCharge.valueCodeableConcept.coding", 1, 1),
        Binding("input:temporaliteAccueil.valueCodeableConcept", TEMPORALITE_ACCUEIL),
        Binding("input:categorieOrganisation.valueCodeableConcept", CATEGORIE_ORGANISATION),
        Invariant(
            "regle-ModePriseEnCharge",
            # the IG writes value.coding: the choice element is named in full for the engine
            "(valueCodeableConcept.coding.where(code='48').exists()) or "
            "(valueCodeableConcept.coding.where(code='47').exists()) or "
            "(valueCodeableConcept.coding.where(code='46').exists())",
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
