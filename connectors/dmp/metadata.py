"""XDS.b metadata of a DMP submission, read from the CDA header (the spec's "source" column)
plus the rendition's exchange metadata (class/format codes, derived by the mappings), and its
ebRIM 3.0 rendering (``lcm:SubmitObjectsRequest``).

Reference: ``shared/specs/dmp-mes.md`` §2 (objects table, DocumentEntry and SubmissionSet
tables). Values are formatted as the DMP expects: CX for patient ids, XCN for persons, XON for
institutions, UTC ``YYYYMMDDhhmmss`` for times.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from lxml import etree

from connectors.dmp._xml import NS, UnsafeXml, parse_xml, q
from mappings.base import Code, ExchangeMetadata

__all__ = [
    "INS_OIDS",
    "Coded",
    "DocumentEntry",
    "MetadataError",
    "SubmissionSet",
    "document_entry",
    "oid_from_key",
    "submit_objects_request",
    "visibility_codes",
]

# Registry UUIDs (IHE ITI TF-3 §4.2.5), as listed in the spec's objects table.
DE_OBJECT_TYPE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_EVENT = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
DE_FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_FACILITY = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
CLASSIFICATION_NODE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
REGISTRY_PACKAGE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage"

INS_OIDS = {
    "1.2.250.1.213.1.4.8": "INS-NIR",
    "1.2.250.1.213.1.4.9": "INS-NIA",
    "1.2.250.1.213.1.4.10": "INS-NIR (test)",
    "1.2.250.1.213.1.4.11": "INS-NIA (test)",
}
PS_OID = "1.2.250.1.71.4.2.1"  # idNatPS
STRUCT_OID = "1.2.250.1.71.4.2.2"  # idNatStruct
VISIBILITY_SYSTEM = "1.2.250.1.213.1.1.4.13"

# Sharing choices (closed vocabulary) → DMP confidentiality codes (JDV_J08 / DMP J58).
VISIBILITY: Mapping[str, Code] = {
    "masked_to_professionals": Code("MASQUE_PS", VISIBILITY_SYSTEM, "Masqué aux professionnels de santé"),
    "invisible_to_person": Code("INVISIBLE_PATIENT", VISIBILITY_SYSTEM, "Non visible par le patient"),
    "invisible_to_legal_representatives": Code(
        "INVISIBLE_REPRESENTANTS_LEGAUX", VISIBILITY_SYSTEM, "Non visible par les représentants légaux du patient"
    ),
}


class MetadataError(ValueError):
    """The document cannot be described for the DMP (missing INS, author...): never retried."""


@dataclass(frozen=True)
class Coded:
    code: str
    scheme: str
    display: str = ""

    @classmethod
    def of(cls, code: Code) -> Coded:
        return cls(code.code, code.system, code.display or code.code)


@dataclass(frozen=True)
class DocumentEntry:
    """One DocumentEntry ("fiche") as sent to the DMP."""

    entry_id: str  # symbolic id in the request (urn:uuid:...)
    document_ref: str  # xdsb:Document/@id of its bytes
    unique_id: str
    patient_id: str
    source_patient_id: str
    source_patient_info: tuple[str, ...]
    type_code: Coded
    class_code: Coded
    format_code: Coded
    facility_type_code: Coded
    practice_setting_code: Coded
    confidentiality: tuple[Coded, ...]
    creation_time: str
    service_start: str
    service_stop: str | None
    language: str
    title: str
    hash: str
    size: int
    mime_type: str
    legal_authenticator: str | None
    author_person: str
    author_institution: str | None
    author_specialty: str | None
    author_role: str | None
    event_codes: tuple[Coded, ...] = ()


@dataclass(frozen=True)
class SubmissionSet:
    entry_id: str
    unique_id: str
    source_id: str
    patient_id: str
    submission_time: str
    content_type: Coded
    author_person: str
    author_institution: str | None
    title: str = ""
    members: tuple[DocumentEntry, ...] = ()
    replaces: Mapping[str, str] = field(default_factory=dict)  # entry_id -> entryUUID replaced


def oid_from_key(*parts: str) -> str:
    """A stable OID (``2.25.<uuid5 as integer>``) from ``parts``: the same inputs, the same OID."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '|'.join(parts)).int}"


