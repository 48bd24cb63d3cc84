"""MDM messages of the CI-SIS volet "Transmission d'un document CDA-R2 en HL7v2" (v2.x).

| request | message | OBX-11 |
|---|---|---|
| initial transmission | ``MDM^T02^MDM_T02`` | ``F`` |
| replacement | ``MDM^T10^MDM_T02`` (TXA-13: the replaced document's id) | ``C`` |
| deletion | ``MDM^T04^MDM_T02`` | ``D`` |

Structure: MSH, EVN, PID, PV1, TXA, ``OBX|1|ED|<type>||^text^XML^Base64^<CDA in base64>``, PRT
(``SB`` sender, ``RCT`` recipients), then ``CWE`` rows ``<code>^<label>^MetaDMPMSS`` with
``Y|N^^HL70136`` (MASQUE_PS, INVISIBLE_PATIENT, ... DESTDMP, DESTMSSANTEPS, DESTMSSANTEPAT,
ACK_RECEPTION, ACK_LECTURE_MSS) and optional ``ED`` rows (CORPSMAIL_PS...).

:class:`MdmMessage` is what such a message says; :func:`parse_mdm` reads one, :meth:`MdmMessage.to_er7`
writes one (segments the model does not interpret, EVN/PID/PV1/PRT, are kept as their fields).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from connectors.hl7v2.er7 import escape
from connectors.hl7v2.message import Message, parse

__all__ = ["EVENTS", "METADATA_LABELS", "MdmMessage", "parse_mdm"]

# request -> (trigger, OBX-11)
EVENTS = {"initial": ("T02", "F"), "replacement": ("T10", "C"), "deletion": ("T04", "D")}
_STATUS_OF = {trigger: status for trigger, status in EVENTS.values()}
METADATA_LABELS = {
    "MASQUE_PS": "Masqué aux professionnels de Santé",
    "INVISIBLE_PATIENT": "Document Non Visible par le patient",
    "INVISIBLE_REP_LEGAUX": "Non visible par les représentants Légaux du patient",
    "CONNEXION_SECRETE": "Connexion Secrete",
    "MODIF_CONF_CODE": "Modification Confidentiality Code",
    "DESTDMP": "Destinataire DMP",
    "DESTMSSANTEPS": "Destinataire (Professionnel de Santé, organisation ou BAL applicative)",
    "DESTMSSANTEPAT": "Destinataire Patient",
    "ACK_RECEPTION": "Accusé de réception",
    "ACK_LECTURE_MSS": "Accusé de lecture",
}


@dataclass(frozen=True)
class MdmMessage:
    """An MDM of the volet; ``document`` is the CDA's bytes (base64 in OBX-5 on the wire)."""

    trigger: str  # T02 | T10 | T04
    control_id: str
    timestamp: str  # MSH-7
    document: bytes
    document_id: str  # TXA-12 (CDA id root[.extension]^assigning authority)
    document_type: tuple[str, str]  # (LOINC code, label): TXA-2 and OBX-3
    sending_application: str = "DUI-GATEWAY"
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    processing_id: str = "P"
    version: str = "2.6"
    profile: str = "2.0^CISIS_CDA_HL7_V2"  # MSH-21
    ack_types: tuple[str, str] = ("", "")  # MSH-15, MSH-16 (enhanced mode: AL, AL)
    activity_time: str = ""  # TXA-4
    parent_document_id: str = ""  # TXA-13 (replacement, deletion)
    completion_status: str = "LA"  # TXA-17
    author: str = ""  # TXA-22
    evn: tuple[str, ...] = ()  # EVN fields 1..n, raw
    pid: tuple[str, ...] = ()  # PID fields 1..n, raw (identifiers, traits)
    pv1: tuple[str, ...] = ()
    participants: tuple[tuple[str, ...], ...] = ()  # PRT fields 1..n, raw
    metadata: tuple[tuple[str, bool], ...] = ()  # (code, yes) CWE rows, in order
    texts: tuple[tuple[str, str, bytes], ...] = ()  # (code, label, content) ED rows after the metadata
    text_positions: tuple[int, ...] = field(default=())  # index among the OBX rows (after OBX 1)

    @property
    def status(self) -> str:
        return _STATUS_OF.get(self.trigger, "F")

    def to_er7(self) -> bytes:
        """The message in ER7 (``\\r`` separated), UTF-8."""

        def seg(name: str, *fields: str) -> str:
            return "|".join((name, *fields))

        msh = seg(
            "MSH",
            "^~\\&",
            self.sending_application,
            self.sending_facility,
            self.receiving_application,
            self.receiving_facility,
            self.timestamp,
            "",
            f"MDM^{self.trigger}^MDM_T02",
            self.control_id,
            self.processing_id,
            self.version,
            "",
            "",
            self.ack_types[0],
            self.ack_types[1],
            "FRA",
            "UNICODE UTF-8",
            "",
            "",
            self.profile,
        )
        code, label = self.document_type
        txa = [""] * 22
        txa[0], txa[1], txa[2], txa[3] = "1", code, "TEXT", self.activity_time
        txa[11], txa[12], txa[16], txa[21] = (
            self.document_id,
            self.parent_document_id,
            self.completion_status,
            self.author,
        )
        lines = [
            msh,
            seg("EVN", *self.evn),
            seg("PID", *self.pid),
            seg("PV1", *self.pv1),
            seg("TXA", *txa),
            seg(
                "OBX",
                "1",
                "ED",
                f"{escape(code)}^{escape(label)}^LN",
                "",
                "^text^XML^Base64^" + base64.b64encode(self.document).decode("ascii"),
                "",
                "",
                "",
                "",
                "",
                self.status,
                "",
            ),
        ]
        lines.extend(seg("PRT", *p) for p in self.participants)
        rows: list[str] = []
        for meta_code, yes in self.metadata:
            label_text = escape(METADATA_LABELS.get(meta_code, meta_code))
            rows.append(f"CWE|{meta_code}^{label_text}^MetaDMPMSS||{'Y' if yes else 'N'}^^HL70136||||||F|")
        for (text_code, text_label, content), position in zip(self.texts, self.text_positions, strict=False):
            encoded = base64.b64encode(content).decode()
            row = f"ED|{text_code}^{escape(text_label)}^MetaDMPMSS||^text^^Base64^{encoded}||||||F|"
            rows.insert(position, row)
        lines.extend(f"OBX|{n}|{row}" for n, row in enumerate(rows, start=2))
        return ("\r".join(lines) + "\r").encode("utf-8")


