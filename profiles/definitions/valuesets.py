"""Value sets the profiles bind to, as data.

Small FHIR/FR Core enumerations are declared inline; the SERAFIN-PH lists come from
``profiles/data/serafin.json``, a faithful extract of the CI-SIS kit's ``JDV_J283/J284/J285``
(``tests/profiles/test_valuesets.py`` checks it against the kit).
"""

from __future__ import annotations

import json
from importlib import resources

from profiles._rules import ValueSet

__all__ = [
    "ADMINISTRATIVE_GENDER",
    "CONFIDENTIALITY",
    "GENDER_INS",
    "IDENTITY_STATUS",
    "SERAFIN_BESOINS",
    "SERAFIN_PRESTATIONS",
    "SERAFIN_SYSTEMS",
    "TDDUI_ENCOUNTER_IDENTIFIER",
    "code_list",
]

FR_CORE_CS = "https://hl7.fr/ig/fhir/core/CodeSystem/"
TDDUI_CS = "https://interop.esante.gouv.fr/ig/fhir/tddui/CodeSystem/"

#: SERAFIN-PH code system: the TDDUI profiles use the SMT URL; the OID form is accepted too.
SERAFIN_SYSTEMS = frozenset({"https://smt.esante.gouv.fr/terminologie-SERAFINPH", "urn:oid:1.2.250.1.213.3.3.60"})


def code_list(url: str, name: str, codes: str | list[str], systems: frozenset[str] = frozenset()) -> ValueSet:
    """A value set from a ``|``-separated string or a list of codes."""
    items = codes.split("|") if isinstance(codes, str) else codes
    return ValueSet(url=url, name=name, codes=frozenset(items), systems=systems)


def _serafin() -> dict[str, list[str]]:
    raw = json.loads(resources.files("profiles").joinpath("data/serafin.json").read_text(encoding="utf-8"))
    return {name: [concept[0] for concept in body["concepts"]] for name, body in raw.items()}


_SERAFIN = _serafin()

ADMINISTRATIVE_GENDER = code_list(
    "http://hl7.org/fhir/ValueSet/administrative-gender", "AdministrativeGender", "male|female|other|unknown"
)
GENDER_INS = code_list(
    "https://hl7.fr/ig/fhir/core/ValueSet/fr-core-vs-patient-gender-INS", "FR Core gender INS", "male|female|unknown"
)
#: RNIV identity statuses (FR Core 2.1 uses fr-core-cs-v2-0445; later builds fr-core-cs-identity-status)
IDENTITY_STATUS = code_list(
    "https://hl7.fr/ig/fhir/core/ValueSet/fr-core-vs-identity-reliability-status",
    "FR Core identity status",
    "PROV|RECUP|VALI|QUAL",
    frozenset({FR_CORE_CS + "fr-core-cs-v2-0445", FR_CORE_CS + "fr-core-cs-identity-status"}),
)
TDDUI_ENCOUNTER_IDENTIFIER = code_list(
    TDDUI_CS.replace("CodeSystem", "ValueSet") + "tddui-encounter-identifier-vs",
    "TDDUIEncounterIdentifier",
    "SEJ|NUMDOSS",
    frozenset({TDDUI_CS + "tddui-encounter-identifier"}),
)
#: TDDUI SERAFIN ValueSet = JDV_J284 (prestations directes) + JDV_J283 (prestations indirectes)
SERAFIN_PRESTATIONS = code_list(
    "https://interop.esante.gouv.fr/ig/fhir/tddui/ValueSet/tddui-serafin-vs",
    "TDDUI SERAFIN prestations (JDV_J284 + JDV_J283)",
    _SERAFIN["J284"] + _SERAFIN["J283"],
    SERAFIN_SYSTEMS,
)
SERAFIN_BESOINS = code_list(
    "https://mos.esante.gouv.fr/NOS/JDV_J285-Besoins_SERAFIN/FHIR/JDV-J285-Besoins-SERAFIN",
    "JDV_J285 Besoins SERAFIN",
    _SERAFIN["J285"],
    SERAFIN_SYSTEMS,
)
CONFIDENTIALITY = code_list(
    "http://terminology.hl7.org/ValueSet/v3-ConfidentialityClassification",
    "v3 ConfidentialityClassification",
    "U|L|M|N|R|V",
    frozenset({"http://terminology.hl7.org/CodeSystem/v3-Confidentiality"}),
)
