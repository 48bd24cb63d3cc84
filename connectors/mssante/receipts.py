"""What a mail read from the ESSMS's MSSanté box means (pure: no I/O, never raises).

- **DSN** (RFC 3464, ``multipart/report; report-type=delivery-status``): an
  :class:`Acknowledgement` ``kind="dsn"`` for the original Message-ID (from the returned
  headers, else ``Original-Envelope-Id`` — the connector sets ENVID to the Message-ID — else
  ``In-Reply-To``/``References``). Outcome: ``failed`` when any recipient's ``Action`` is
  ``failed`` (reason: its ``Status`` and ``Diagnostic-Code``); ``delivered`` when every
  recipient's action is ``delivered``; otherwise (``delayed``, ``relayed``, ``expanded``) ``info``.
- **MDN** (RFC 8098, ``report-type=disposition-notification``): ``kind="mdn"`` for
  ``Original-Message-ID`` (else ``In-Reply-To``/``References``, else the returned original).
  ``processed``, ``displayed`` and ``dispatched`` mean the recipient's system took the message
  in → ``delivered``. Any ``error`` modifier (CI-SIS ``processed/Error: <code>^<libellé>``:
  integration refused) → ``failed`` with that text. ``deleted`` (discarded unread) and the
  RFC 3798 ``denied``/``failed`` types → ``failed``: the ESSMS must know its document was not
  taken in. An unknown disposition → ``info``.
- **CI-SIS "KO" mail** (an ordinary mail whose subject starts ``[KO Intégration système``,
  sent when no MDN was requested) answering one of our messages → ``kind="ko-mail"``, ``failed``.
- **Anything else** (a DAC answering with a document): one :class:`InboundEvent`
  ``mssante.message`` for the DUI vendor (who is entitled to the content), bounded: header
  facts, the text body, each attachment with its size, SHA-256 and base64 content while the
  total stays under a limit, and the listing of an ``IHE_XDM.ZIP`` checked against zip bombs.

Hostile input (too large, broken MIME, unknown charsets, too many parts, zip bombs) gives an
:class:`Interpretation` with a ``note``; no exception leaves :func:`interpret_mail`. Notes and
acknowledgement details hold no personal data (the person's mailbox is masked).
"""

from __future__ import annotations

import base64
import email
import hashlib
import io
import zipfile
from collections.abc import Iterator
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from typing import Any, Literal

from connectors.base import Acknowledgement, InboundEvent, Interpretation
from connectors.mssante._errors import redact
from connectors.mssante.message import normalise_message_id

__all__ = ["Limits", "classify", "interpret_mail", "original_message_id"]

EVENT_TYPE = "mssante.message"


class Limits:
    """Bounds applied to inbound mail (bytes unless said otherwise)."""

    max_message = 25 * 1024 * 1024
    max_parts = 200
    max_depth = 8
    max_text = 64 * 1024
    max_inline_content = 10 * 1024 * 1024  # attachment bytes carried in an event, in total
    max_zip_entries = 500
    max_zip_uncompressed = 100 * 1024 * 1024
    max_zip_ratio = 200


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # a malformed header the policy cannot parse
        return ""
    if value is None:
        return ""
    text = str(value)
    if "=?" in text:  # RFC 2047 encoded words
        try:
            text = str(make_header(decode_header(text)))
        except Exception:  # invalid charset or encoding: keep the raw text
            text = str(value)
    return " ".join(text.split())


def _ids(value: str) -> list[str]:
    out: list[str] = []
    for token in value.replace(",", " ").split():
        ref = normalise_message_id(token)
        if "@" in ref:
            out.append(ref)
    return out


def _report_type(msg: Message) -> str:
    if msg.get_content_type() != "multipart/report":
        return ""
    return str(msg.get_param("report-type", "") or "").lower()


def classify(raw_headers: bytes) -> Literal["dsn", "mdn", "message"]:
    """Cheap classification from the header block (for the stored message's clear headers)."""
    try:
        msg = BytesHeaderParser(policy=policy.compat32).parsebytes(raw_headers)
        report = _report_type(msg)
    except Exception:
        return "message"
    return "dsn" if report == "delivery-status" else "mdn" if report == "disposition-notification" else "message"


def _walk(msg: Message, depth: int = 0) -> Iterator[tuple[Message, int]]:
    yield msg, depth
    if depth >= Limits.max_depth:
        return
    if msg.is_multipart():
        payload = msg.get_payload()
        if isinstance(payload, list):
            for part in payload:
                if isinstance(part, Message):
                    yield from _walk(part, depth + 1)


def _field_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/disposition-notification part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    if isinstance(payload, str):
        text = payload
        if "\n\n" in text.strip():
            return [HeaderParser(policy=policy.compat32).parsestr(b) for b in text.strip().split("\n\n") if b.strip()]
        return [HeaderParser(policy=policy.compat32).parsestr(text)]
    return []


def _returned_headers(report: Message) -> Message | None:
    """The original message's headers returned in the third part of a report."""
    payload = report.get_payload()
    if not isinstance(payload, list):
        return None
    for part in payload[1:]:
        if not isinstance(part, Message):
            continue
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
        if ctype == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
    return None


