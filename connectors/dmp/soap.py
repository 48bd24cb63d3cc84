"""SOAP 1.2 + WS-Addressing envelopes, MTOM/XOP packaging, and reading the DMP's answers.

Both the connector and the DMP simulator use :func:`split_mtom` and the hardened parser; the
simulator has its own rules and its own answers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from connectors.dmp._xml import NS, UnsafeXml, parse_xml, q

__all__ = [
    "ACTION_PNR",
    "ACTION_PNR_RESPONSE",
    "ACTION_QUERY",
    "ACTION_QUERY_RESPONSE",
    "Answer",
    "QueriedEntry",
    "RegistryError",
    "build_envelope",
    "get_documents_query",
    "mtom",
    "read_answer",
    "split_mtom",
]

ACTION_PNR = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_PNR_RESPONSE = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
ACTION_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
ACTION_QUERY_RESPONSE = "urn:ihe:iti:2007:RegistryStoredQueryResponse"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"


class MtomError(ValueError):
    """A multipart/related body that cannot be read."""


def build_envelope(*, action: str, to: str, body: Any, security: Sequence[Any] = (), message_id: str = "") -> Any:
    """``soap:Envelope`` with WS-Addressing (Action, MessageID, ReplyTo, To) and ``wsse:Security``."""
    env = etree.Element(
        q("soap", "Envelope"),
        nsmap={"soap": NS["soap"], "wsa": NS["wsa"], "wsse": NS["wsse"], "wsu": NS["wsu"]},
    )
    header = etree.SubElement(env, q("soap", "Header"))
    mu = q("soap", "mustUnderstand")
    etree.SubElement(header, q("wsa", "Action"), {mu: "1"}).text = action
    etree.SubElement(header, q("wsa", "MessageID")).text = message_id or f"urn:uuid:{uuid.uuid4()}"
    reply = etree.SubElement(header, q("wsa", "ReplyTo"))
    etree.SubElement(reply, q("wsa", "Address")).text = ANONYMOUS
    etree.SubElement(header, q("wsa", "To"), {mu: "1"}).text = to
    if security:
        sec = etree.SubElement(header, q("wsse", "Security"), {mu: "1"})
        for item in security:
            sec.append(item)
    etree.SubElement(env, q("soap", "Body")).append(body)
    return env


def mtom(envelope: Any, attachments: Sequence[tuple[str, str, bytes]], *, action: str) -> tuple[bytes, str]:
    """(body, Content-Type) of an MTOM/XOP message: the SOAP envelope then one part per
    ``(content_id, media_type, bytes)``; the envelope refers to them with ``xop:Include``."""
    root_xml = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    marker = boundary.encode()
    if marker in root_xml or any(marker in content for _, _, content in attachments):
        raise MtomError("MIME boundary collision")  # a fresh uuid: never in practice
    start = "<root.message@dui-gateway>"
    parts = [
        (
            f'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\n'
            f"Content-Transfer-Encoding: binary\r\nContent-ID: {start}\r\n\r\n"
        ).encode()
        + root_xml
    ]
    for cid, media_type, content in attachments:
        parts.append(
            (f"Content-Type: {media_type}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{cid}>\r\n\r\n").encode()
            + content
        )
    body = b"".join(b"--" + marker + b"\r\n" + part + b"\r\n" for part in parts) + b"--" + marker + b"--\r\n"
    content_type = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; start="{start}"; '
        f'start-info="application/soap+xml"; action="{action}"'
    )
    return body, content_type


def _param(content_type: str, name: str) -> str | None:
    match = re.search(rf'(?:^|;)\s*{name}\s*=\s*(?:"([^"]*)"|([^;\s]*))', content_type, re.IGNORECASE)
    if not match:
        return None
    return match.group(1) if match.group(1) is not None else match.group(2)


def split_mtom(body: bytes, content_type: str, *, max_parts: int = 32) -> tuple[bytes, dict[str, bytes]]:
    """(root part, {content-id: bytes}) of a multipart/related body; a plain SOAP body is its own root."""
    if not content_type.lower().startswith("multipart/related"):
        return body, {}
    boundary = _param(content_type, "boundary")
    if not boundary:
        raise MtomError("multipart/related without a boundary")
    start = (_param(content_type, "start") or "").strip("<>")
    chunks = body.split(b"--" + boundary.encode())
    if len(chunks) < 3:
        raise MtomError("multipart/related body without parts")
    parts: list[tuple[str, bytes]] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        if len(parts) >= max_parts:
            raise MtomError(f"more than {max_parts} MIME parts")
        chunk = chunk.removeprefix(b"\r\n")
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise MtomError("MIME part without headers")
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        parts.append((headers.get("content-id", "").strip("<>"), content.removesuffix(b"\r\n")))
    if not parts:
        raise MtomError("multipart/related body without parts")
    root_index = next((i for i, (cid, _) in enumerate(parts) if start and cid == start), 0)
    root = parts[root_index][1]
    return root, {cid: content for i, (cid, content) in enumerate(parts) if i != root_index}


# -- answers ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistryError:
    code: str
    context: str
    severity: str
    location: str = ""

    @property
    def is_error(self) -> bool:
        return not self.severity.endswith(":Warning")


@dataclass(frozen=True)
class QueriedEntry:
    entry_uuid: str
    unique_id: str
    status: str
    hash: str = ""


@dataclass(frozen=True)
class Answer:
    """What the DMP answered: a RegistryResponse (possibly with query results) or a SOAP fault."""

    status: str = ""  # Success / Failure / PartialSuccess URN, "" for a fault
    errors: tuple[RegistryError, ...] = ()
    fault_code: str = ""  # soap:Sender / soap:Receiver
    fault_subcode: str = ""
    fault_reason: str = ""
    entries: tuple[QueriedEntry, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_fault(self) -> bool:
        return bool(self.fault_code)

    @property
    def succeeded(self) -> bool:
        return not self.is_fault and self.status in (SUCCESS, PARTIAL) and not any(e.is_error for e in self.errors)


def _local(value: str) -> str:
    return value.rsplit(":", 1)[-1] if value else ""


def read_answer(body: bytes, content_type: str) -> Answer:
    """Parse a DMP answer (plain SOAP or MTOM) with the hardened parser; raises ``UnsafeXml``/``MtomError``."""
    root_bytes, _ = split_mtom(body, content_type)
    env = parse_xml(root_bytes)
    if env.tag != q("soap", "Envelope"):
        raise UnsafeXml("the answer is not a SOAP 1.2 envelope")
    soap_body = env.find("soap:Body", NS)
    if soap_body is None or len(soap_body) == 0:
        raise UnsafeXml("the SOAP answer has an empty body")
    payload = soap_body[0]
    if payload.tag == q("soap", "Fault"):
        code = payload.findtext("soap:Code/soap:Value", default="", namespaces=NS)
        sub = payload.findtext("soap:Code/soap:Subcode/soap:Value", default="", namespaces=NS)
        reason = payload.findtext("soap:Reason/soap:Text", default="", namespaces=NS)
        return Answer(
            fault_code=_local(code.strip()) or "Receiver", fault_subcode=sub.strip(), fault_reason=reason.strip()
        )
    response = payload if payload.tag == q("rs", "RegistryResponse") else None
    if payload.tag == q("query", "AdhocQueryResponse"):
        response = payload
    if response is None:
        raise UnsafeXml(f"unexpected SOAP body element {etree.QName(payload).localname}")
    errors = tuple(
        RegistryError(
            code=e.get("errorCode", ""),
            context=e.get("codeContext", ""),
            severity=e.get("severity", SEVERITY_ERROR),
            location=e.get("location", ""),
        )
        for e in response.findall("rs:RegistryErrorList/rs:RegistryError", NS)
    )
    entries: list[QueriedEntry] = []
    for eo in response.findall("rim:RegistryObjectList/rim:ExtrinsicObject", NS):
        unique = ""
        for ei in eo.findall("rim:ExternalIdentifier", NS):
            if ei.get("identificationScheme") == "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab":
                unique = ei.get("value", "")
        digest = ""
        for slot in eo.findall("rim:Slot", NS):
            if slot.get("name") == "hash":
                digest = slot.findtext("rim:ValueList/rim:Value", default="", namespaces=NS)
        entries.append(QueriedEntry(eo.get("id", ""), unique, eo.get("status", ""), digest))
    return Answer(status=response.get("status", ""), errors=errors, entries=tuple(entries))


def get_documents_query(unique_ids: Sequence[str], *, home: str | None = None) -> Any:
    """ITI-18 ``GetDocuments`` by uniqueId, LeafClass (entryUUID, status, hash)."""
    req = etree.Element(q("query", "AdhocQueryRequest"), nsmap={"query": NS["query"], "rim": NS["rim"]})
    etree.SubElement(req, q("query", "ResponseOption"), returnComposedObjects="true", returnType="LeafClass")
    adhoc = etree.SubElement(req, q("rim", "AdhocQuery"), id=GET_DOCUMENTS)
    if home:
        adhoc.set("home", home)
    slot = etree.SubElement(adhoc, q("rim", "Slot"), name="$XDSDocumentEntryUniqueId")
    vl = etree.SubElement(slot, q("rim", "ValueList"))
    etree.SubElement(vl, q("rim", "Value")).text = "(" + ",".join(f"'{u}'" for u in unique_ids) + ")"
    return req
