"""FR Core (hl7.fhir.fr.core 2.1, as used by TDDUI 2.x and PDSm): Patient, Patient INS,
Organization, Practitioner — declared from the published StructureDefinitions.

Two gateway rules (keys ``dui-ins-*``) are added to the INS profile: the INS matricule has
the NIR/NIA shape, and it is only carried by an identity whose RNIV status allows it
(QUAL; VALI — the FR Core 2.1 code for "validée" used by the IG example — gives a warning).
"""

from __future__ import annotations

from profiles._rules import Binding, Card, Fixed, Invariant, Profile, Rule, Slice
from profiles.definitions.valuesets import GENDER_INS, IDENTITY_STATUS

__all__ = [
    "FR_CORE",
    "FR_CORE_ORGANIZATION",
    "FR_CORE_PATIENT",
    "FR_CORE_PATIENT_INS",
    "FR_CORE_PRACTITIONER",
    "IDENTITY_RELIABILITY",
    "INS_SYSTEMS",
    "PROFILES",
]

FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
FR_CORE_V2_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
IDENTITY_RELIABILITY = FR_CORE + "fr-core-identity-reliability"
BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
INSEE_CODE = FR_CORE + "fr-core-address-insee-code"
BIRTH_LIST_GIVEN_NAME = FR_CORE + "fr-core-patient-birth-list-given-name"

#: slice name -> (identifier.type code, system, identifier.use)
INS_SLICES: dict[str, tuple[str, str, str]] = {
    "INS-NIR": ("INS-NIR", "urn:oid:1.2.250.1.213.1.4.8", "official"),
    "INS-NIA": ("INS-NIA", "urn:oid:1.2.250.1.213.1.4.9", "temp"),
    "INS-NIR-TEST": ("INS-NIR-TEST", "urn:oid:1.2.250.1.213.1.4.10", "official"),
    "INS-NIR-DEMO": ("INS-NIR-DEMO", "urn:oid:1.2.250.1.213.1.4.11", "official"),
}
INS_SYSTEMS = frozenset(system for _, system, _ in INS_SLICES.values())

_STATUS = f"extension('{IDENTITY_RELIABILITY}').extension('identityStatus').value"
_HAS_INS = "identifier.where(" + " or ".join(f"system = '{s}'" for s in sorted(INS_SYSTEMS)) + ").exists()"

FR_CORE_PATIENT = Profile(
    url=FR_CORE + "fr-core-patient",
    type="Patient",
    title="FR Core Patient",
    slices=(
        Slice("name:officialName", (("use", "official"),)),
        Slice("name:usualName", (("use", "usual"),)),
    ),
    rules=(
        Card("name:officialName", 0, 1),
        Card("name:usualName", 0, 1),
        # fr-core-identity-reliability: identityStatus is mandatory and coded (RNIV statuses)
        Card(f"extension({IDENTITY_RELIABILITY}).extension(identityStatus)", 1, 1),
        Card(f"extension({IDENTITY_RELIABILITY}).extension(identityStatus).value[x]", 1, 1),
        Binding(f"extension({IDENTITY_RELIABILITY}).extension(identityStatus).value[x]", IDENTITY_STATUS),
        Card(f"extension({BIRTH_PLACE})", 0, 1),
        Card(f"extension({BIRTH_PLACE}).valueAddress", 1, 1),
        Card(f"extension({BIRTH_PLACE}).valueAddress.extension({INSEE_CODE})", 0, 1),
        Card(f"name.extension({BIRTH_LIST_GIVEN_NAME})", 0, 1),
    ),
)


def _ins_slice_rules() -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for name, (code, system, use) in INS_SLICES.items():
        slice_path = f"identifier:{name}"
        rules += [
            Card(slice_path, 0, 1),
            Card(f"{slice_path}.use", 1, 1),
            Fixed(f"{slice_path}.use", use),
            Card(f"{slice_path}.type", 1, 1),
            Fixed(f"{slice_path}.type", {"coding": [{"system": FR_CORE_V2_0203, "code": code}]}, pattern=True),
            Card(f"{slice_path}.system", 1, 1),
            Fixed(f"{slice_path}.system", system),
            Card(f"{slice_path}.value", 1, 1),
            Invariant(
                "dui-ins-format",
                "matches('^[0-9]{5}([0-9]{2}|2A|2B)[0-9]{8}$')",
                "the INS matricule (NIR/NIA) has 15 characters: 13 (Corsica 2A/2B allowed) + a 2-digit key",
                context=f"{slice_path}.value",
            ),
        ]
    return tuple(rules)


