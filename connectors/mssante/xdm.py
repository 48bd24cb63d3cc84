"""The IHE XDM "ZIP over e-mail" package (ITI-32, CI-SIS Échange de documents de santé).

Layout::

    INDEX.HTM                     links to the README and the documents
    README.TXT                    sending application, vendor, contact
    IHE_XDM/SUBSET01/METADATA.XML ebRIM SubmitObjectsRequest: SubmissionSet, DocumentEntries, HasMember
    IHE_XDM/SUBSET01/DOC0001.XML  the CDA documents, byte for byte as rendered

The ZIP is deterministic for a given delivery (fixed entry dates and order) so a resend carries
the same bytes. Identifiers are derived, never random: entryUUID from the document id, the
SubmissionSet uniqueId from the delivery's idempotency key (a ``2.25`` OID from a UUID).
"""

from __future__ import annotations

import hashlib
import html
import io
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from lxml import etree

from connectors.mssante.cda import CdaHeader
from mappings.base import Code, ExchangeMetadata, Rendition

__all__ = ["INS_OIDS", "XdmDocument", "build_xdm", "entry_uuid", "metadata_xml", "submission_set_unique_id"]

LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
_NSMAP = {"lcm": LCM, "rim": RIM}

INS_OIDS = frozenset({"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"})
IDNPS_OID = "1.2.250.1.71.4.2.1"
IDNST_OID = "1.2.250.1.71.4.2.2"

# IHE ITI TF-3 §4.2 identifiers (dmp-mes.md table)
DOCUMENT_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_FACILITY = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SUBMISSION_SET = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
OT_CLASSIFICATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
OT_EXTERNAL_ID = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"
OT_PACKAGE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage"
OT_ASSOCIATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association"

SUBSET = "IHE_XDM/SUBSET01"


@dataclass(frozen=True)
class XdmDocument:
    """One CDA of the package, with what its metadata is made of."""

    rendition: Rendition
    header: CdaHeader
    file_name: str  # DOC0001.XML
    replaces_entry: str | None = None  # entryUUID of the version it replaces at this destination


def entry_uuid(document_id: str) -> str:
    """The DocumentEntry's entryUUID: derived from the document id, so a later RPLC can name it."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, document_id)}"


def submission_set_unique_id(idempotency_key: str) -> str:
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'dui-gateway:mssante:' + idempotency_key).int}"


def _dtm(moment: datetime) -> str:
    """XDS DTM in UTC (``YYYYMMDDhhmmss``)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def _cx(value: str, system: str, *, type_code: str) -> str:
    return f"{value}^^^&{system}&ISO^{type_code}"


def patient_cx(meta: ExchangeMetadata) -> str:
    """``patientId``: the INS (NH) when the mapping put one (qualified identity), else the local id (PI)."""
    kind = "NH" if meta.patient_id_system in INS_OIDS else "PI"
    return _cx(meta.patient_id, meta.patient_id_system, type_code=kind)


def _xcn(person_id: str, family: str, given: str) -> str:
    return f"{person_id}^{family}^{given}^^^^^^&{IDNPS_OID}&ISO^D^^^IDNPS"


def _xon(name: str, institution_id: str) -> str:
    # author_institution_id is "<OID>^<idNatStruct>"; XON carries the idNatStruct in XON.10
    nat = institution_id.split("^", 1)[1] if "^" in institution_id else institution_id
    return f"{name}^^^^^&{IDNST_OID}&ISO^IDNST^^^{nat}"


