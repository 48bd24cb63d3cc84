"""CDA R2 header builders following the CI-SIS "structuration minimale" (any CI-SIS document).

Generic on purpose: the DLU, the FLUDT and the PPA (CDA level 1) call the same functions
in XSD order: :func:`document_header`, :func:`record_target`, :func:`author`,
:func:`informants`, :func:`custodian`, :func:`legal_authenticator`, :func:`participant_pcp`,
:func:`documentation_of`, :func:`related_document`, :func:`component_of`.

Identifiers (CI-SIS, ``shared/specs/identity-and-security.md``):
- professional: ``1.2.250.1.71.4.2.1`` / ``8`` + RPPS, or ``3`` + FINESS + ``/`` + internal id;
- organisation: ``1.2.250.1.71.4.2.2`` / ``1`` + FINESS (idNat_Struct);
- person: the INS (matricule + its OID) only when the identity is qualifiée, then the local id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from mappings import valuesets
from mappings.base import Code
from mappings.cda.datatypes import add, addr, cd, ii, name, telecom, ts, ts_value
from mappings.record import Address, Essms, Person, Professional, RelatedPerson, Telecom

__all__ = [
    "PS_ID_ROOT",
    "STRUCT_ID_ROOT",
    "DocumentHeader",
    "PatientId",
    "author",
    "component_of",
    "custodian",
    "document_header",
    "documentation_of",
    "informants",
    "legal_authenticator",
    "org_id_extension",
    "participant_pcp",
    "patient_ids",
    "professional_id",
    "record_target",
    "related_document",
]

PS_ID_ROOT = "1.2.250.1.71.4.2.1"
STRUCT_ID_ROOT = "1.2.250.1.71.4.2.2"
HL7_TEMPLATE = "2.16.840.1.113883.2.8.2.1"
CISIS_TEMPLATE = "1.2.250.1.213.1.1.1.1"
_CONFIDENTIALITY = {"N": "Normal", "R": "Restreint", "V": "Très restreint"}
_SEX = {"M": "M", "F": "F", "U": "UN"}
_TITLE = {"DR": "DR", "PR": "PR"}


@dataclass(frozen=True)
class DocumentHeader:
    """The identifying part of a CDA header (everything before ``recordTarget``)."""

    template_ids: tuple[tuple[str, str | None], ...]  # (root, extension) after the HL7 France / CI-SIS ones
    document_id: str  # OID
    code: Code
    title: str
    effective_time: datetime
    set_id: str
    version: int
    confidentiality: str = "N"


@dataclass(frozen=True)
class PatientId:
    root: str
    extension: str


def document_header(doc: etree._Element, header: DocumentHeader) -> None:
    """realmCode … versionNumber."""
    add(doc, "realmCode", code="FR")
    add(doc, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
    add(doc, "templateId", root=HL7_TEMPLATE)
    add(doc, "templateId", root=CISIS_TEMPLATE)
    for root, extension in header.template_ids:
        add(doc, "templateId", root=root, extension=extension)
    ii(doc, header.document_id)
    cd(doc, "code", header.code, system_name="LOINC")
    add(doc, "title", header.title)
    ts(doc, "effectiveTime", header.effective_time)
    add(
        doc,
        "confidentialityCode",
        code=header.confidentiality,
        displayName=_CONFIDENTIALITY[header.confidentiality],
        codeSystem="2.16.840.1.113883.5.25",
    )
    add(doc, "languageCode", code="fr-FR")
    ii(doc, header.set_id, tag="setId")
    add(doc, "versionNumber", value=str(header.version))


def patient_ids(person: Person, local_root: str) -> list[PatientId]:
    """The patientRole ids: INS first when usable (qualifiée), then the local id."""
    ids: list[PatientId] = []
    ins = person.usable_ins
    if ins is not None:
        ids.append(PatientId(ins.oid, ins.matricule))
    ids.append(PatientId(local_root, person.local_id))
    return ids


def _address(parent: etree._Element, address: Address | None, *, use: str | None = None) -> None:
    if address is None:
        add(parent, "addr", nullFlavor="NASK")
        return
    addr(parent, address.lines, address.postal_code, address.city, address.country, use=use)


def _telecoms(parent: etree._Element, telecoms: list[Telecom], *, required: bool = False) -> None:
    for item in telecoms:
        telecom(parent, item.system, item.value, item.use)
    if required and not telecoms:
        add(parent, "telecom", nullFlavor="NASK")


def record_target(doc: etree._Element, person: Person, ids: list[PatientId]) -> None:
    """recordTarget/patientRole with the birth and used names, traits, legal representative, birthplace."""
    role = add(add(doc, "recordTarget"), "patientRole")
    for pid in ids:
        ii(role, pid.root, pid.extension)
    _address(role, person.address, use="H")
    _telecoms(role, person.telecoms)
    patient = add(role, "patient", classCode="PSN")
    traits = person.traits
    pname = add(patient, "name")
    add(pname, "family", traits.birth_family_name, qualifier="BR")
    add(pname, "given", " ".join(traits.birth_given_names))
    add(pname, "given", traits.birth_given_names[0], qualifier="BR")
    if person.used_family_name:
        add(pname, "family", person.used_family_name, qualifier="CL")
    if person.used_given_name:
        add(pname, "given", person.used_given_name, qualifier="CL")
    gender = valuesets.GENDER.get(_SEX[traits.sex.value])
    cd(patient, "administrativeGenderCode", gender)
    ts(patient, "birthTime", traits.birth_date)
    rep = person.legal_representative
    if rep is not None:
        guardian = add(patient, "guardian")
        if rep.relationship is not None:
            cd(guardian, "code", valuesets.RELATION_PATIENT.get(rep.relationship))
        if rep.address is not None:
            _address(guardian, rep.address)
        _telecoms(guardian, rep.telecoms)
        name(add(guardian, "guardianPerson"), rep.family_name, rep.given_name)
    if traits.birth_place_code or traits.birth_place_city:
        place_addr = add(add(add(patient, "birthplace"), "place"), "addr")
        if traits.birth_place_code:
            add(place_addr, "county", traits.birth_place_code)
        if traits.birth_place_city:
            add(place_addr, "city", traits.birth_place_city)


def professional_id(pro: Professional, essms: Essms) -> tuple[str, str]:
    """(root, extension) of a professional: 8+RPPS, or 3+FINESS/internal id."""
    if pro.rpps is not None:
        return PS_ID_ROOT, f"8{pro.rpps}"
    return PS_ID_ROOT, f"3{essms.finess}/{pro.internal_id}"


def org_id_extension(finess: str) -> str:
    """idNat_Struct of a FINESS: ``1`` + FINESS."""
    return f"1{finess}"


def _organization(parent: etree._Element, tag: str, essms: Essms, *, setting: bool = True) -> etree._Element:
    org = add(parent, tag)
    ii(org, STRUCT_ID_ROOT, org_id_extension(essms.finess))
    add(org, "name", essms.name)
    _telecoms(org, essms.telecoms)
    if essms.address is not None:
        _address(org, essms.address)
    if setting:
        cd(org, "standardIndustryClassCode", valuesets.PRACTICE_SETTING.get(essms.practice_setting_code))
    return org


def _person_name(parent: etree._Element, pro: Professional) -> None:
    name(parent, pro.family_name, pro.given_name, suffix=_TITLE.get(pro.title) if pro.title else None)


def _assigned(parent: etree._Element, tag: str, pro: Professional, essms: Essms, *, with_code: bool) -> None:
    entity = add(parent, tag)
    root, extension = professional_id(pro, essms)
    ii(entity, root, extension)
    if with_code:
        cd(entity, "code", valuesets.AUTHOR_SPECIALTY.get(pro.role))
    _address(entity, pro.address or essms.address)
    _telecoms(entity, pro.telecoms or essms.telecoms, required=True)
    _person_name(add(entity, "assignedPerson"), pro)
    _organization(entity, "representedOrganization", essms)


def author(doc: etree._Element, pro: Professional, essms: Essms, time: datetime) -> None:
    """author with assignedAuthor (id, role code from JDV_J01, person, ESSMS)."""
    element = add(doc, "author")
    ts(element, "time", time)
    _assigned(element, "assignedAuthor", pro, essms, with_code=True)


def _related(doc: etree._Element, related: RelatedPerson, class_code: str) -> None:
    entity = add(add(doc, "informant"), "relatedEntity", classCode=class_code)
    if related.relationship is not None:
        cd(entity, "code", valuesets.RELATION_PATIENT.get(related.relationship))
    _address(entity, related.address)
    _telecoms(entity, related.telecoms, required=True)
    name(add(entity, "relatedPerson"), related.family_name, related.given_name)


def informants(doc: etree._Element, person: Person) -> None:
    """informant/relatedEntity: ECON (personnes à prévenir) then NOK (personne de confiance)."""
    for contact in person.emergency_contacts:
        _related(doc, contact, "ECON")
    if person.trusted_person is not None:
        _related(doc, person.trusted_person, "NOK")


def custodian(doc: etree._Element, essms: Essms) -> None:
    """custodian: the ESSMS keeps the document."""
    assigned = add(add(doc, "custodian", typeCode="CST"), "assignedCustodian", classCode="ASSIGNED")
    org = add(assigned, "representedCustodianOrganization", classCode="ORG", determinerCode="INSTANCE")
    ii(org, STRUCT_ID_ROOT, org_id_extension(essms.finess))
    add(org, "name", essms.name)
    _telecoms(org, essms.telecoms[:1])  # CustodianOrganization has at most one telecom (XSD)
    if essms.address is not None:
        _address(org, essms.address)


def legal_authenticator(doc: etree._Element, pro: Professional, essms: Essms, time: datetime) -> None:
    """legalAuthenticator (signatureCode S)."""
    element = add(doc, "legalAuthenticator")
    ts(element, "time", time)
    add(element, "signatureCode", code="S")
    _assigned(element, "assignedEntity", pro, essms, with_code=True)


def participant_pcp(doc: etree._Element, gp: Professional | None, essms: Essms, since: datetime) -> None:
    """participant INF / functionCode PCP: the médecin traitant.

    Without one, the entity carries no ``id`` (0..1 in CI-SISParticipant, whose ``id`` needs a
    root and an extension: a nullFlavor id fails structurationMinimale)."""
    element = add(doc, "participant", typeCode="INF")
    add(element, "functionCode", code="PCP", displayName="Médecin traitant", codeSystem="2.16.840.1.113883.5.88")
    time = add(element, "time", xsi_type="IVL_TS")
    add(time, "low", value=ts_value(since))
    entity = add(element, "associatedEntity", classCode="PROV")
    if gp is None:
        return
    root, extension = professional_id(gp, essms)
    ii(entity, root, extension)
    if gp.address is not None:
        _address(entity, gp.address)
    _telecoms(entity, gp.telecoms)
    _person_name(add(entity, "associatedPerson"), gp)


def documentation_of(
    doc: etree._Element,
    code: Code,
    low: datetime,
    high: datetime | None,
    performer: Professional,
    essms: Essms,
) -> None:
    """documentationOf/serviceEvent with its mandatory effectiveTime/low and the performer."""
    event = add(add(doc, "documentationOf"), "serviceEvent")
    cd(event, "code", code, system_name="LOINC")
    period = add(event, "effectiveTime")
    add(period, "low", value=ts_value(low))
    if high is not None:
        add(period, "high", value=ts_value(high))
    perf = add(event, "performer", typeCode="PRF")
    _assigned(perf, "assignedEntity", performer, essms, with_code=True)


def related_document(doc: etree._Element, parent_document_id: str) -> None:
    """relatedDocument RPLC: this version replaces ``parent_document_id``."""
    parent = add(add(doc, "relatedDocument", typeCode="RPLC"), "parentDocument")
    ii(parent, parent_document_id)


def component_of(
    doc: etree._Element,
    encounter_code: str,
    low: datetime | None,
    high: datetime | None,
    responsible: Professional,
    essms: Essms,
) -> None:
    """componentOf/encompassingEncounter with the healthcareFacilityTypeCode of the ESSMS."""
    encounter = add(add(doc, "componentOf"), "encompassingEncounter")
    cd(encounter, "code", valuesets.ENCOUNTER_CODE.get(encounter_code))
    period = add(encounter, "effectiveTime")
    if low is not None:
        add(period, "low", value=ts_value(low))
    if high is not None:
        add(period, "high", value=ts_value(high))
    if low is None and high is None:
        period.set("nullFlavor", "UNK")
    party = add(encounter, "responsibleParty")
    _assigned(party, "assignedEntity", responsible, essms, with_code=True)
    facility = add(add(encounter, "location"), "healthCareFacility")
    cd(facility, "code", valuesets.FACILITY_TYPE.get(essms.facility_type_code))