def _ts(value: str | None, what: str) -> datetime:
    """HL7 TS (``YYYYMMDD[hhmm[ss]][+zzzz]``) → aware datetime (UTC when no offset, date-only at 00:00)."""
    match = re.fullmatch(r"(\d{8})(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?", value or "")
    if not match:
        raise MetadataError(f"{what}: {value!r} is not an HL7 timestamp")
    day, hh, mm, ss, offset = match.groups()
    tz = UTC
    if offset:
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    moment = datetime.strptime(day, "%Y%m%d").replace(
        hour=int(hh or 0), minute=int(mm or 0), second=int(ss or 0), tzinfo=tz
    )
    return moment.astimezone(UTC)


def utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def _one(root: Any, path: str, what: str) -> Any:
    found = root.find(path, NS)
    if found is None:
        raise MetadataError(f"the CDA has no {what} ({path})")
    return found


def _coded(element: Any, what: str) -> Coded:
    code, system = element.get("code"), element.get("codeSystem")
    if not code or not system:
        raise MetadataError(f"the CDA {what} has no code/codeSystem")
    return Coded(code, system, element.get("displayName") or code)


def _person_name(entity: Any) -> tuple[str, str]:
    name = entity.find("hl7:name", NS)
    if name is None:
        return "", ""
    family = name.find("hl7:family", NS)
    given = name.find("hl7:given", NS)
    return (
        (family.text or "").strip() if family is not None else "",
        (given.text or "").strip() if given is not None else "",
    )


def _hl7_escape(value: str) -> str:
    """Escape HL7 v2 separators inside a component (``\\F\\``, ``\\S\\``, ``\\T\\``, ``\\E\\``)."""
    return value.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("&", "\\T\\")


def _xcn(assigned: Any, person_path: str, what: str) -> str:
    ident = _one(assigned, "hl7:id", f"{what} id")
    if ident.get("root") != PS_OID or not ident.get("extension"):
        raise MetadataError(f"the {what} has no national id (root {PS_OID})")
    person = _one(assigned, person_path, f"{what} person")
    family, given = _person_name(person)
    return f"{ident.get('extension')}^{_hl7_escape(family)}^{_hl7_escape(given)}^^^^^^&{PS_OID}&ISO^D^^^IDNPS"


def _xon(org: Any) -> str | None:
    ident = org.find("hl7:id", NS)
    name = org.find("hl7:name", NS)
    if ident is None or ident.get("root") != STRUCT_OID or not ident.get("extension"):
        return None
    label = _hl7_escape((name.text or "").strip()) if name is not None else ""
    return f"{label}^^^^^&{STRUCT_OID}&ISO^IDNST^^^{ident.get('extension')}"


def _ce(element: Any) -> str:
    """CE ``code^display^&OID&ISO`` (spec: authorSpecialty / authorRole)."""
    display = _hl7_escape(element.get("displayName") or "")
    return f"{element.get('code')}^{display}^&{element.get('codeSystem')}&ISO"


def _cx(extension: str, root: str, kind: str) -> str:
    return f"{extension}^^^&{root}&ISO^{kind}"


def visibility_codes(choices: Iterable[str]) -> tuple[Code, ...]:
    """The DMP masking/visibility confidentiality codes for the person's sharing choices."""
    wanted = set(choices)
    return tuple(code for choice, code in VISIBILITY.items() if choice in wanted)