class _Builder:
    def __init__(self) -> None:
        self.root = etree.Element(f"{{{LCM}}}SubmitObjectsRequest", nsmap=_NSMAP)
        self.objects = etree.SubElement(self.root, f"{{{RIM}}}RegistryObjectList")
        self._n = 0

    def next_id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n:02d}"

    @staticmethod
    def slot(parent: etree._Element, name: str, *values: str) -> None:
        slot = etree.SubElement(parent, f"{{{RIM}}}Slot", name=name)
        value_list = etree.SubElement(slot, f"{{{RIM}}}ValueList")
        for value in values:
            etree.SubElement(value_list, f"{{{RIM}}}Value").text = value

    @staticmethod
    def name(parent: etree._Element, text: str) -> None:
        node = etree.SubElement(parent, f"{{{RIM}}}Name")
        etree.SubElement(node, f"{{{RIM}}}LocalizedString", value=text)

    def code(self, parent: etree._Element, scheme: str, owner: str, code: Code) -> None:
        node = etree.SubElement(
            parent,
            f"{{{RIM}}}Classification",
            id=self.next_id("cl"),
            classificationScheme=scheme,
            classifiedObject=owner,
            nodeRepresentation=code.code,
            objectType=OT_CLASSIFICATION,
        )
        self.slot(node, "codingScheme", code.system)
        self.name(node, code.display or code.code)

    def author(self, parent: etree._Element, scheme: str, owner: str, slots: Sequence[tuple[str, str]]) -> None:
        node = etree.SubElement(
            parent,
            f"{{{RIM}}}Classification",
            id=self.next_id("cl"),
            classificationScheme=scheme,
            classifiedObject=owner,
            nodeRepresentation="",
            objectType=OT_CLASSIFICATION,
        )
        for slot_name, value in slots:
            if value:
                self.slot(node, slot_name, value)

    def external_id(self, parent: etree._Element, scheme: str, owner: str, value: str, label: str) -> None:
        node = etree.SubElement(
            parent,
            f"{{{RIM}}}ExternalIdentifier",
            id=self.next_id("ei"),
            identificationScheme=scheme,
            registryObject=owner,
            value=value,
            objectType=OT_EXTERNAL_ID,
        )
        self.name(node, label)


def _author_slots(meta: ExchangeMetadata, header: CdaHeader) -> list[tuple[str, str]]:
    specialty = str(meta.extra.get("author_specialty") or "")
    return [
        ("authorPerson", _xcn(meta.author_person_id, header.author_family, header.author_given))
        if meta.author_person_id
        else ("authorPerson", ""),
        ("authorInstitution", _xon(meta.author_institution_name, meta.author_institution_id))
        if meta.author_institution_id
        else ("authorInstitution", ""),
        ("authorSpecialty", specialty),
    ]