FR_CORE_PATIENT_INS = Profile(
    url=FR_CORE + "fr-core-patient-ins",
    type="Patient",
    title="FR Core Patient INS",
    parents=(FR_CORE_PATIENT.url,),
    slices=tuple(
        # an INS identifier is recognised by its type code or by its system
        Slice(f"identifier:{name}", (("type.coding.code", code), ("system", system)))
        for name, (code, system, _) in INS_SLICES.items()
    ),
    rules=(
        Card(f"extension({IDENTITY_RELIABILITY})", 1, None),
        Card(f"extension({BIRTH_PLACE})", 1, 1),
        Card(f"extension({BIRTH_PLACE}).valueAddress.extension({INSEE_CODE})", 1, 1),
        Card("identifier", 1, None),
        *_ins_slice_rules(),
        Card("gender", 1, 1),
        Binding("gender", GENDER_INS),
        Card("birthDate", 1, 1),
        Card("name:officialName", 1, 1),
        Card("name:officialName.given", 1, 1),
        Card(f"name:officialName.extension({BIRTH_LIST_GIVEN_NAME})", 1, 1),
        Invariant(
            "fr-core-1",
            f"({_STATUS}.exists(code = 'VALI')) implies {_HAS_INS}",
            "If identityReliability status = 'VALI', then an INS identifier (NIR, NIA, NIR test or demo)"
            " SHALL be present",
        ),
        Invariant(
            "dui-ins-1",
            f"{_HAS_INS} implies {_STATUS}.exists(code = 'QUAL' or code = 'VALI')",
            "an INS identifier may only be transmitted for a qualified identity (identityStatus QUAL)",
        ),
        Invariant(
            "dui-ins-2",
            f"{_HAS_INS} implies {_STATUS}.exists(code = 'QUAL')",
            "INS carried with identityStatus VALI: RNIV requires a qualified identity (QUAL) to transmit the INS",
            severity="warning",
        ),
    ),
)

FR_CORE_ORGANIZATION = Profile(
    url=FR_CORE + "fr-core-organization",
    type="Organization",
    title="FR Core Organization",
    slices=(
        Slice(
            "identifier:idNatSt",
            (("system", "urn:oid:1.2.250.1.71.4.2.2"), ("type", {"coding": [{"code": "IDNST"}]})),
        ),
        Slice("identifier:finess", (("system", "https://finess.esante.gouv.fr"),)),
    ),
    rules=(
        Card("identifier:idNatSt", 0, 1),
        Card("identifier:idNatSt.system", 1, 1),
        Fixed("identifier:idNatSt.system", "urn:oid:1.2.250.1.71.4.2.2"),
        Card("identifier:idNatSt.value", 1, 1),
        Fixed("identifier:idNatSt.type", {"coding": [{"system": FR_CORE_V2_0203, "code": "IDNST"}]}, pattern=True),
        Card("identifier:finess.value", 1, 1),
        Invariant(
            "dui-finess-1",
            "matches('^([0-9]{2}|2[AB])[0-9]{7}$')",
            "a FINESS number has 9 characters (2A/2B allowed for Corsica)",
            context="identifier:finess.value",
        ),
        Invariant(
            "dui-idnatst-1",
            "matches('^[0-6].+$')",
            "idNat_Struct is a type prefix (0..6, e.g. 1 = FINESS) followed by the identifier",
            context="identifier:idNatSt.value",
        ),
    ),
)

FR_CORE_PRACTITIONER = Profile(
    url=FR_CORE + "fr-core-practitioner",
    type="Practitioner",
    title="FR Core Practitioner",
    slices=(
        Slice(
            "identifier:idNatPs",
            (("system", "urn:oid:1.2.250.1.71.4.2.1"), ("type", {"coding": [{"code": "IDNPS"}]})),
        ),
        Slice("identifier:rpps", (("system", "https://rpps.esante.gouv.fr"),)),
    ),
    rules=(
        Card("identifier:idNatPs", 0, 1),
        Card("identifier:idNatPs.system", 1, 1),
        Fixed("identifier:idNatPs.system", "urn:oid:1.2.250.1.71.4.2.1"),
        Card("identifier:idNatPs.value", 1, 1),
        Card("identifier:rpps", 0, 1),
        Card("identifier:rpps.value", 1, 1),
        Invariant(
            "dui-rpps-1",
            "matches('^[0-9]{11}$')",
            "an RPPS number has 11 digits",
            context="identifier:rpps.value",
        ),
    ),
)

PROFILES = (FR_CORE_PATIENT, FR_CORE_PATIENT_INS, FR_CORE_ORGANIZATION, FR_CORE_PRACTITIONER)