def document_entry(
    content: bytes,
    meta: ExchangeMetadata,
    *,
    document_id: str,
    entry_id: str,
    document_ref: str,
    visibility: tuple[Code, ...] = (),
    mime_type: str = "text/xml",
) -> DocumentEntry:
    """The DocumentEntry of a CDA, each attribute from the CDA header as in the spec's table."""
    try:
        cda = parse_xml(content, max_depth=256)
    except UnsafeXml as exc:
        raise MetadataError(f"the CDA cannot be read: {exc}") from exc
    if cda.tag != q("hl7", "ClinicalDocument"):
        raise MetadataError("the rendition is not a CDA ClinicalDocument")
    doc_id = _one(cda, "hl7:id", "document id")
    unique_id = doc_id.get("root", "")
    if doc_id.get("extension"):
        unique_id = f"{unique_id}^{doc_id.get('extension')}"
    if unique_id != document_id:
        raise MetadataError(f"the CDA id {unique_id!r} differs from the rendition's document id")
    patient_role = _one(cda, "hl7:recordTarget/hl7:patientRole", "recordTarget")
    ins = [i for i in patient_role.findall("hl7:id", NS) if i.get("root") in INS_OIDS]
    if not ins or not ins[0].get("extension"):
        raise MetadataError("no INS in the CDA recordTarget: a document without a qualified INS never goes to the DMP")
    ins_root, ins_ext = ins[0].get("root"), ins[0].get("extension")
    if meta.patient_id and (meta.patient_id, meta.patient_id_system) != (ins_ext, ins_root):
        raise MetadataError("the exchange metadata's patient id differs from the CDA recordTarget INS")
    patient_id = _cx(ins_ext, ins_root, "NH")
    locals_ = [i for i in patient_role.findall("hl7:id", NS) if i.get("root") not in INS_OIDS]
    source_patient_id = (
        _cx(locals_[0].get("extension"), locals_[0].get("root"), "PI")
        if locals_ and locals_[0].get("extension")
        else patient_id
    )
    patient = patient_role.find("hl7:patient", NS)
    info: list[str] = [f"PID-3|{source_patient_id}"]
    if patient is not None:
        family, given = _person_name(patient)
        info.append(f"PID-5|{_hl7_escape(family)}^{_hl7_escape(given)}^^^^^L")
        birth = patient.find("hl7:birthTime", NS)
        if birth is not None and birth.get("value"):
            info.append(f"PID-7|{birth.get('value')}")
        sex = patient.find("hl7:administrativeGenderCode", NS)
        if sex is not None and sex.get("code"):
            info.append(f"PID-8|{sex.get('code')}")

    type_code = _coded(_one(cda, "hl7:code", "code"), "code")
    if (type_code.code, type_code.scheme) != (meta.type_code.code, meta.type_code.system):
        raise MetadataError("the exchange metadata's typeCode differs from the CDA code")
    confidentiality = [_coded(_one(cda, "hl7:confidentialityCode", "confidentialityCode"), "confidentialityCode")]
    confidentiality += [Coded.of(c) for c in visibility]
    author = _one(cda, "hl7:author", "author")
    assigned = _one(author, "hl7:assignedAuthor", "assignedAuthor")
    org = assigned.find("hl7:representedOrganization", NS)
    specialty = assigned.find("hl7:code", NS)
    role = author.find("hl7:functionCode", NS)
    legal = cda.find("hl7:legalAuthenticator/hl7:assignedEntity", NS)
    service = _one(cda, "hl7:documentationOf/hl7:serviceEvent/hl7:effectiveTime", "serviceEvent effectiveTime")
    low, high = service.find("hl7:low", NS), service.find("hl7:high", NS)
    if low is None:
        raise MetadataError("the CDA serviceEvent has no effectiveTime/low (serviceStartTime is required)")
    facility = _coded(
        _one(cda, "hl7:componentOf/hl7:encompassingEncounter/hl7:location/hl7:healthCareFacility/hl7:code", "facility"),
        "healthCareFacility code",
    )
    if org is None:
        raise MetadataError("the CDA author has no representedOrganization")
    practice = _coded(_one(org, "hl7:standardIndustryClassCode", "standardIndustryClassCode"), "practice setting")
    title = (_one(cda, "hl7:title", "title").text or "").strip()
    language = _one(cda, "hl7:languageCode", "languageCode").get("code", "")
    return DocumentEntry(
        entry_id=entry_id,
        document_ref=document_ref,
        unique_id=unique_id,
        patient_id=patient_id,
        source_patient_id=source_patient_id,
        source_patient_info=tuple(info),
        type_code=type_code,
        class_code=Coded.of(meta.class_code),
        format_code=Coded.of(meta.format_code),
        facility_type_code=facility,
        practice_setting_code=practice,
        confidentiality=tuple(confidentiality),
        creation_time=utc(_ts(_one(cda, "hl7:effectiveTime", "effectiveTime").get("value"), "effectiveTime")),
        service_start=utc(_ts(low.get("value"), "serviceEvent low")),
        service_stop=utc(_ts(high.get("value"), "serviceEvent high"))
        if high is not None and high.get("value")
        else None,
        language=language,
        title=title,
        hash=hashlib.sha1(content, usedforsecurity=False).hexdigest(),
        size=len(content),
        mime_type=mime_type,
        legal_authenticator=_xcn(legal, "hl7:assignedPerson", "legalAuthenticator") if legal is not None else None,
        author_person=_xcn(assigned, "hl7:assignedPerson", "author"),
        author_institution=_xon(org),
        author_specialty=(_ce(specialty) if specialty is not None and specialty.get("code") else None),
        author_role=(_ce(role) if role is not None and role.get("code") else None),
    )


