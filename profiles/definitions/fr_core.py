"""FR Core profiles (generated from hl7.fhir.fr.core 2.2.0-ballot-2, see ``generated.py``) and
the gateway's own rules on them (keys ``dui-*``), each stricter than FR Core for a stated reason:

- ``dui-ins-format`` (error): the INS matricule has the NIR/NIA shape (15 characters, key
  included) — RNIV; FR Core only types it as a string.
- ``dui-ins-1`` (error) / ``dui-ins-2`` (warning): an INS is only transmitted for a qualified
  identity (RNIV: QUAL; VALI, the FR Core 2.1 code used by the TDDUI example, gives a warning).
- ``dui-finess-1``, ``dui-idnatst-1``, ``dui-rpps-1`` (errors): identifier shapes (FINESS 9
  characters, idNat_Struct type prefix, RPPS 11 digits) — the registries' formats.
"""

from __future__ import annotations

from profiles._rules import Fixed, Invariant, Profile, Rule, Slice
from profiles.definitions.generated import load, overlay

__all__ = [
    "FR_CORE",
    "FR_CORE_ORGANIZATION",
    "FR_CORE_PATIENT",
    "FR_CORE_PATIENT_INS",
    "FR_CORE_PRACTITIONER",
    "IDENTITY_RELIABILITY",
    "INS_SYSTEMS",
    "PROFILES",
    "gateway_rules",
]

FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
IDENTITY_RELIABILITY = FR_CORE + "fr-core-identity-reliability"

#: slice name -> (identifier.type code, system)
INS_SLICES: dict[str, tuple[str, str]] = {
    "INS-NIR": ("INS-NIR", "urn:oid:1.2.250.1.213.1.4.8"),
    "INS-NIA": ("INS-NIA", "urn:oid:1.2.250.1.213.1.4.9"),
    "INS-NIR-TEST": ("INS-NIR-TEST", "urn:oid:1.2.250.1.213.1.4.10"),
    "INS-NIR-DEMO": ("INS-NIR-DEMO", "urn:oid:1.2.250.1.213.1.4.11"),
}
INS_SYSTEMS = frozenset(system for _, system in INS_SLICES.values())

_STATUS = f"extension('{IDENTITY_RELIABILITY}').extension('identityStatus').value"
_HAS_INS = "identifier.where(" + " or ".join(f"system = '{s}'" for s in sorted(INS_SYSTEMS)) + ").exists()"

_INS_RULES: tuple[Rule, ...] = (
    # FR Core 2.1.0 (TDDUI's dependency; the ballot build binds official/old instead): an INS-NIA is temporary
    Fixed("identifier:INS-NIA.use", "temp"),
    *(
        Invariant(
            "dui-ins-format",
            "matches('^[0-9]{5}([0-9]{2}|2A|2B)[0-9]{8}$')",
            "the INS matricule (NIR/NIA) has 15 characters: 13 (Corsica 2A/2B allowed) + a 2-digit key",
            context=f"identifier:{name}.value",
        )
        for name in INS_SLICES
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
)

_ORG_SLICES = (
    Slice("identifier:idNatSt", (("system", "urn:oid:1.2.250.1.71.4.2.2"), ("type.coding.code", "IDNST"))),
    Slice("identifier:finess", (("system", "https://finess.esante.gouv.fr"),)),
)
_ORG_RULES: tuple[Rule, ...] = (
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
)
_PRACTITIONER_RULES: tuple[Rule, ...] = (
    Invariant(
        "dui-rpps-1",
        "matches('^[0-9]{11}$')",
        "an RPPS number has 11 digits",
        context="identifier:rpps.value",
    ),
)


def gateway_rules() -> dict[str, tuple[tuple[Slice, ...], tuple[Rule, ...]]]:
    """Profile URL -> the gateway's own (slices, rules) added to the generated profile."""
    ins_slices = tuple(
        Slice(f"identifier:{name}", (("type.coding.code", code), ("system", system)))
        for name, (code, system) in INS_SLICES.items()
    )
    return {
        FR_CORE + "fr-core-patient-ins": (ins_slices, _INS_RULES),
        FR_CORE + "fr-core-organization": (_ORG_SLICES, _ORG_RULES),
        FR_CORE + "fr-core-practitioner": ((), _PRACTITIONER_RULES),
    }


def _profiles() -> dict[str, Profile]:
    extra = gateway_rules()
    out = {}
    for profile in load():
        if profile.url.startswith(FR_CORE):
            slices, rules = extra.get(profile.url, ((), ()))
            out[profile.url] = overlay(profile, slices, rules)
    return out


_BY_URL = _profiles()
FR_CORE_PATIENT = _BY_URL[FR_CORE + "fr-core-patient"]
FR_CORE_PATIENT_INS = _BY_URL[FR_CORE + "fr-core-patient-ins"]
FR_CORE_ORGANIZATION = _BY_URL[FR_CORE + "fr-core-organization"]
FR_CORE_PRACTITIONER = _BY_URL[FR_CORE + "fr-core-practitioner"]
PROFILES = tuple(_BY_URL.values())
