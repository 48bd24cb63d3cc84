"""SDO (ans.fhir.fr.sdo, "Médicosocial - Suivi Décisions Orientation", ViaTrajectoire) profiles.

Generated from the IG (``generated.py``): the differentials of ``sdo-document-reference``,
``esms-document-reference``, ``esms-consent`` and ``sdo-task`` as published in the IG repository
(``ansforge/IG-fhir-medicosocial-suivi-decisions-orientation``, ``main/ig/StructureDefinition-*.json``,
IG build 4.0.5), transcribed in ``profiles/sources/sdo-4.0.5`` and pinned by digest
(``MANIFEST.json``). This module keeps the code lists the gateway's mapping writes from
(JDV_J252/J251, ``ans.fr.terminologies`` 1.12.0, also transcribed as ValueSets in
``profiles/sources/ans-terminologies-1.12.0`` for the generator) and the input-type code system.

What is not checked, and why (``docs/profiles.md``):

- the bindings of ``statutUnite`` (JDV_J253), ``motifUnite`` (JDV_J250) and ``typeDroitPrestation``
  (``JDV_JXX``, a placeholder in the IG) have no code list here: a value there is a warning
  ``binding-unchecked``; ``typeDroitPrestation`` 1..1 is a documented warning (MANIFEST deviation);
- the status/motif pairs of ASS_A32 (a PDF table not available here).

``regle-StatutUnite`` looks at ``input.type.text``: the gateway's mapping sets both the code and
the text of every input type.
"""

from __future__ import annotations

from profiles._rules import Profile
from profiles.definitions.generated import load

__all__ = [
    "ESMS_CONSENT",
    "ESMS_DOCUMENT_REFERENCE",
    "INPUT_TASK_CS",
    "MOTIF_ESMS",
    "PROFILES",
    "SDO",
    "SDO_DOCUMENT_REFERENCE",
    "SDO_TASK",
    "STATUT_ESMS",
    "TRE_R357",
    "TRE_R358",
]

SDO = "https://interop.esante.gouv.fr/ig/fhir/sdo/StructureDefinition/"
INPUT_TASK_CS = "https://interop.esante.gouv.fr/ig/fhir/sdo/CodeSystem/input-task-sdo-codesystem"

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

_BY_URL: dict[str, Profile] = {p.url: p for p in load() if p.url.startswith(SDO)}
SDO_DOCUMENT_REFERENCE = _BY_URL[SDO + "sdo-document-reference"]
ESMS_DOCUMENT_REFERENCE = _BY_URL[SDO + "esms-document-reference"]
ESMS_CONSENT = _BY_URL[SDO + "esms-consent"]
SDO_TASK = _BY_URL[SDO + "sdo-task"]

PROFILES: tuple[Profile, ...] = (SDO_DOCUMENT_REFERENCE, ESMS_DOCUMENT_REFERENCE, ESMS_CONSENT, SDO_TASK)
