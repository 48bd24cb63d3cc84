"""The MSSanté message of one delivery, built with the standard library's ``email`` package.

Réf#2 MSSanté clients de messagerie and CI-SIS "Échange de documents de santé":

- one person per message (ECO.2.1.1): every CDA of the envelope must name the same person;
- subject ``XDM/1.0/DDM+<libellé> <NOM> <prénom> <date de naissance>`` (ECO.2.1.3), prefixed by
  an "annule et remplace" mention when it replaces a version the destination holds;
- ``multipart/mixed``: a French ``text/plain`` body (professional or person wording), the
  ``IHE_XDM.ZIP`` and the readable PDF when the document has one;
- headers ``X-MSS-CODECDA`` (ECO.2.4.1), ``X-MSS-INS`` ``O``/``N`` (ECO.2.4.2), ``X-MSS-NIL``
  (ECO.2.4.3, when the product number is configured), ``X-MSS-MES: FIN`` to the person's box
  when no reply is wanted (ECO.2.2.8), ``Disposition-Notification-To`` when an MDN is wanted;
- ``Message-ID`` derived from the delivery's idempotency key: the same on every resend, and the
  ``ack_ref`` DSN/MDN carry back; ``In-Reply-To``/``References`` name the message that carried
  the replaced version (ECO.2.2.1/2.2.2) when the destination holds it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

from connectors.mssante.cda import CdaHeader

__all__ = ["MessageParts", "build_message", "message_id", "normalise_message_id", "subject"]

XDM_PREFIX = "XDM/1.0/DDM+"

BODY_PS = (
    "Bonjour,\n\n"
    "Veuillez trouver ci-joint {what} transmis par {sender_name} au moyen de la messagerie "
    "sécurisée de santé (MSSanté).\n\n"
    "Le fichier IHE_XDM.ZIP contient le document au format CDA et ses métadonnées (IHE XDM) ; "
    "il peut être intégré directement dans votre logiciel. {pdf}\n\n"
    "Ce message a été émis automatiquement par une boîte aux lettres applicative : "
    "merci de ne pas y répondre pour une demande urgente.\n\n"
    "Cordialement,\n{sender_name}\n"
)
BODY_PATIENT = (
    "Bonjour,\n\n"
    "{sender_name} vous transmet {what} par la messagerie sécurisée de votre profil "
    "Mon espace santé.\n\n"
    "{pdf}\n\n"
    "{reply}\n\n"
    "Cordialement,\n{sender_name}\n"
)


@dataclass(frozen=True)
class MessageParts:
    """Everything the message is made of (built by the connector from the envelope)."""

    sender: str
    recipients: Sequence[str]
    message_id: str
    headers: Sequence[CdaHeader]
    code_cda: Sequence[str]
    ins_qualified: bool
    xdm_zip: bytes
    pdfs: Sequence[tuple[str, bytes]]  # (file name, PDF bytes)
    to_person: bool
    date: datetime
    sender_name: str
    nil: str | None = None
    no_reply: bool = True
    mdn_to: str | None = None
    replaces_message_id: str | None = None


def normalise_message_id(value: str) -> str:
    """``<local@domain>`` with surrounding spaces and brackets normalised (the ack_ref form)."""
    core = value.strip().strip("<>").strip()
    return f"<{core}>" if core else ""


def message_id(idempotency_key: str, domain: str) -> str:
    """A Message-ID stable for a delivery (no personal data: a digest of the idempotency key)."""
    digest = hashlib.sha256(f"dui-gateway:mssante:{idempotency_key}".encode()).hexdigest()[:40]
    return f"<{digest}.dui-gateway@{domain}>"


def _birth(header: CdaHeader) -> str:
    return header.birth_date.strftime("%d/%m/%Y") if header.birth_date else ""


def subject(header: CdaHeader, *, replaces: bool) -> str:
    """``XDM/1.0/DDM+<libellé> <NOM> <prénom> <date de naissance>`` (ECO.2.1.3)."""
    label = header.title or header.code_display or "Document"
    who = " ".join(p for p in (header.birth_family.upper(), header.first_given, _birth(header)) if p)
    line = f"{XDM_PREFIX}{label} {who}".strip()
    return f"Annule et remplace - {line}" if replaces else line


def _what(headers: Sequence[CdaHeader]) -> str:
    titles = [h.title or h.code_display or "un document" for h in headers]
    if len(titles) == 1:
        return f"le document « {titles[0]} »"
    return "les documents " + ", ".join(f"« {t} »" for t in titles)


def build_message(parts: MessageParts) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = parts.sender
    msg["To"] = ", ".join(parts.recipients)
    msg["Subject"] = subject(parts.headers[0], replaces=parts.replaces_message_id is not None)
    msg["Date"] = format_datetime(parts.date)
    msg["Message-ID"] = parts.message_id
    if parts.replaces_message_id:
        msg["In-Reply-To"] = parts.replaces_message_id
        msg["References"] = parts.replaces_message_id
    if parts.code_cda:
        msg["X-MSS-CODECDA"] = ",".join(parts.code_cda)
        msg["X-MSS-INS"] = "O" if parts.ins_qualified else "N"
    if parts.nil:
        msg["X-MSS-NIL"] = parts.nil
    if parts.to_person and parts.no_reply:
        msg["X-MSS-MES"] = "FIN"
    if parts.mdn_to:
        msg["Disposition-Notification-To"] = parts.mdn_to
    pdf_text = (
        "Une version lisible (PDF) est également jointe."
        if parts.pdfs
        else "Le document est lisible depuis l'index du fichier IHE_XDM.ZIP (INDEX.HTM)."
    )
    what = _what(parts.headers)
    if parts.to_person:
        reply = (
            "Ce message ne permet pas de répondre."
            if parts.no_reply
            else "Vous pouvez répondre à ce message depuis Mon espace santé."
        )
        body = BODY_PATIENT.format(what=what, sender_name=parts.sender_name, pdf=pdf_text, reply=reply)
    else:
        body = BODY_PS.format(what=what, sender_name=parts.sender_name, pdf=pdf_text)
    msg.set_content(body, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_attachment(
        parts.xdm_zip, maintype="application", subtype="zip", filename="IHE_XDM.ZIP", params={"name": "IHE_XDM.ZIP"}
    )
    for name, pdf in parts.pdfs:
        msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=name, params={"name": name})
    return msg
