"""MSSanté connector: CDA documents to professionals, DAC and the person's Mon espace santé box.

One delivery = one SMTP transaction to the ESSMS's MSSanté operator (relay), authenticated with
the ESSMS's IGC-Santé organisation certificate (TLS client authentication, from the credentials
provider, purpose ``mssante``), over STARTTLS or implicit TLS (TLS 1.2+):

- the message (``connectors.mssante.message``): one person, the referential's subject, French
  body, ``X-MSS-*`` headers, ``IHE_XDM.ZIP`` (``connectors.mssante.xdm``) and the readable PDF;
- recipients: ``envelope.options["to"]`` (one address or a list), else the ESSMS's own list
  (``recipients_by_finess``, e.g. its DAC), else ``recipients``; or, with ``to_person``, the
  person's box ``<INS>@patient.mssante.fr`` — only with a qualified INS, never for a document
  flagged ``INVISIBLE_PATIENT``; professionals and the person never share a message;
- all recipients are accepted or none is (``RSET`` when one is refused), so a retry never sends
  twice to part of them; the ``Message-ID`` is stable per delivery;
- outcomes: ``250`` → ``Receipt(status="sent", ack_ref=<Message-ID>)`` (the relay accepted it,
  a DSN/MDN read by :class:`connectors.mssante.imap.ImapReceiptSource` ends the delivery);
  4xx and connection failures → :class:`TransientError`; 5xx → :class:`PermanentError` with the
  server's text (redacted); TLS verification failures → :class:`PermanentError`.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email import policy
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.base import Envelope, Health, PermanentError, Receipt, TransientError
from connectors.mssante._errors import map_mail_errors, redact
from connectors.mssante.cda import CdaHeader, CdaUnreadable, read_cda
from connectors.mssante.message import MessageParts, build_message, message_id, normalise_message_id
from connectors.mssante.tls import client_context
from connectors.mssante.xdm import INS_OIDS, XdmDocument, build_xdm, entry_uuid
from mappings.base import Rendition

__all__ = ["MssanteConnector", "MssanteSettings"]

PATIENT_DOMAIN = "patient.mssante.fr"
_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)
_INVISIBLE = "INVISIBLE_PATIENT"
# CRLF, and no folding below RFC 5322's hard limit: a folded Subject unfolds with a leading space
# in some clients, which then miss the "XDM/1.0/DDM" prefix
_WIRE = policy.SMTP.clone(max_line_length=998)


def _check_address(value: str) -> str:
    value = value.strip()
    if not _ADDRESS.match(value):
        raise ValueError("not an e-mail address (addr-spec)")
    return value


class MssanteSettings(BaseModel):
    """One MSSanté destination (an operator's relay, and who to write to)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = Field(default=587, gt=0, lt=65536)
    tls: Literal["starttls", "implicit"] = "starttls"
    ca_bundle: str | None = None  # PEM file of the CAs trusted for the relay (IGC-Santé), else the system's
    verify_tls: bool = True
    timeout: float = Field(default=30.0, gt=0, le=300)
    helo_name: str = "localhost"
    sender: str | None = None  # the ESSMS's applicative BAL; credentials.attributes["mailbox"] wins
    sender_name: str | None = None  # shown in the body; default: the author institution of the document
    recipients: list[str] = Field(default_factory=list)  # default professional/organisation boxes
    recipients_by_finess: dict[str, list[str]] = Field(default_factory=dict)  # per ESSMS (e.g. its DAC)
    allowed_domains: list[str] = Field(default_factory=lambda: ["mssante.fr"])  # the espace de confiance
    to_person: bool = False  # write to the person's Mon espace santé box instead
    person_no_reply: bool = True  # X-MSS-MES: FIN (the person cannot answer)
    request_mdn: bool = True  # Disposition-Notification-To: <sender>
    dsn_notify: str = Field(
        default="SUCCESS,FAILURE,DELAY", pattern=r"^(NEVER|(SUCCESS|FAILURE|DELAY)(,(SUCCESS|FAILURE|DELAY))*)$"
    )
    dsn_ret: Literal["HDRS", "FULL"] = "HDRS"
    nil: str | None = None  # X-MSS-NIL: product number from convergence.esante.gouv.fr
    source_oid: str = Field(default="1.2.250.1.999.1.1", pattern=r"^[0-2](\.(0|[1-9][0-9]*))+$")
    message_id_domain: str | None = None  # default: the sender's domain
    application_name: str = "dui-gateway"
    vendor: str = "dui-gateway"
    contact: str = ""
    require_client_certificate: bool = True
    client_certificate_file: str | None = None  # fallback and health(): PEM chain
    client_key_file: str | None = None
    max_message_bytes: int = Field(default=20 * 1024 * 1024, gt=0)

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        return [_check_address(v) for v in value]

    @field_validator("recipients_by_finess")
    @classmethod
    def _by_finess(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {k: [_check_address(v) for v in vs] for k, vs in value.items()}

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        return _check_address(value) if value else None


def _xtext(value: str) -> str:
    """RFC 3461 xtext."""
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in value)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in re.split(r"[,;\s]+", value) if v]
    if isinstance(value, Iterable):
        return [str(v) for v in value]
    raise PermanentError("options.to must be an address or a list of addresses")