def _fields(msg: Message, name: str) -> tuple[str, ...]:
    segment = msg.first(name)
    if segment is None:
        return ()
    return tuple(segment.fields[1:])


def parse_mdm(raw: bytes | str) -> MdmMessage:
    """Read an MDM of the volet; raises ValueError when it is not one (no ED OBX, bad base64)."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    msg = parse(text)
    if msg.get("MSH", 9) != "MDM":
        raise ValueError("not an MDM message")
    obx = msg.all("OBX")
    if not obx or msg.component(obx[0].raw(2)) != "ED":
        raise ValueError("the first OBX does not carry the document (ED)")
    encoded = msg.component(obx[0].raw(5), 5)
    try:
        document = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("OBX-5 is not base64") from None
    metadata: list[tuple[str, bool]] = []
    texts: list[tuple[str, str, bytes]] = []
    positions: list[int] = []
    for index, row in enumerate(obx[1:]):
        code = msg.component(row.raw(3), 1)
        if row.raw(2) == "CWE":
            metadata.append((code, msg.component(row.raw(5), 1) == "Y"))
        elif row.raw(2) == "ED":
            try:
                content = base64.b64decode(msg.component(row.raw(5), 5), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("an ED OBX is not base64") from None
            texts.append((code, msg.component(row.raw(3), 2), content))
            positions.append(index)
    txa = msg.first("TXA")
    ack_accept, ack_app = msg.get("MSH", 15), msg.get("MSH", 16)
    return MdmMessage(
        trigger=msg.get("MSH", 9, 2),
        control_id=msg.get("MSH", 10),
        timestamp=msg.get("MSH", 7),
        document=document,
        document_id=txa.raw(12) if txa else "",
        document_type=(msg.component(obx[0].raw(3), 1), msg.component(obx[0].raw(3), 2)),
        sending_application=msg.get("MSH", 3),
        sending_facility=msg.get("MSH", 4),
        receiving_application=msg.get("MSH", 5),
        receiving_facility=msg.get("MSH", 6),
        processing_id=msg.get("MSH", 11),
        version=msg.get("MSH", 12),
        profile=msg.first("MSH").raw(21) if msg.first("MSH") else "",  # type: ignore[union-attr]
        ack_types=(ack_accept, ack_app),
        activity_time=txa.raw(4) if txa else "",
        parent_document_id=txa.raw(13) if txa else "",
        completion_status=txa.raw(17) if txa else "",
        author=txa.raw(22) if txa else "",
        evn=_fields(msg, "EVN"),
        pid=_fields(msg, "PID"),
        pv1=_fields(msg, "PV1"),
        participants=tuple(tuple(p.fields[1:]) for p in msg.all("PRT")),
        metadata=tuple(metadata),
        texts=tuple(texts),
        text_positions=tuple(positions),
    )
