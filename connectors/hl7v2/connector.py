"""The ``mllp`` connector: a CDA document (DLU, PPA) sent in an MDM message over MLLP.

Per the CI-SIS volet "Transmission d'un document CDA-R2 en HL7v2" (:mod:`connectors.hl7v2.mdm`):
the first version of a series is an ``MDM^T02`` (OBX-11 ``F``); a later version, when this
destination acknowledged an earlier one (``envelope.held``), an ``MDM^T10`` (``C``) whose TXA-13
names the replaced document; ``options: {mdm_event: deletion}`` sends a ``T04`` (``D``). The CDA is
base64 in OBX-5 of the ``ED`` row. PID: the identifiers and traits of the CDA's recordTarget
(INS with its OID, the ESSMS's local id), else the DUI's person reference.

MSH-10 is derived from the envelope's idempotency key, so a resend carries the same control id
and the peer recognises it. Answers (MSA-1):

- ``AA`` → ``delivered``; ``CA`` (``ack_mode: enhanced``, MSH-15/16 ``AL``) → ``sent`` with
  ``ack_ref`` = MSH-10: the peer's application ACK (``ACK`` with MSA-2 = MSH-10), received by the
  ``mllp`` source, later says delivered (AA) or failed (AE/AR) through the acknowledgement seam;
- ``AE``/``CE`` → :class:`PermanentError` (the peer refused this content);
- ``AR``/``CR``, no answer before the deadline, a closed or refused connection → :class:`TransientError`.

Ordering per person comes from the engine (one series per person and document type, in version
order); ``concurrency: 1`` on the destination keeps a single connection open at a time.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import Envelope, Health, PermanentError, Receipt, TransientError
from connectors.hl7v2 import er7
from connectors.hl7v2.adt import INS_OIDS
from connectors.hl7v2.mdm import EVENTS, MdmMessage
from connectors.hl7v2.message import parse
from connectors.hl7v2.mllp import FramingError, frame, read_frame
from mappings.base import Rendition

__all__ = ["MllpConnector", "MllpConnectorSettings", "build_mdm"]

_CDA_TYPES = ("application/xml", "text/xml", "application/hl7-v3+xml", "application/hl7-cda+xml")
_NS = {"h": "urn:hl7-org:v3"}


class MllpConnectorSettings(BaseModel):
    """Where the peer (a PFI, a hospital system) listens, and how the ESSMS names itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    timeout: float = Field(default=30.0, gt=0, le=600)
    tls: bool = False
    ca_file: str | None = None  # verify the peer against these CAs (default: the system's)
    certificate_file: str | None = None  # client certificate (PEM), with private_key_file
    private_key_file: str | None = None
    verify_tls: bool = True
    ack_mode: Literal["original", "enhanced"] = "original"
    sending_application: str = Field(default="DUI-GATEWAY", max_length=180)
    sending_facility: str = Field(default="", max_length=180)
    receiving_application: str = Field(default="", max_length=180)
    receiving_facility: str = Field(default="", max_length=180)
    processing_id: Literal["P", "T", "D"] = "P"
    # PID-3 assigning authority of the DUI's person reference (HD: namespace&OID&ISO)
    local_authority: str = Field(default="DUI&&L", max_length=180)
    # MetaDMPMSS rows: where the peer should route the document
    dest_dmp: bool = True
    dest_mssante_ps: bool = False
    dest_mssante_patient: bool = False
    max_answer_bytes: int = Field(default=1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _pair(self) -> MllpConnectorSettings:
        if bool(self.certificate_file) != bool(self.private_key_file):
            raise ValueError("a client certificate needs both certificate_file and private_key_file")
        return self


def _cda_rendition(envelope: Envelope) -> Rendition:
    for rendition in envelope.renditions:
        if rendition.media_type.split(";")[0].strip() in _CDA_TYPES:
            return rendition
    raise PermanentError("the envelope holds no CDA (XML) rendition to send in an MDM")


def _pid_from_cda(content: bytes, person_ref: str, local_authority: str) -> tuple[str, ...]:
    """PID fields 1..32 from the CDA's recordTarget (INS first), else the person reference."""
    ids: list[str] = []
    name = birth = sex = ""
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)
        root = etree.fromstring(content, parser=parser)
        role = root.find("h:recordTarget/h:patientRole", _NS)
    except etree.XMLSyntaxError:
        role = None
    if role is not None:
        for ident in role.findall("h:id", _NS):
            oid, value = ident.get("root", ""), ident.get("extension", "")
            if not value:
                continue
            if oid in INS_OIDS:
                ids.insert(0, f"{er7.escape(value)}^^^ASIP-SANTE-INS-NIR&{oid}&ISO^INS")
            else:
                ids.append(f"{er7.escape(value)}^^^&{oid}&ISO^PI")
        patient = role.find("h:patient", _NS)
        if patient is not None:
            family = patient.findtext("h:name/h:family", default="", namespaces=_NS).strip()
            given = patient.findtext("h:name/h:given", default="", namespaces=_NS).strip()
            name = f"{er7.escape(family)}^{er7.escape(given)}^^^^^L" if family else ""
            birth_node = patient.find("h:birthTime", _NS)
            birth = (birth_node.get("value", "") if birth_node is not None else "")[:8]
            sex_node = patient.find("h:administrativeGenderCode", _NS)
            sex = sex_node.get("code", "") if sex_node is not None else ""
    if not ids:
        ids.append(f"{er7.escape(person_ref)}^^^{local_authority}^PI")
    fields = [""] * 32
    fields[0], fields[2], fields[4], fields[6], fields[7] = "1", "~".join(ids[:8]), name, birth, sex
    return tuple(fields[:8])