# -- ebRIM rendering ----------------------------------------------------------------------------
def _rim(parent: Any, local: str, **attrs: str) -> Any:
    return etree.SubElement(parent, q("rim", local), **attrs)


def _slot(parent: Any, name: str, *values: str) -> None:
    slot = _rim(parent, "Slot", name=name)
    vl = _rim(slot, "ValueList")
    for value in values:
        _rim(vl, "Value").text = value


def _name(parent: Any, text: str) -> None:
    name = _rim(parent, "Name")
    _rim(name, "LocalizedString", value=text)


def _classification(parent: Any, scheme: str, obj: str, coded: Coded, n: list[int]) -> None:
    n[0] += 1
    c = _rim(
        parent,
        "Classification",
        id=f"cl{n[0]:02d}",
        objectType=CLASSIFICATION_NODE,
        classificationScheme=scheme,
        classifiedObject=obj,
        nodeRepresentation=coded.code,
    )
    _slot(c, "codingScheme", coded.scheme)
    _name(c, coded.display)


def _author(parent: Any, scheme: str, obj: str, n: list[int], slots: list[tuple[str, str | None]]) -> None:
    n[0] += 1
    c = _rim(
        parent,
        "Classification",
        id=f"cl{n[0]:02d}",
        objectType=CLASSIFICATION_NODE,
        classificationScheme=scheme,
        classifiedObject=obj,
        nodeRepresentation="",
    )
    for name, value in slots:
        if value:
            _slot(c, name, value)


def _external_id(parent: Any, scheme: str, obj: str, value: str, label: str, n: list[int]) -> None:
    n[0] += 1
    e = _rim(
        parent,
        "ExternalIdentifier",
        id=f"ei{n[0]:02d}",
        objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier",
        identificationScheme=scheme,
        registryObject=obj,
        value=value,
    )
    _name(e, label)