_CLOSED_AFTER_TLS = (
    "SMTP relay closed the connection right after the TLS handshake: it may refuse the ESSMS "
    "client certificate (check the certificate registered with the operator)"
)


def _first_words_after_tls(smtp: smtplib.SMTP) -> None:
    """EHLO right after the handshake: with TLS 1.3 a relay refusing the client certificate
    shows only now, often as a bare disconnect (retried, with a hint for the operators)."""
    try:
        smtp.ehlo()
    except ssl.SSLError:
        smtp.close()
        raise
    except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
        smtp.close()
        raise TransientError(_CLOSED_AFTER_TLS) from exc


class MssanteConnector:
    name: ClassVar[str] = "mssante"
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[BaseModel]] = MssanteSettings
    credentials_purpose: ClassVar[str] = "mssante"

    def __init__(self, settings: MssanteSettings) -> None:
        self.settings = settings

    @property
    def send_timeout(self) -> float:
        # connect + TLS + EHLO + MAIL/RCPT + DATA + QUIT, each bounded by the socket timeout
        return self.settings.timeout * 3

    # -- building ---------------------------------------------------------------------------
    def _sender(self, envelope: Envelope) -> str:
        creds = envelope.credentials
        mailbox = creds.attributes.get("mailbox") if creds is not None else None
        sender = mailbox or self.settings.sender
        if not sender:
            raise PermanentError("no sender mailbox: set 'sender' or the ESSMS credentials' mailbox attribute")
        try:
            return _check_address(sender)
        except ValueError as exc:
            raise PermanentError("the sender mailbox is not an e-mail address") from exc

    def _allowed(self, address: str) -> bool:
        domain = address.rsplit("@", 1)[-1].lower()
        return not self.settings.allowed_domains or any(
            domain == d.lower() or domain.endswith("." + d.lower()) for d in self.settings.allowed_domains
        )

    def _recipients(self, envelope: Envelope, documents: Sequence[XdmDocument]) -> tuple[list[str], bool]:
        to_person = bool(envelope.options.get("to_person", self.settings.to_person))
        if to_person:
            meta = documents[0].rendition.metadata
            assert meta is not None
            if not envelope.facts.ins_qualified or meta.patient_id_system not in INS_OIDS or not meta.patient_id:
                raise PermanentError("the person's MSSanté box needs a qualified INS (identité qualifiée): not sent")
            for doc in documents:
                m = doc.rendition.metadata
                flags = {str(c) for c in (m.extra.get("confidentiality_codes") or ())} if m else set()
                if (m is not None and m.extra.get("invisible_patient")) or _INVISIBLE in flags:
                    raise PermanentError("a document invisible to the person is never sent to the person's box")
            if envelope.options.get("to"):
                raise PermanentError("the person's box and professionals are never addressed in the same message")
            return [f"{meta.patient_id}@{PATIENT_DOMAIN}"], True
        raw = (
            _as_list(envelope.options.get("to"))
            or list(self.settings.recipients_by_finess.get(envelope.facts.essms_finess, ()))
            or list(self.settings.recipients)
        )
        if not raw:
            raise PermanentError("no recipient: set options.to, recipients_by_finess or recipients")
        out: list[str] = []
        for value in raw:
            try:
                address = _check_address(value)
            except ValueError as exc:
                raise PermanentError("a recipient is not an e-mail address") from exc
            if address.lower().endswith("@" + PATIENT_DOMAIN):
                raise PermanentError("the person's box is addressed with to_person, not options.to")
            if not self._allowed(address):
                raise PermanentError("a recipient is outside the MSSanté domains this destination allows")
            if address.lower() not in (a.lower() for a in out):
                out.append(address)
        return out, False

    @staticmethod
    def _documents(envelope: Envelope) -> tuple[list[XdmDocument], list[tuple[str, bytes]]]:
        documents: list[XdmDocument] = []
        pdfs: list[tuple[str, bytes]] = []
        loose_pdfs: list[Rendition] = []
        for rendition in envelope.renditions:
            if rendition.media_type == "application/pdf":
                loose_pdfs.append(rendition)
                continue
            if rendition.metadata is None or "xml" not in rendition.media_type:
                continue
            try:
                header: CdaHeader = read_cda(rendition.content)
            except CdaUnreadable:
                continue  # FHIR or other renditions do not travel by MSSanté
            n = len(documents) + 1
            held = envelope.held.get(rendition.set_id)
            replaces = entry_uuid(held.document_id) if rendition.replaces and held is not None else None
            documents.append(XdmDocument(rendition, header, f"DOC{n:04d}.XML", replaces_entry=replaces))
            if header.pdf is not None:
                pdfs.append((f"DOC{n:04d}.PDF", header.pdf))
        if not documents:
            raise PermanentError("the delivery holds no CDA document to send by MSSanté")
        for n, pdf in enumerate(loose_pdfs, start=len(pdfs) + 1):
            pdfs.append((f"DOC{n:04d}.PDF", pdf.content))
        people = {
            (d.rendition.metadata.patient_id, d.rendition.metadata.patient_id_system)
            for d in documents
            if d.rendition.metadata
        }
        if len(people) != 1:
            raise PermanentError("an MSSanté message carries the documents of one person only")
        return documents, pdfs

    def build(self, envelope: Envelope, *, now: datetime | None = None) -> tuple[bytes, str, list[str], str]:
        """The message bytes, its Message-ID, its recipients and its sender (no I/O)."""
        sender = self._sender(envelope)
        documents, pdfs = self._documents(envelope)
        recipients, to_person = self._recipients(envelope, documents)
        domain = self.settings.message_id_domain or sender.rsplit("@", 1)[1]
        mid = message_id(envelope.idempotency_key, domain)
        metas = [d.rendition.metadata for d in documents if d.rendition.metadata is not None]
        submission_time = max(m.creation_time for m in metas)
        first = metas[0]
        replaced = [
            envelope.held[d.rendition.set_id]
            for d in documents
            if d.replaces_entry is not None and d.rendition.set_id in envelope.held
        ]
        replaces_mid = next(
            (normalise_message_id(h.remote_id) for h in replaced if h.remote_id and "@" in h.remote_id), None
        )
        sender_name = self.settings.sender_name or first.author_institution_name or "L'établissement"
        xdm_zip = build_xdm(
            documents,
            idempotency_key=envelope.idempotency_key,
            submission_time=submission_time,
            source_oid=self.settings.source_oid,
            recipients=recipients,
            application=self.settings.application_name,
            version=self.version,
            vendor=self.settings.vendor,
            contact=self.settings.contact or sender,
        )
        codes = list(dict.fromkeys(d.header.code for d in documents if d.header.code))
        msg = build_message(
            MessageParts(
                sender=sender,
                recipients=recipients,
                message_id=mid,
                headers=[d.header for d in documents],
                code_cda=codes,
                ins_qualified=envelope.facts.ins_qualified and first.patient_id_system in INS_OIDS,
                xdm_zip=xdm_zip,
                pdfs=pdfs,
                to_person=to_person,
                date=now or datetime.now(UTC),
                sender_name=sender_name,
                nil=self.settings.nil,
                no_reply=self.settings.person_no_reply,
                mdn_to=sender if self.settings.request_mdn else None,
                replaces_message_id=replaces_mid if replaced else None,
            )
        )
        data = msg.as_bytes(policy=_WIRE)
        if len(data) > self.settings.max_message_bytes:
            raise PermanentError(f"the message ({len(data)} bytes) exceeds max_message_bytes")
        return data, mid, recipients, sender

    # -- transport --------------------------------------------------------------------------
    def _context(self, envelope: Envelope | None) -> ssl.SSLContext:
        creds = envelope.credentials if envelope is not None else None
        has_pem = creds is not None and creds.certificate_pem and creds.private_key_pem
        if (
            envelope is not None
            and self.settings.require_client_certificate
            and not (has_pem or self.settings.client_certificate_file)
        ):
            raise PermanentError("no ESSMS client certificate for MSSanté (credentials purpose 'mssante')")
        return client_context(
            ca_bundle=self.settings.ca_bundle,
            verify=self.settings.verify_tls,
            credentials=creds,
            certificate_file=self.settings.client_certificate_file,
            key_file=self.settings.client_key_file,
        )

    def _open(self, timeout: float, ctx: ssl.SSLContext) -> smtplib.SMTP:
        s = self.settings
        smtp: smtplib.SMTP
        if s.tls == "implicit":
            try:
                smtp = smtplib.SMTP_SSL(s.host, s.port, local_hostname=s.helo_name, timeout=timeout, context=ctx)
            except (smtplib.SMTPServerDisconnected, ConnectionResetError) as exc:
                raise TransientError(_CLOSED_AFTER_TLS) from exc
            _first_words_after_tls(smtp)
            return smtp
        smtp = smtplib.SMTP(s.host, s.port, local_hostname=s.helo_name, timeout=timeout)
        try:
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                raise PermanentError("the SMTP relay does not offer STARTTLS: refusing to send in clear")
            smtp.starttls(context=ctx)
            _first_words_after_tls(smtp)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _login(self, smtp: smtplib.SMTP, envelope: Envelope) -> None:
        creds = envelope.credentials
        if creds is not None and creds.username and creds.password and smtp.has_extn("auth"):
            smtp.login(creds.username, creds.password)

    def send(self, envelope: Envelope) -> Receipt:
        data, mid, recipients, sender = self.build(envelope)
        ctx = self._context(envelope)
        timeout = envelope.timeout(self.settings.timeout)
        with map_mail_errors("SMTP relay"):
            smtp = self._open(timeout, ctx)
            try:
                self._login(smtp, envelope)
                reply = self._transaction(smtp, envelope, data, mid, recipients, sender)
            finally:
                try:
                    smtp.quit()
                except (smtplib.SMTPException, OSError):
                    smtp.close()
        return Receipt(
            remote_id=mid,
            status="sent",
            ack_ref=mid,
            detail={
                "relay_reply": reply,
                "recipients": len(recipients),
                "mdn_requested": self.settings.request_mdn,
            },
        )

    def _transaction(
        self, smtp: smtplib.SMTP, envelope: Envelope, data: bytes, mid: str, recipients: list[str], sender: str
    ) -> str:
        dsn = smtp.has_extn("dsn") and self.settings.dsn_notify != "NEVER"
        mail_opts: list[str] = []
        rcpt_base: list[str] = []
        if dsn:
            mail_opts += [f"RET={self.settings.dsn_ret}", f"ENVID={_xtext(mid.strip('<>'))}"]
            rcpt_base.append(f"NOTIFY={self.settings.dsn_notify}")
        if smtp.has_extn("size"):
            mail_opts.append(f"SIZE={len(data)}")
        code, resp = smtp.mail(sender, mail_opts)
        if code != 250:
            smtp.rset()
            raise smtplib.SMTPSenderRefused(code, resp, "sender")
        refused: dict[str, tuple[int, bytes]] = {}
        for address in recipients:
            opts = [*rcpt_base, f"ORCPT=rfc822;{_xtext(address)}"] if dsn else []
            code, resp = smtp.rcpt(address, opts)
            if code not in (250, 251):
                refused[address] = (code, resp)
        if refused:
            smtp.rset()  # all or none: nobody gets a message some recipients could not
            raise smtplib.SMTPRecipientsRefused(refused)
        if envelope.seconds_left() <= 0:
            smtp.rset()
            raise TransientError("send deadline reached before DATA")
        code, resp = smtp.data(data)
        if code != 250:  # smtplib.data() returns the final reply without raising
            smtp.rset()
            raise smtplib.SMTPDataError(code, resp)
        return f"{code} {redact(resp)}"

    def health(self) -> Health:
        """EHLO (then STARTTLS when a client certificate file is configured) and NOOP on the relay."""
        s = self.settings
        timeout = min(s.timeout, 10.0)
        try:
            with map_mail_errors("SMTP relay"):
                ctx = self._context(None)
                if s.tls == "implicit":
                    smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                        s.host, s.port, local_hostname=s.helo_name, timeout=timeout, context=ctx
                    )
                    smtp.ehlo()
                else:
                    smtp = smtplib.SMTP(s.host, s.port, local_hostname=s.helo_name, timeout=timeout)
                    smtp.ehlo()
                    if not smtp.has_extn("starttls"):
                        smtp.close()
                        return Health(ok=False, detail="the relay does not offer STARTTLS")
                    if s.client_certificate_file:
                        smtp.starttls(context=ctx)
                        smtp.ehlo()
                try:
                    code, _ = smtp.noop()
                    features = sorted(k for k in ("starttls", "dsn", "size", "auth") if smtp.has_extn(k))
                finally:
                    try:
                        smtp.quit()
                    except (smtplib.SMTPException, OSError):
                        smtp.close()
        except (TransientError, PermanentError) as exc:
            return Health(ok=False, detail=str(exc))
        return Health(ok=code == 250, detail=f"NOOP {code}; extensions: {', '.join(features) or 'none'}")
