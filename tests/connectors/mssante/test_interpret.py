"""``interpret_mail`` on its own: receipts in their various shapes, and hostile input (never raises)."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import Interpretation
from connectors.mssante.receipts import Limits, interpret_mail

FINESS = "750000010"
MID = "<abc.dui-gateway@ehpad.mssante.fr>"


def _dsn(fields: str, *, third: str = "", extra_headers: str = "") -> bytes:
    return (
        "From: MAILER-DAEMON@relay.test\r\nTo: essms@ehpad.mssante.fr\r\nSubject: DSN\r\n"
        "Message-ID: <dsn1@relay.test>\r\n"
        f"{extra_headers}"
        'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nreport\r\n"
        f"--B\r\nContent-Type: message/delivery-status\r\n\r\n{fields}\r\n"
        f"{third}"
        "--B--\r\n"
    ).encode()


def test_failed_dsn_uses_envid_when_headers_are_not_returned() -> None:
    fields = (
        "Reporting-MTA: dns; relay.test\r\nOriginal-Envelope-Id: abc.dui-gateway@ehpad.mssante.fr\r\n\r\n"
        "Final-Recipient: rfc822; 279035121518989@patient.mssante.fr\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <279035121518989@patient.mssante.fr> unknown\r\n"
    )
    [ack] = interpret_mail(_dsn(fields), essms_finess=FINESS).acknowledgements
    assert (ack.ack_ref, ack.outcome, ack.kind) == (MID, "failed", "dsn")
    assert "5.1.1" in (ack.reason or "")
    assert "279035121518989" not in repr(ack), "the INS never reaches the audit"


def test_delayed_dsn_is_information_only() -> None:
    fields = (
        "Reporting-MTA: dns; r\r\n\r\nFinal-Recipient: rfc822; a@b.mssante.fr\r\nAction: delayed\r\nStatus: 4.4.1\r\n"
    )
    third = f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {MID}\r\nSubject: x\r\n"
    [ack] = interpret_mail(_dsn(fields, third=third), essms_finess=FINESS).acknowledgements
    assert (ack.ack_ref, ack.outcome) == (MID, "info")


def test_mdn_deleted_fails_and_unknown_disposition_is_info() -> None:
    def mdn(disposition: str) -> bytes:
        return (
            "From: a@b.mssante.fr\r\nTo: essms@ehpad.mssante.fr\r\nMessage-ID: <m1@b>\r\n"
            f"In-Reply-To: {MID}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification; "
            'boundary="B"\r\n\r\n'
            "--B\r\nContent-Type: text/plain\r\n\r\nx\r\n"
            "--B\r\nContent-Type: message/disposition-notification\r\n\r\n"
            f"Final-Recipient: rfc822;a@b.mssante.fr\r\nDisposition: {disposition}\r\n\r\n--B--\r\n"
        ).encode()

    [deleted] = interpret_mail(mdn("manual-action/MDN-sent-manually; deleted"), essms_finess=FINESS).acknowledgements
    assert (deleted.ack_ref, deleted.outcome) == (MID, "failed"), "In-Reply-To when Original-Message-ID is missing"
    [odd] = interpret_mail(
        mdn("automatic-action/MDN-sent-automatically; teleported"), essms_finess=FINESS
    ).acknowledgements
    assert odd.outcome == "info"
    [processed] = interpret_mail(
        mdn("automatic-action/MDN-sent-automatically; processed"), essms_finess=FINESS
    ).acknowledgements
    assert processed.outcome == "delivered"


def test_ko_mail_without_mdn_request() -> None:
    msg = EmailMessage()
    msg["From"] = "lps@ch.mssante.fr"
    msg["To"] = "essms@ehpad.mssante.fr"
    msg["Subject"] = "[KO Intégration système !][902] XDM/1.0/DDM+DLU NOM Prénom 01/01/1930"
    msg["In-Reply-To"] = MID
    msg.set_content("Erreur")
    [ack] = interpret_mail(msg.as_bytes(), essms_finess=FINESS).acknowledgements
    assert (ack.kind, ack.outcome, ack.ack_ref) == ("ko-mail", "failed", MID)
    assert "902" in (ack.reason or "") and "NOM" not in (ack.reason or "")


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("IHE_XDM/SUBSET01/DOC0001.XML", b"\0" * (20 * 1024 * 1024))  # ~20 KiB compressed
    return buf.getvalue()


def test_zip_bomb_is_listed_not_inflated() -> None:
    msg = MIMEMultipart()
    msg["Message-ID"] = "<z@dac.mssante.fr>"
    msg.attach(MIMEText("voir pièce jointe", "plain", "utf-8"))
    part = MIMEBase("application", "zip")
    part.set_payload(_zip_bomb())
    from email import encoders

    encoders.encode_base64(part)
    part.add_header("Content-Disposition", "attachment", filename="IHE_XDM.ZIP")
    msg.attach(part)
    [event] = interpret_mail(msg.as_bytes(), essms_finess=FINESS).events
    [attachment] = event.payload["attachments"]
    assert "zip bomb" in attachment["zip"]["error"]
    assert attachment["content_omitted"] is True and "content_base64" not in attachment


def test_good_xdm_zip_is_listed_and_carried() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("INDEX.HTM", b"<html/>")
        zf.writestr("IHE_XDM/SUBSET01/DOC0001.XML", b"<ClinicalDocument/>")
    msg = EmailMessage()
    msg["Message-ID"] = "<ok@dac.mssante.fr>"
    msg.set_content("ci-joint")
    msg.add_attachment(buf.getvalue(), maintype="application", subtype="zip", filename="IHE_XDM.ZIP")
    [event] = interpret_mail(msg.as_bytes(), essms_finess=FINESS).events
    [attachment] = event.payload["attachments"]
    assert [e["name"] for e in attachment["zip"]["entries"]] == ["INDEX.HTM", "IHE_XDM/SUBSET01/DOC0001.XML"]
    assert "content_base64" in attachment


def test_hostile_inputs_give_notes_not_exceptions() -> None:
    huge = b"Subject: x\r\n\r\n" + b"a" * (Limits.max_message + 1)
    assert "too large" in interpret_mail(huge, essms_finess=FINESS).note

    bad_charset = (
        b"Message-ID: <c@x.mssante.fr>\r\nSubject: =?x-unknown-charset?q?caf=E9?=\r\n"
        b"Content-Type: text/plain; charset=x-unknown-charset\r\n\r\ncaf\xe9\r\n"
    )
    [event] = interpret_mail(bad_charset, essms_finess=FINESS).events
    assert event.payload["body_text"].startswith("caf")

    broken_boundary = (
        b'Content-Type: multipart/mixed; boundary="nope"\r\n\r\n--other\r\nContent-Type: text/plain\r\n\r\nx\r\n'
    )
    assert isinstance(interpret_mail(broken_boundary, essms_finess=FINESS), Interpretation)

    deep = b""
    for n in range(300):
        deep += f'Content-Type: multipart/mixed; boundary="b{n}"\r\n\r\n--b{n}\r\n'.encode()
    result = interpret_mail(deep, essms_finess=FINESS)
    assert isinstance(result, Interpretation)

    many = MIMEMultipart()
    for n in range(Limits.max_parts + 20):
        many.attach(MIMEText(f"part {n}"))
    assert "more than" in interpret_mail(many.as_bytes(), essms_finess=FINESS).note

    report_without_status = (
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--\r\n"
    )
    assert "without" in interpret_mail(report_without_status, essms_finess=FINESS).note

    dsn_naming_nothing = _dsn("Reporting-MTA: dns; r\r\n\r\nFinal-Recipient: rfc822; a@b\r\nAction: failed\r\n")
    result = interpret_mail(dsn_naming_nothing, essms_finess=FINESS)
    assert result.acknowledgements == () and "names no original" in result.note

    assert isinstance(interpret_mail(b"\x00\xff\xfe garbage \r\n\r\n\x00", essms_finess=FINESS), Interpretation)
    assert isinstance(interpret_mail(b"", essms_finess=FINESS), Interpretation)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise(data: bytes) -> None:
    assert isinstance(interpret_mail(data, essms_finess=FINESS), Interpretation)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=2000))
def test_random_reports_never_raise(fields: str) -> None:
    assert isinstance(interpret_mail(_dsn(fields), essms_finess=FINESS), Interpretation)
