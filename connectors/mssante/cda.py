"""Reading what the message needs from a CDA header, with a hardened parser.

The subject line (Réf#2 ECO.2.1.3) names the person, and the XDM metadata names the author:
those come from the CDA the mapping produced, not from the envelope's facts (which never hold
names). The parser loads no DTD, expands no entity and reaches no network.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import date

from lxml import etree

__all__ = ["CdaHeader", "CdaUnreadable", "read_cda", "safe_parser"]

HL7 = "urn:hl7-org:v3"
_NS = {"h": HL7}
MAX_XML_BYTES = 64 * 1024 * 1024


class CdaUnreadable(ValueError):
    """The rendition is not a CDA document this connector can send (message holds no content)."""


def safe_parser() -> etree.XMLParser:
    """No DTD loading or validation, no entity expansion, no network, no huge trees."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
    )


@dataclass(frozen=True)
class CdaHeader:
    """What the message and its XDM metadata quote from one CDA (personal data: never log it)."""

    document_id: str  # root^extension, or root
    code: str
    code_system: str
    code_display: str
    title: str
    birth_family: str
    first_given: str
    birth_date: date | None
    patient_ids: tuple[tuple[str, str], ...]  # (root, extension) of recordTarget/patientRole/id
    author_family: str
    author_given: str
    pdf: bytes | None  # the nonXMLBody PDF of an N1 document, when there is one


def _text(node: etree._Element | None) -> str:
    if node is None:
        return ""
    return " ".join("".join(node.itertext()).split())


def _first(root: etree._Element, path: str) -> etree._Element | None:
    found = root.xpath(path, namespaces=_NS)
    if isinstance(found, list) and found and isinstance(found[0], etree._Element):
        return found[0]
    return None


def _birth_date(value: str) -> date | None:
    digits = value[:8]
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def _pdf(root: etree._Element) -> bytes | None:
    text = _first(root, "h:component/h:nonXMLBody/h:text[@mediaType='application/pdf']")
    if text is None or text.get("representation") != "B64":
        return None
    try:
        data = base64.b64decode("".join((text.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data.startswith(b"%PDF-") else None


def read_cda(content: bytes) -> CdaHeader:
    """The header facts of ``content``, or :class:`CdaUnreadable` when it is not a CDA document."""
    if len(content) > MAX_XML_BYTES:
        raise CdaUnreadable("the CDA document is larger than the connector accepts")
    try:
        root = etree.fromstring(content, parser=safe_parser())
    except etree.XMLSyntaxError as exc:
        raise CdaUnreadable("the rendition is not well-formed XML") from exc
    if root.tag != f"{{{HL7}}}ClinicalDocument":
        raise CdaUnreadable("the rendition is not a CDA ClinicalDocument")
    doc_id = _first(root, "h:id")
    if doc_id is None or not doc_id.get("root"):
        raise CdaUnreadable("the CDA document has no id")
    ext = doc_id.get("extension")
    code = _first(root, "h:code")
    patient = _first(root, "h:recordTarget/h:patientRole/h:patient")
    name = _first(patient, "h:name") if patient is not None else None
    family = None
    given = None
    if name is not None:
        # an lxml element without children is falsy: never chain them with ``or``
        family = _first(name, "h:family[@qualifier='BR']")
        if family is None:
            family = _first(name, "h:family")
        given = _first(name, "h:given[@qualifier='BR']")
        if given is None:
            given = _first(name, "h:given")
    birth = _first(patient, "h:birthTime") if patient is not None else None
    ids = tuple(
        (str(e.get("root") or ""), str(e.get("extension") or ""))
        for e in root.xpath("h:recordTarget/h:patientRole/h:id", namespaces=_NS)
        if isinstance(e, etree._Element)
    )
    author = _first(root, "h:author/h:assignedAuthor/h:assignedPerson/h:name")
    return CdaHeader(
        document_id=f"{doc_id.get('root')}^{ext}" if ext else str(doc_id.get("root")),
        code=str(code.get("code") or "") if code is not None else "",
        code_system=str(code.get("codeSystem") or "") if code is not None else "",
        code_display=str(code.get("displayName") or "") if code is not None else "",
        title=_text(_first(root, "h:title")),
        birth_family=_text(family),
        first_given=_text(given),
        birth_date=_birth_date(str(birth.get("value") or "")) if birth is not None else None,
        patient_ids=ids,
        author_family=_text(_first(author, "h:family")) if author is not None else "",
        author_given=_text(_first(author, "h:given")) if author is not None else "",
        pdf=_pdf(root),
    )