def metadata_xml(
    documents: Sequence[XdmDocument],
    *,
    idempotency_key: str,
    submission_time: datetime,
    source_oid: str,
    recipients: Sequence[str],
) -> bytes:
    """``METADATA.XML`` for ``documents`` (all of one person)."""
    b = _Builder()
    first = documents[0].rendition.metadata
    assert first is not None
    patient = patient_cx(first)
    ss_id = "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, "dui-gateway:mssante:ss:" + idempotency_key))
    for doc in documents:
        meta = doc.rendition.metadata
        assert meta is not None
        content = doc.rendition.content
        eid = entry_uuid(doc.rendition.document_id)
        eo = etree.SubElement(
            b.objects,
            f"{{{RIM}}}ExtrinsicObject",
            id=eid,
            mimeType=meta.mime_type or "text/xml",
            objectType=DOCUMENT_ENTRY,
            status=APPROVED,
        )
        b.slot(eo, "creationTime", _dtm(meta.creation_time))
        b.slot(eo, "hash", hashlib.sha1(content, usedforsecurity=False).hexdigest())
        b.slot(eo, "languageCode", meta.language_code)
        legal = str(meta.extra.get("legal_authenticator_id") or "")
        if legal:
            b.slot(eo, "legalAuthenticator", f"{legal}^^^^^^^^&{IDNPS_OID}&ISO^D^^^IDNPS")
        if meta.service_start is not None:
            b.slot(eo, "serviceStartTime", _dtm(meta.service_start))
        if meta.service_stop is not None:
            b.slot(eo, "serviceStopTime", _dtm(meta.service_stop))
        b.slot(eo, "size", str(len(content)))
        source_pid = str(meta.extra.get("source_patient_id") or "")
        source_sys = str(meta.extra.get("source_patient_id_system") or "")
        if source_pid and source_sys:
            b.slot(eo, "sourcePatientId", _cx(source_pid, source_sys, type_code="PI"))
        b.slot(eo, "URI", doc.file_name)
        b.name(eo, meta.title or doc.header.title)
        b.author(eo, DE_AUTHOR, eid, _author_slots(meta, doc.header))
        b.code(eo, DE_CLASS, eid, meta.class_code)
        b.code(eo, DE_CONFIDENTIALITY, eid, meta.confidentiality_code)
        b.code(eo, DE_FORMAT, eid, meta.format_code)
        b.code(eo, DE_FACILITY, eid, meta.healthcare_facility_type_code)
        b.code(eo, DE_PRACTICE, eid, meta.practice_setting_code)
        b.code(eo, DE_TYPE, eid, meta.type_code)
        b.external_id(eo, DE_PATIENT_ID, eid, patient_cx(meta), "XDSDocumentEntry.patientId")
        b.external_id(eo, DE_UNIQUE_ID, eid, doc.rendition.document_id, "XDSDocumentEntry.uniqueId")

    ss = etree.SubElement(b.objects, f"{{{RIM}}}RegistryPackage", id=ss_id, objectType=OT_PACKAGE, status=APPROVED)
    b.slot(ss, "submissionTime", _dtm(submission_time))
    if recipients:
        b.slot(ss, "intendedRecipient", *(f"|^^Internet^{r}" for r in recipients))
    b.name(ss, documents[0].header.title or first.title)
    b.author(ss, SS_AUTHOR, ss_id, _author_slots(first, documents[0].header))
    content_type = first.extra.get("content_type_code")
    b.code(
        ss,
        SS_CONTENT_TYPE,
        ss_id,
        Code(**content_type) if isinstance(content_type, dict) else first.type_code,
    )
    b.external_id(ss, SS_UNIQUE_ID, ss_id, submission_set_unique_id(idempotency_key), "XDSSubmissionSet.uniqueId")
    b.external_id(ss, SS_SOURCE_ID, ss_id, source_oid, "XDSSubmissionSet.sourceId")
    b.external_id(ss, SS_PATIENT_ID, ss_id, patient, "XDSSubmissionSet.patientId")
    etree.SubElement(
        b.objects,
        f"{{{RIM}}}Classification",
        id=b.next_id("cl"),
        classifiedObject=ss_id,
        classificationNode=SUBMISSION_SET,
        objectType=OT_CLASSIFICATION,
    )
    for doc in documents:
        eid = entry_uuid(doc.rendition.document_id)
        assoc = etree.SubElement(
            b.objects,
            f"{{{RIM}}}Association",
            id=b.next_id("as"),
            associationType=HAS_MEMBER,
            sourceObject=ss_id,
            targetObject=eid,
            objectType=OT_ASSOCIATION,
        )
        b.slot(assoc, "SubmissionSetStatus", "Original")
        if doc.replaces_entry:
            etree.SubElement(
                b.objects,
                f"{{{RIM}}}Association",
                id=b.next_id("as"),
                associationType=RPLC,
                sourceObject=eid,
                targetObject=doc.replaces_entry,
                objectType=OT_ASSOCIATION,
            )
    return bytes(etree.tostring(b.root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _index_htm(documents: Sequence[XdmDocument], *, application: str) -> bytes:
    titles = [(d.file_name, d.rendition.metadata.title if d.rendition.metadata else d.header.title) for d in documents]
    rows = "\n".join(f'<li><a href="{SUBSET}/{name}">{html.escape(title)}</a></li>' for name, title in titles)
    page = (
        '<!DOCTYPE html>\n<html lang="fr"><head><meta charset="utf-8"><title>IHE XDM</title></head><body>\n'
        f"<h1>Documents transmis par {html.escape(application)}</h1>\n"
        f'<p><a href="README.TXT">README.TXT</a> &#8211; <a href="{SUBSET}/METADATA.XML">METADATA.XML</a></p>\n'
        f"<ul>\n{rows}\n</ul>\n</body></html>\n"
    )
    return page.encode("utf-8")


def _readme(*, application: str, version: str, vendor: str, contact: str) -> bytes:
    text = (
        "Contenu IHE XDM (ITI-32, option ZIP par messagerie) - CI-SIS Echange de documents de sante\r\n"
        f"Application emettrice : {application} {version}\r\n"
        f"Editeur : {vendor}\r\n"
        f"Contact : {contact}\r\n"
        "INDEX.HTM liste les documents ; IHE_XDM/SUBSET01/METADATA.XML porte leurs metadonnees XDS.\r\n"
    )
    return text.encode("utf-8")


def build_xdm(
    documents: Sequence[XdmDocument],
    *,
    idempotency_key: str,
    submission_time: datetime,
    source_oid: str,
    recipients: Sequence[str],
    application: str,
    version: str,
    vendor: str,
    contact: str,
) -> bytes:
    """The ``IHE_XDM.ZIP`` bytes (deterministic for the same arguments)."""
    files: list[tuple[str, bytes]] = [
        ("INDEX.HTM", _index_htm(documents, application=application)),
        ("README.TXT", _readme(application=application, version=version, vendor=vendor, contact=contact)),
        (
            f"{SUBSET}/METADATA.XML",
            metadata_xml(
                documents,
                idempotency_key=idempotency_key,
                submission_time=submission_time,
                source_oid=source_oid,
                recipients=recipients,
            ),
        ),
        *((f"{SUBSET}/{d.file_name}", d.rendition.content) for d in documents),
    ]
    stamp = submission_time.astimezone(UTC)
    date_time = (max(stamp.year, 1980), stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in files:
            info = zipfile.ZipInfo(path, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()
