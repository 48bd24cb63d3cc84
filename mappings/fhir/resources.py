"""FR Core resources built from the DUI record: Patient (with the INS only when the identity
is qualifiée), Organization (FINESS / idNat_Struct), Practitioner (RPPS / idNat_PS).

Identifiers follow ``shared/specs/identity-and-security.md``: INS-NIR ``urn:oid:1.2.250.1.213.1.4.8``
(NIA ``.9``; test identities ``.10``/``.11``), idNat_Struct ``1``+FINESS under ``1.2.250.1.71.4.2.2``,
idNat_PS ``8``+RPPS under ``1.2.250.1.71.4.2.1`` (``3``+FINESS``/``+id for staff without RPPS).
"""

from __future__ import annotations

from mappings import valuesets
from mappings.fhir.common import Json, address, code, codeable, coding, fhir_date, telecoms
from mappings.record import Essms, HealthEstablishment, IdentityStatus, InsKind, Person, Professional, RelatedPerson

__all__ = [
    "FR_CORE",
    "IDENTITY_STATUS_CODES",
    "LOCAL_USER_SYSTEM",
    "health_establishment",
    "ins_identifier",
    "local_identifiers",
    "organization",
    "patient",
    "practitioner",
]

FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
FR_CORE_CS = "https://hl7.fr/ig/fhir/core/CodeSystem/"
FR_V2_0203 = FR_CORE_CS + "fr-core-cs-v2-0203"
IDENTITY_STATUS_SYSTEM = FR_CORE_CS + "fr-core-cs-v2-0445"  # FR Core 2.1 (TDDUI, PDSm)
INSEE_COMMUNE_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"
LOCAL_USER_SYSTEM = "https://identifiant-medicosocial-localusager.esante.gouv.fr"

#: RNIV status of the record -> FR Core identityStatus code
IDENTITY_STATUS_CODES = {
    IdentityStatus.PROVISOIRE: "PROV",
    IdentityStatus.RECUPEREE: "RECUP",
    IdentityStatus.VALIDEE: "VALI",
    IdentityStatus.QUALIFIEE: "QUAL",
}

_GENDER = {"M": "male", "F": "female", "U": "unknown"}


def ins_identifier(person: Person) -> Json | None:
    """The FR Core INS identifier slice, or ``None``: the INS is carried only for a qualified identity."""
    ins = person.usable_ins
    if ins is None:
        return None
    # FR Core 2.1 slices: INS-NIR (.8, official), INS-NIA (.9, temp), INS-NIR-TEST (.10),
    # INS-NIR-DEMO (.11: FR Core's slice for the second test OID, used for test NIA).
    if ins.test:
        type_code = "INS-NIR-TEST" if ins.kind is InsKind.NIR else "INS-NIR-DEMO"
        use = "official"
    else:
        type_code = "INS-NIR" if ins.kind is InsKind.NIR else "INS-NIA"
        use = "official" if ins.kind is InsKind.NIR else "temp"
    return {
        "use": use,
        "type": codeable(None, coding(FR_V2_0203, type_code)),
        "system": f"urn:oid:{ins.oid}",
        "value": ins.matricule,
    }


def local_identifiers(person: Person, essms: Essms) -> list[Json]:
    """The person's DUI identifier: TDDUI local user id ``3<FINESS>/<local id>``, plus the
    ESSMS's own OID when it declares one (the CDA IPP)."""
    out: list[Json] = [
        {
            "use": "usual",
            "type": codeable(None, coding("http://terminology.hl7.org/CodeSystem/v2-0203", "PI")),
            "system": LOCAL_USER_SYSTEM,
            "value": f"3{essms.finess}/{person.local_id}",
        }
    ]
    if essms.patient_id_oid:
        out.append({"use": "secondary", "system": f"urn:oid:{essms.patient_id_oid}", "value": person.local_id})
    return out


def _contact(related: RelatedPerson, role_text: str, role: Json | None) -> Json:
    relationship: list[Json] = []
    if role is not None:
        relationship.append(codeable(role_text, role))
    else:
        relationship.append(codeable(role_text))
    if related.relationship:
        relationship.append(codeable(None, code(valuesets.RELATION_PATIENT.get(related.relationship))))
    out: Json = {"relationship": relationship, "name": {"family": related.family_name}}
    if related.given_name:
        out["name"]["given"] = [related.given_name]
    if related.telecoms:
        out["telecom"] = telecoms(related.telecoms)
    if related.address is not None:
        out["address"] = address(related.address)[0]
    return out


def _contacts(person: Person) -> list[Json]:
    v2_0131 = "http://terminology.hl7.org/CodeSystem/v2-0131"
    out: list[Json] = []
    if person.trusted_person is not None:
        out.append(_contact(person.trusted_person, "Personne de confiance", None))
    for related in person.emergency_contacts:
        out.append(_contact(related, "Personne à prévenir", coding(v2_0131, "C", "Emergency Contact")))
    if person.legal_representative is not None:
        out.append(_contact(person.legal_representative, "Représentant légal", coding(v2_0131, "O", "Other")))
    return out