def control_id(envelope: Envelope, rendition: Rendition, trigger: str) -> str:
    """MSH-10: stable across resends of the same delivery (20 characters)."""
    seed = f"{envelope.idempotency_key}|{rendition.document_id}|{trigger}".encode()
    return "DG" + hashlib.sha256(seed).hexdigest()[:18].upper()


def build_mdm(envelope: Envelope, settings: MllpConnectorSettings, *, now: datetime | None = None) -> MdmMessage:
    """The MDM an envelope is sent as."""
    rendition = _cda_rendition(envelope)
    held = envelope.held.get(rendition.set_id)
    request = str(envelope.options.get("mdm_event") or "")
    if request not in EVENTS:
        request = "replacement" if held is not None and rendition.version > 1 else "initial"
    trigger = EVENTS[request][0]
    meta = rendition.metadata
    code = meta.type_code.code if meta is not None else ""
    label = (meta.type_code.display or "") if meta is not None else ""
    moment = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    created = meta.creation_time.strftime("%Y%m%d%H%M%S") if meta is not None and meta.creation_time else moment
    facility_id = envelope.facts.essms_finess
    authority = er7.escape(settings.sending_facility or facility_id)

    def entity(document_id: str) -> str:
        # TXA-12/13 (EI): the CDA id as root.extension (as in the volet's examples), then its authority
        return f"{er7.escape(document_id.replace('^', '.'))}^{authority}"

    return MdmMessage(
        trigger=trigger,
        control_id=control_id(envelope, rendition, trigger),
        timestamp=moment,
        document=rendition.content,
        document_id=entity(rendition.document_id),
        document_type=(code, label),
        sending_application=settings.sending_application,
        sending_facility=settings.sending_facility or facility_id,
        receiving_application=settings.receiving_application,
        receiving_facility=settings.receiving_facility,
        processing_id=settings.processing_id,
        ack_types=("AL", "AL") if settings.ack_mode == "enhanced" else ("", ""),
        activity_time=created,
        parent_document_id=entity(held.document_id) if held is not None and trigger != "T02" else "",
        evn=("", moment),
        pid=_pid_from_cda(rendition.content, envelope.facts.person_ref, settings.local_authority),
        pv1=("1", "N"),
        participants=(("", "UC", "", "SB^^HL70912", "", "", "", f"^^^^^^^^^{facility_id}"),),
        metadata=(
            ("MASQUE_PS", False),
            ("INVISIBLE_PATIENT", False),
            ("INVISIBLE_REP_LEGAUX", False),
            ("CONNEXION_SECRETE", False),
            ("MODIF_CONF_CODE", False),
            ("DESTDMP", settings.dest_dmp),
            ("DESTMSSANTEPS", settings.dest_mssante_ps),
            ("DESTMSSANTEPAT", settings.dest_mssante_patient),
            ("ACK_RECEPTION", False),
            ("ACK_LECTURE_MSS", False),
        ),
    )


class MllpConnector:
    """See the module docstring."""

    name: ClassVar[str] = "mllp"
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[BaseModel]] = MllpConnectorSettings

    def __init__(self, settings: MllpConnectorSettings | dict[str, Any]) -> None:
        self.settings = settings if isinstance(settings, MllpConnectorSettings) else MllpConnectorSettings(**settings)
        self._context = self._tls_context()

    @property
    def send_timeout(self) -> float:
        return self.settings.timeout

    def _tls_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not s.tls:
            return None
        context = ssl.create_default_context(cafile=s.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not s.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if s.certificate_file:
            context.load_cert_chain(s.certificate_file, s.private_key_file)
        return context

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.settings.host, self.settings.port), timeout=timeout)
        if self._context is not None:
            try:
                return self._context.wrap_socket(sock, server_hostname=self.settings.host)
            except BaseException:
                sock.close()
                raise
        return sock

    def send(self, envelope: Envelope) -> Receipt:
        message = build_mdm(envelope, self.settings)
        payload = message.to_er7()
        try:
            with self._connect(envelope.timeout(self.settings.timeout)) as sock:
                sock.settimeout(envelope.timeout(self.settings.timeout))
                sock.sendall(frame(payload))
                answer = read_frame(sock, max_bytes=self.settings.max_answer_bytes)
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError("the peer's TLS certificate does not verify") from exc
        except (OSError, ConnectionError, FramingError) as exc:
            raise TransientError(f"MLLP exchange failed ({type(exc).__name__})") from exc
        return self._receipt(answer, message)

    def _receipt(self, answer: bytes, message: MdmMessage) -> Receipt:
        try:
            _, text = er7.read_header(answer)
            ack = parse(text)
        except ValueError as exc:
            raise TransientError("the peer's answer is not a readable HL7 ACK") from exc
        code = ack.get("MSA", 1)
        ref = ack.get("MSA", 2)
        if ref != message.control_id:
            raise TransientError("the peer acknowledged another message (MSA-2 differs)")
        error = ack.get("ERR", 3) or ack.get("MSA", 6)
        detail = {"ack": code, "trigger": message.trigger, **({"error": error[:64]} if error else {})}
        if code == "AA":
            return Receipt(remote_id=message.control_id, detail=detail)
        if code == "CA":
            return Receipt(remote_id=message.control_id, detail=detail, status="sent", ack_ref=message.control_id)
        if code in ("AE", "CE"):
            raise PermanentError(f"the peer refused the message ({code} {error})".strip())
        raise TransientError(f"the peer could not take the message now ({code or 'no MSA'} {error})".strip())

    def health(self) -> Health:
        try:
            with self._connect(min(5.0, self.settings.timeout)):
                return Health(ok=True, detail="connected")
        except (OSError, ssl.SSLError) as exc:
            return Health(ok=False, detail=f"cannot connect ({type(exc).__name__})")