def _document_entry(parent: Any, de: DocumentEntry, n: list[int]) -> None:
    eo = _rim(parent, "ExtrinsicObject", id=de.entry_id, mimeType=de.mime_type, objectType=DE_OBJECT_TYPE)
    _slot(eo, "creationTime", de.creation_time)
    _slot(eo, "hash", de.hash)
    _slot(eo, "languageCode", de.language)
    if de.legal_authenticator:
        _slot(eo, "legalAuthenticator", de.legal_authenticator)
    _slot(eo, "serviceStartTime", de.service_start)
    if de.service_stop:
        _slot(eo, "serviceStopTime", de.service_stop)
    _slot(eo, "size", str(de.size))
    _slot(eo, "sourcePatientId", de.source_patient_id)
    if de.source_patient_info:
        _slot(eo, "sourcePatientInfo", *de.source_patient_info)
    _name(eo, de.title)
    _author(
        eo,
        DE_AUTHOR,
        de.entry_id,
        n,
        [
            ("authorPerson", de.author_person),
            ("authorInstitution", de.author_institution),
            ("authorRole", de.author_role),
            ("authorSpecialty", de.author_specialty),
        ],
    )
    _classification(eo, DE_CLASS, de.entry_id, de.class_code, n)
    for conf in de.confidentiality:
        _classification(eo, DE_CONFIDENTIALITY, de.entry_id, conf, n)
    for event in de.event_codes:
        _classification(eo, DE_EVENT, de.entry_id, event, n)
    _classification(eo, DE_FORMAT, de.entry_id, de.format_code, n)
    _classification(eo, DE_FACILITY, de.entry_id, de.facility_type_code, n)
    _classification(eo, DE_PRACTICE, de.entry_id, de.practice_setting_code, n)
    _classification(eo, DE_TYPE, de.entry_id, de.type_code, n)
    _external_id(eo, DE_PATIENT_ID, de.entry_id, de.patient_id, "XDSDocumentEntry.patientId", n)
    _external_id(eo, DE_UNIQUE_ID, de.entry_id, de.unique_id, "XDSDocumentEntry.uniqueId", n)


def submit_objects_request(ss: SubmissionSet) -> Any:
    """``lcm:SubmitObjectsRequest`` for the submission set, its members and RPLC associations."""
    req = etree.Element(q("lcm", "SubmitObjectsRequest"), nsmap={"lcm": NS["lcm"], "rim": NS["rim"]})
    objects = _rim(req, "RegistryObjectList")
    n = [0]
    for de in ss.members:
        _document_entry(objects, de, n)
    pkg = _rim(objects, "RegistryPackage", id=ss.entry_id, objectType=REGISTRY_PACKAGE)
    _slot(pkg, "submissionTime", ss.submission_time)
    if ss.title:
        _name(pkg, ss.title)
    _author(
        pkg,
        SS_AUTHOR,
        ss.entry_id,
        n,
        [("authorPerson", ss.author_person), ("authorInstitution", ss.author_institution)],
    )
    _classification(pkg, SS_CONTENT_TYPE, ss.entry_id, ss.content_type, n)
    _external_id(pkg, SS_UNIQUE_ID, ss.entry_id, ss.unique_id, "XDSSubmissionSet.uniqueId", n)
    _external_id(pkg, SS_SOURCE_ID, ss.entry_id, ss.source_id, "XDSSubmissionSet.sourceId", n)
    _external_id(pkg, SS_PATIENT_ID, ss.entry_id, ss.patient_id, "XDSSubmissionSet.patientId", n)
    _rim(
        objects,
        "Classification",
        id="cl-ss",
        classifiedObject=ss.entry_id,
        classificationNode=SS_NODE,
        objectType=CLASSIFICATION_NODE,
    )
    for i, de in enumerate(ss.members, start=1):
        assoc = _rim(
            objects,
            "Association",
            id=f"as{i:02d}",
            associationType=HAS_MEMBER,
            sourceObject=ss.entry_id,
            targetObject=de.entry_id,
            objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association",
        )
        _slot(assoc, "SubmissionSetStatus", "Original")
    for i, (source, target) in enumerate(sorted(ss.replaces.items()), start=1):
        _rim(
            objects,
            "Association",
            id=f"rplc{i:02d}",
            associationType=RPLC,
            sourceObject=source,
            targetObject=target,
            objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association",
        )
    return req