def patient(person: Person, essms: Essms, *, managing_organization: str = "", general_practitioner: str = "") -> Json:
    """FR Core Patient; FR Core Patient INS (INS identifier slice) only when the identity is qualifiée."""
    traits = person.traits
    ins = ins_identifier(person)
    reliability: Json = {
        "url": FR_CORE + "fr-core-identity-reliability",
        "extension": [
            {
                "url": "identityStatus",
                "valueCoding": coding(IDENTITY_STATUS_SYSTEM, IDENTITY_STATUS_CODES[person.identity_status]),
            }
        ],
    }
    extensions: list[Json] = [reliability]
    if traits.birth_place_code:
        birth_place: Json = {
            "extension": [
                {
                    "url": FR_CORE + "fr-core-address-insee-code",
                    "valueCoding": coding(INSEE_COMMUNE_SYSTEM, traits.birth_place_code),
                }
            ]
        }
        if traits.birth_place_city:
            birth_place["city"] = traits.birth_place_city
        extensions.append(
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueAddress": birth_place}
        )
    official: Json = {
        "extension": [
            {
                "url": FR_CORE + "fr-core-patient-birth-list-given-name",
                "valueString": " ".join(traits.birth_given_names),
            }
        ],
        "use": "official",
        "family": traits.birth_family_name,
        "given": [traits.birth_given_names[0]],
    }
    names = [official]
    if person.used_family_name or person.used_given_name:
        usual: Json = {"use": "usual", "family": person.used_family_name or traits.birth_family_name}
        if person.used_given_name:
            usual["given"] = [person.used_given_name]
        names.append(usual)
    out: Json = {
        "resourceType": "Patient",
        "meta": {"profile": [FR_CORE + ("fr-core-patient-ins" if ins else "fr-core-patient")]},
        "extension": extensions,
        "identifier": ([ins] if ins else []) + local_identifiers(person, essms),
        "name": names,
        "gender": _GENDER[traits.sex.value],
        "birthDate": fhir_date(traits.birth_date),
    }
    if person.telecoms:
        out["telecom"] = telecoms(person.telecoms)
    if person.address is not None:
        out["address"] = address(person.address)
    contacts = _contacts(person)
    if contacts:
        out["contact"] = contacts
    if general_practitioner:
        out["generalPractitioner"] = [{"reference": general_practitioner}]
    if managing_organization:
        out["managingOrganization"] = {"reference": managing_organization}
    return out


def organization(essms: Essms) -> Json:
    """FR Core Organization for the ESSMS: idNat_Struct ``1``+FINESS and FINESS géographique."""
    identifiers: list[Json] = [
        {
            "use": "official",
            "type": codeable(None, coding(FR_V2_0203, "IDNST")),
            "system": "urn:oid:1.2.250.1.71.4.2.2",
            "value": f"1{essms.finess}",
        },
        {
            "use": "official",
            "type": codeable(None, coding(FR_V2_0203, "FINEG")),
            "system": "https://finess.esante.gouv.fr",
            "value": essms.finess,
        },
    ]
    out: Json = {
        "resourceType": "Organization",
        "meta": {"profile": [FR_CORE + "fr-core-organization"]},
        "identifier": identifiers,
        "name": essms.name,
    }
    if essms.telecoms:
        out["telecom"] = telecoms(essms.telecoms)
    if essms.address is not None:
        out["address"] = address(essms.address)
    return out


def health_establishment(establishment: HealthEstablishment) -> Json:
    """FR Core Organization for a health establishment (preferred hospital, emergency department)."""
    out: Json = {"resourceType": "Organization", "meta": {"profile": [FR_CORE + "fr-core-organization"]}}
    if establishment.finess:
        out["identifier"] = [
            {
                "use": "official",
                "type": codeable(None, coding(FR_V2_0203, "FINEG")),
                "system": "https://finess.esante.gouv.fr",
                "value": establishment.finess,
            }
        ]
    out["name"] = establishment.name
    if establishment.telecoms:
        out["telecom"] = telecoms(establishment.telecoms)
    if establishment.address is not None:
        out["address"] = address(establishment.address)
    return out


def practitioner(professional: Professional, essms: Essms) -> Json:
    """FR Core Practitioner: idNat_PS (``8``+RPPS, or ``3``+FINESS``/``+internal id) and RPPS."""
    identifiers: list[Json] = []
    if professional.rpps:
        identifiers.append(
            {
                "use": "official",
                "type": codeable(None, coding(FR_V2_0203, "IDNPS")),
                "system": "urn:oid:1.2.250.1.71.4.2.1",
                "value": f"8{professional.rpps}",
            }
        )
        identifiers.append(
            {
                "use": "official",
                "type": codeable(None, coding(FR_V2_0203, "RPPS")),
                "system": "https://rpps.esante.gouv.fr",
                "value": professional.rpps,
            }
        )
    else:
        identifiers.append(
            {
                "use": "official",
                "type": codeable(None, coding(FR_V2_0203, "IDNPS")),
                "system": "urn:oid:1.2.250.1.71.4.2.1",
                "value": f"3{essms.finess}/{professional.internal_id}",
            }
        )
    name: Json = {"use": "official", "family": professional.family_name}
    if professional.given_name:
        name["given"] = [professional.given_name]
    if professional.title:
        name["prefix"] = [professional.title]
    out: Json = {
        "resourceType": "Practitioner",
        "meta": {"profile": [FR_CORE + "fr-core-practitioner"]},
        "identifier": identifiers,
        "name": [name],
    }
    if professional.telecoms:
        out["telecom"] = telecoms(professional.telecoms)
    if professional.address is not None:
        out["address"] = address(professional.address)
    specialty = valuesets.AUTHOR_SPECIALTY.get(professional.role)
    out["qualification"] = [{"code": codeable(specialty.display, code(specialty))}]
    return out
