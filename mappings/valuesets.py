"""CI-SIS value sets (JDV) the mappings code with, as data.

``mappings/data/valuesets.json`` is a faithful extract of the ANS kit's ``jeuxDeValeurs/*.xml``
(SVS format) for the value sets the DLU/FLUDT mappings bind to; ``tests/mappings/test_valuesets.py``
checks it against the kit and regenerates it with ``UPDATE_GOLDEN=1``. Loaded once, at import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from mappings.base import Code

__all__ = [
    "AUTHOR_SPECIALTY",
    "AUTRE_RISQUE",
    "CHECKLIST_DLU",
    "CONFIDENTIALITY",
    "DEPLACEMENT",
    "ENCOUNTER_CODE",
    "ETAT_PSYCHIQUE",
    "FACILITY_TYPE",
    "GENDER",
    "HANDICAP_DEFICIT",
    "OBSERVATION_ETAT_PATIENT",
    "PRACTICE_SETTING",
    "PROTHESE_OBJET_PERSONNEL",
    "RELATION_PATIENT",
    "ROUTE_OF_ADMINISTRATION",
    "TYPE_CODE",
    "ValueSet",
]


@dataclass(frozen=True)
class ValueSet:
    """One JDV: its name, OID and concepts keyed by code."""

    name: str
    oid: str
    concepts: dict[str, Code]

    def __contains__(self, code: object) -> bool:
        return code in self.concepts

    def get(self, code: str) -> Code:
        """The concept for ``code``; ``KeyError`` when the code is not in the value set."""
        return self.concepts[code]

    def codes(self) -> list[str]:
        return list(self.concepts)


def _load() -> dict[str, ValueSet]:
    raw = json.loads(resources.files("mappings").joinpath("data/valuesets.json").read_text(encoding="utf-8"))
    out: dict[str, ValueSet] = {}
    for name, body in raw.items():
        concepts = {c[0]: Code(code=c[0], system=c[1], display=c[2]) for c in body["concepts"]}
        out[name] = ValueSet(name=name, oid=body["oid"], concepts=concepts)
    return out


_ALL = _load()

OBSERVATION_ETAT_PATIENT = _ALL["JDV_ObservationEtatPatient_CISIS"]
ETAT_PSYCHIQUE = _ALL["JDV_EtatPsychique_CISIS"]
HANDICAP_DEFICIT = _ALL["JDV_HandicapDeficitDLUEHPAD_CISIS"]
DEPLACEMENT = _ALL["JDV_Deplacement_CISIS"]
AUTRE_RISQUE = _ALL["JDV_AutreRisque_CISIS"]
CHECKLIST_DLU = _ALL["JDV_ChecklistDLU_CISIS"]
PROTHESE_OBJET_PERSONNEL = _ALL["JDV_ProtheseObjetPersonnel_CISIS"]
RELATION_PATIENT = _ALL["JDV_J11_RelationPatient_CISIS"]
FACILITY_TYPE = _ALL["JDV_J02_XdsHealthcareFacilityTypeCode_CISIS"]
PRACTICE_SETTING = _ALL["JDV_J04_XdsPracticeSettingCode_CISIS"]
TYPE_CODE = _ALL["JDV_J07_XdsTypeCode_CISIS"]
CONFIDENTIALITY = _ALL["JDV_J08_XdsConfidentialityCode_CISIS"]
ENCOUNTER_CODE = _ALL["JDV_EncompassingEncounterCode_CISIS"]
ROUTE_OF_ADMINISTRATION = _ALL["JDV_RouteofAdministration_CISIS"]
GENDER = _ALL["JDV_HL7_AdministrativeGender_CISIS"]
AUTHOR_SPECIALTY = _ALL["JDV_J01_XdsAuthorSpecialty_CISIS"]

NAMES = tuple(_ALL)