def original_message_id(report: Message) -> str:
    returned = _returned_headers(report)
    if returned is not None:
        ref = normalise_message_id(_header(returned, "Message-ID"))
        if "@" in ref:
            return ref
    return ""


def _xtext_decode(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "+" and i + 2 < len(value) and all(c in "0123456789ABCDEFabcdef" for c in value[i + 1 : i + 3]):
            out.append(chr(int(value[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _fallback_ref(msg: Message) -> str:
    for name in ("In-Reply-To", "References"):
        ids = _ids(_header(msg, name))
        if ids:
            return ids[0] if name == "In-Reply-To" else ids[-1]
    return ""


def _dsn(msg: Message, part: Message) -> Interpretation:
    blocks = _field_blocks(part)
    if not blocks:
        return Interpretation(note="delivery status report without status fields: ignored")
    per_message, per_recipient = blocks[0], blocks[1:]
    if not per_recipient and _header(per_message, "Action"):
        per_message, per_recipient = Message(), blocks
    ref = original_message_id(msg)
    if not ref:
        envid = _header(per_message, "Original-Envelope-Id")
        ref = normalise_message_id(_xtext_decode(envid)) if envid else ""
    if "@" not in ref:
        ref = _fallback_ref(msg)
    if not ref:
        return Interpretation(note="delivery status report that names no original message: ignored")
    recipients: list[dict[str, str]] = []
    for block in per_recipient:
        recipients.append(
            {
                "action": _header(block, "Action").lower(),
                "status": _header(block, "Status"),
                "recipient": redact(_header(block, "Final-Recipient")),
                "diagnostic": redact(_header(block, "Diagnostic-Code")),
            }
        )
    actions = [r["action"] for r in recipients]
    outcome: Literal["delivered", "failed", "info"]
    failed = [r for r in recipients if r["action"] == "failed"]
    if failed:
        outcome = "failed"
        reason = "; ".join(f"{r['status'] or 'no status'} {r['diagnostic']}".strip() for r in failed)
    elif actions and all(a == "delivered" for a in actions):
        outcome, reason = "delivered", "delivered to the recipient's mailbox"
    else:
        outcome, reason = "info", ", ".join(sorted(set(actions))) or "no action"
    detail: dict[str, Any] = {
        "reporting_mta": redact(_header(per_message, "Reporting-MTA")),
        "recipients": recipients,
        "dsn_message_id": normalise_message_id(_header(msg, "Message-ID")),
    }
    return Interpretation(
        acknowledgements=(
            Acknowledgement(
                ack_ref=ref,
                outcome=outcome,
                kind="dsn",
                remote_id=detail["dsn_message_id"] or None,
                reason=redact(reason),
                detail=detail,
            ),
        )
    )


def _disposition(value: str) -> tuple[str, str, list[str]]:
    """(action mode, disposition type, modifiers) of an RFC 8098 ``Disposition`` field."""
    mode, _, rest = value.partition(";")
    kind, _, modifiers = rest.strip().partition("/")
    mods = [m.strip() for m in modifiers.split(",") if m.strip()] if modifiers else []
    return mode.strip().lower(), kind.strip().lower(), mods


def _mdn(msg: Message, part: Message) -> Interpretation:
    blocks = _field_blocks(part)
    fields = blocks[0] if blocks else Message()
    disposition = _header(fields, "Disposition")
    if not disposition:
        return Interpretation(note="disposition notification without a Disposition field: ignored")
    ref = normalise_message_id(_header(fields, "Original-Message-ID"))
    if "@" not in ref:
        ref = _fallback_ref(msg) or original_message_id(msg)
    if not ref:
        return Interpretation(note="disposition notification that names no original message: ignored")
    mode, kind, mods = _disposition(disposition)
    errors = [m for m in mods if m.lower().startswith("error")]
    error_field = _header(fields, "Error")
    outcome: Literal["delivered", "failed", "info"]
    if errors or error_field:
        outcome = "failed"
        texts = [m.split(":", 1)[1].strip() if ":" in m else m for m in errors]
        reason = f"{kind or 'disposition'}/error: " + "; ".join(t for t in [*texts, error_field] if t)
    elif kind in ("deleted", "denied", "failed"):
        outcome, reason = "failed", f"disposition {kind}: the recipient did not take the message in"
    elif kind in ("processed", "displayed", "dispatched"):
        outcome, reason = "delivered", f"disposition {kind}"
    else:
        outcome, reason = "info", f"disposition {kind or 'unknown'}"
    detail = {
        "disposition": redact(disposition),
        "action_mode": mode,
        "final_recipient": redact(_header(fields, "Final-Recipient")),
        "mdn_message_id": normalise_message_id(_header(msg, "Message-ID")),
    }
    return Interpretation(
        acknowledgements=(
            Acknowledgement(
                ack_ref=ref,
                outcome=outcome,
                kind="mdn",
                remote_id=detail["mdn_message_id"] or None,
                reason=redact(reason),
                detail=detail,
            ),
        )
    )


def _text(part: Message) -> str:
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = raw.decode(charset, "replace")
    except LookupError:  # an invalid or unknown charset
        text = raw.decode("latin-1")
    return text[: Limits.max_text]


def _zip_listing(data: bytes) -> dict[str, Any]:
    """Entries of a ZIP, refused when it looks like a bomb (sizes are read, nothing inflated)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError):
        return {"error": "not a readable ZIP"}
    if len(infos) > Limits.max_zip_entries:
        return {"error": f"too many entries ({len(infos)})"}
    total = sum(i.file_size for i in infos)
    compressed = max(1, sum(i.compress_size for i in infos))
    if total > Limits.max_zip_uncompressed or total / compressed > Limits.max_zip_ratio:
        return {"error": "refused: declared uncompressed size too large for a document package (zip bomb?)"}
    return {"entries": [{"name": i.filename[:255], "size": i.file_size} for i in infos[: Limits.max_zip_entries]]}


def _event(msg: Message, essms_finess: str, size: int) -> Interpretation:
    parts = 0
    body = ""
    attachments: list[dict[str, Any]] = []
    inline_budget = Limits.max_inline_content
    notes: list[str] = []
    for part, _depth in _walk(msg):
        parts += 1
        if parts > Limits.max_parts:
            notes.append(f"more than {Limits.max_parts} MIME parts: the rest is not listed")
            break
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        filename = part.get_filename()
        disposition = part.get_content_disposition()
        if ctype == "text/plain" and not filename and disposition != "attachment" and not body:
            body = _text(part)
            continue
        if ctype.startswith("multipart/") or ctype == "message/rfc822":
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        item: dict[str, Any] = {
            "filename": (filename or "")[:255],
            "media_type": ctype,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if ctype in ("application/zip", "application/x-zip-compressed") or (filename or "").upper().endswith(".ZIP"):
            item["zip"] = _zip_listing(data)
        if "error" not in item.get("zip", {}) and len(data) <= inline_budget:
            item["content_base64"] = base64.b64encode(data).decode("ascii")
            inline_budget -= len(data)
        else:
            item["content_omitted"] = True
        attachments.append(item)
    if msg.defects:
        notes.append(f"{len(msg.defects)} MIME defect(s)")
    payload: dict[str, Any] = {
        "message_id": normalise_message_id(_header(msg, "Message-ID")),
        "in_reply_to": _ids(_header(msg, "In-Reply-To")),
        "references": _ids(_header(msg, "References"))[:50],
        "date": _header(msg, "Date"),
        "from": _header(msg, "From")[:512],
        "to": _header(msg, "To")[:2048],
        "cc": _header(msg, "Cc")[:2048],
        "subject": _header(msg, "Subject")[:1024],
        "auto_submitted": _header(msg, "Auto-Submitted").lower() not in ("", "no"),
        "mss": {h: _header(msg, h) for h in ("X-MSS-CODECDA", "X-MSS-INS", "X-MSS-MES") if _header(msg, h)},
        "size": size,
        "body_text": body,
        "attachments": attachments,
        "notes": notes,
    }
    series = payload["message_id"] or None
    return Interpretation(
        events=(InboundEvent(event_type=EVENT_TYPE, payload=payload, essms_finess=essms_finess, series=series),),
        note="; ".join(notes),
    )


def _ko_mail(msg: Message) -> Interpretation | None:
    subject = _header(msg, "Subject")
    if not subject.startswith("[KO Int"):
        return None
    ref = _fallback_ref(msg)
    if not ref:
        return None
    code = subject.split("]", 2)[1].lstrip("[") if subject.count("]") >= 2 else ""
    return Interpretation(
        acknowledgements=(
            Acknowledgement(
                ack_ref=ref,
                outcome="failed",
                kind="ko-mail",
                remote_id=normalise_message_id(_header(msg, "Message-ID")) or None,
                reason=redact(f"integration refused by the recipient's system (code {code or 'unknown'})"),
            ),
        )
    )


def interpret_mail(content: bytes, *, essms_finess: str) -> Interpretation:
    """What ``content`` (one RFC 5322 message, as received) means; never raises."""
    if len(content) > Limits.max_message:
        return Interpretation(note=f"message too large to interpret ({len(content)} bytes): kept, not interpreted")
    try:
        msg = email.message_from_bytes(content, policy=policy.compat32)
        report = _report_type(msg)
        if report in ("delivery-status", "disposition-notification"):
            wanted = "message/delivery-status" if report == "delivery-status" else "message/disposition-notification"
            payload = msg.get_payload()
            part = (
                next(
                    (p for p in payload if isinstance(p, Message) and p.get_content_type() == wanted),
                    None,
                )
                if isinstance(payload, list)
                else None
            )
            if part is None:
                return Interpretation(note=f"{report} report without its {wanted} part: ignored")
            return _dsn(msg, part) if report == "delivery-status" else _mdn(msg, part)
        ko = _ko_mail(msg)
        if ko is not None:
            return ko
        return _event(msg, essms_finess, len(content))
    except RecursionError:
        return Interpretation(note="message nested too deeply: not interpreted")
    except Exception as exc:  # hostile input must never break the worker
        return Interpretation(note=f"message could not be interpreted ({type(exc).__name__})")
