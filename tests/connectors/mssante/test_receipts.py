"""Receipts through real dovecot: DSN/MDN produced by the relay and a recipient, read over IMAPS."""

from __future__ import annotations

import base64
import threading

import pytest

from connectors.base import Acknowledgement, InboundEvent, Source
from connectors.mssante.imap import ImapReceiptSource, ImapSettings
from connectors.mssante.message import message_id
from tests.connectors.mssante.conftest import (
    DAC,
    SENDER,
    URGENCES,
    MemorySink,
    connector_for,
    make_envelope,
    source_for,
    with_credentials,
)
from tests.peers.mail import Accepted, Dovecot, SmtpRelay, make_dsn, make_mdn, plain_mail, smtp_relay
from tests.peers.mail_pki import TestPki
from tests.peers.net import free_port


def acks(source: ImapReceiptSource, sink: MemorySink) -> list[Acknowledgement]:
    out: list[Acknowledgement] = []
    for message in sink.messages.values():
        out.extend(source.interpret(message).acknowledgements)
    return out


def test_source_describes_itself(pki: TestPki, imap: Dovecot) -> None:
    source = source_for(imap, pki)
    assert isinstance(source, Source)
    assert source.name == "mssante-imap" and source.version
    assert source.health().ok


@pytest.mark.parametrize("ret", ["HDRS", "FULL"])
def test_positive_dsn_delivers(pki: TestPki, imap: Dovecot, relay: SmtpRelay, ret: str) -> None:
    receipt = connector_for(relay, pki, dsn_ret=ret).send(with_credentials(make_envelope("rich"), pki))
    source, sink = source_for(imap, pki), MemorySink()
    assert source.poll_once(sink) == 1
    [message] = sink.messages.values()
    assert message.media_type == "message/rfc822"
    assert message.headers["kind"] == "dsn"
    assert message.content == imap.messages("essms")[0], "the raw bytes as received"
    [ack] = acks(source, sink)
    assert ack.kind == "dsn" and ack.outcome == "delivered"
    assert ack.ack_ref == receipt.ack_ref


def test_failed_dsn_for_an_unknown_mailbox(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    env = with_credentials(make_envelope("rich", to_person=True), pki)  # the relay has no such box
    receipt = connector_for(relay, pki, recipients=[]).send(env)
    source, sink = source_for(imap, pki), MemorySink()
    source.poll_once(sink)
    [ack] = acks(source, sink)
    assert ack.outcome == "failed" and ack.kind == "dsn"
    assert ack.ack_ref == receipt.ack_ref
    assert ack.reason is not None and "5.1.1" in ack.reason
    meta = env.renditions[0].metadata
    assert meta is not None
    assert meta.patient_id not in repr(ack), "the person's box (INS) never reaches audit text"


def test_mdn_displayed(pki: TestPki, imap: Dovecot) -> None:
    with smtp_relay(pki, imap, {SENDER: "essms", URGENCES: "urgences"}, report=False) as relay:
        receipt = connector_for(relay, pki).send(with_credentials(make_envelope("rich"), pki))
        [original] = imap.messages("urgences")
        mdn, to = make_mdn(original, final_recipient=URGENCES)
        assert to == SENDER
        relay.submit(mdn, URGENCES, [to])
    source, sink = source_for(imap, pki), MemorySink()
    source.poll_once(sink)
    [message] = sink.messages.values()
    assert message.headers["kind"] == "mdn"
    [ack] = acks(source, sink)
    assert (ack.kind, ack.outcome, ack.ack_ref) == ("mdn", "delivered", receipt.ack_ref)
    assert ack.reason == "disposition displayed"


def test_mdn_integration_error_fails(pki: TestPki, imap: Dovecot) -> None:
    with smtp_relay(pki, imap, {SENDER: "essms", URGENCES: "urgences"}, report=False) as relay:
        receipt = connector_for(relay, pki).send(with_credentials(make_envelope("rich"), pki))
        [original] = imap.messages("urgences")
        mdn, to = make_mdn(
            original,
            final_recipient=URGENCES,
            disposition="automatic-action/MDN-sent-automatically; processed/Error: 902^Identifiant patient inconnu",
        )
        relay.submit(mdn, URGENCES, [to])
    source, sink = source_for(imap, pki), MemorySink()
    source.poll_once(sink)
    [ack] = acks(source, sink)
    assert (ack.kind, ack.outcome, ack.ack_ref) == ("mdn", "failed", receipt.ack_ref)
    assert ack.reason is not None and "902^Identifiant patient inconnu" in ack.reason


def test_receipt_never_arriving_gives_no_acknowledgement(pki: TestPki, imap: Dovecot) -> None:
    with smtp_relay(pki, imap, {SENDER: "essms", URGENCES: "urgences"}, report=False) as relay:
        receipt = connector_for(relay, pki, request_mdn=False).send(with_credentials(make_envelope("rich"), pki))
        assert receipt.status == "sent"
    source, sink = source_for(imap, pki), MemorySink()
    assert source.poll_once(sink) == 0
    assert acks(source, sink) == []


def test_duplicate_receipt_is_stored_once(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    connector_for(relay, pki).send(with_credentials(make_envelope("rich"), pki))
    [dsn] = imap.messages("essms")
    imap.deliver("essms", dsn)  # the same report arrives twice (same Message-ID)
    source, sink = source_for(imap, pki), MemorySink()
    assert source.poll_once(sink) == 2
    assert len(sink.calls) == 2 and len(set(sink.calls)) == 1
    assert len(sink.messages) == 1
    assert source.poll_once(sink) == 0, "both copies were flagged once stored"


def test_receipt_for_an_unknown_message(pki: TestPki, imap: Dovecot) -> None:
    never_sent = message_id("a-delivery-we-never-made", "ehpad.mssante.fr")
    original = plain_mail(sender=SENDER, to=URGENCES, subject="x", body="x").replace(
        b"Message-ID: <", b"Message-ID: <unused-", 1
    )
    stray = Accepted(
        mail_from=SENDER,
        rcpt_tos=[URGENCES],
        content=original.replace(original.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0], never_sent.encode()),
        message_id=never_sent,
        dsn_mail={"RET": "HDRS"},
        dsn_rcpt=[{"NOTIFY": "SUCCESS"}],
        client_cert_subject="",
    )
    imap.deliver("essms", make_dsn(stray, [(URGENCES, {}, "delivered", "2.0.0", "smtp; 250 ok")]))
    source, sink = source_for(imap, pki), MemorySink()
    source.poll_once(sink)
    [ack] = acks(source, sink)
    assert ack.ack_ref == never_sent and ack.outcome == "delivered"


def test_nothing_is_flagged_when_the_sink_fails(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    connector_for(relay, pki).send(with_credentials(make_envelope("rich"), pki))
    source, sink = source_for(imap, pki), MemorySink()
    sink.fail = True
    assert source.poll_once(sink) == 0
    assert len(sink.calls) == 1
    sink.fail = False
    assert source.poll_once(sink) == 1, "still in the box, unflagged, for the next poll"
    assert len(sink.messages) == 1


def test_processed_messages_move_to_their_folder(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    connector_for(relay, pki).send(with_credentials(make_envelope("rich"), pki))
    source, sink = source_for(imap, pki, processed_mailbox="Traites"), MemorySink()
    assert source.poll_once(sink) == 1
    assert imap.messages("essms") == []
    assert len(imap.messages("essms", "Traites")) == 1


def test_dac_answer_becomes_an_event(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    pdf = b"%PDF-1.4\n% a DAC's answer\n%%EOF\n"
    raw = plain_mail(
        sender=DAC,
        to=SENDER,
        subject="Réponse du DAC : plan d'accompagnement",
        body="Bonjour, voici notre plan.",
        attachments=[("plan.pdf", "application/pdf", pdf)],
    )
    relay.submit(raw, DAC, [SENDER])
    source, sink = source_for(imap, pki), MemorySink()
    source.poll_once(sink)
    [message] = sink.messages.values()
    interpretation = source.interpret(message)
    assert interpretation.acknowledgements == ()
    [event] = interpretation.events
    assert isinstance(event, InboundEvent)
    assert event.event_type == "mssante.message" and event.essms_finess == "750000010"
    assert event.payload["subject"] == "Réponse du DAC : plan d'accompagnement"
    assert event.payload["body_text"].startswith("Bonjour, voici notre plan.")
    [attachment] = event.payload["attachments"]
    assert base64.b64decode(attachment["content_base64"]) == pdf
    assert attachment["filename"] == "plan.pdf"


def test_run_polls_until_stopped(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    source, sink = source_for(imap, pki, poll_seconds=0.1), MemorySink()
    stop = threading.Event()
    worker = threading.Thread(target=source.run, args=(sink, stop))
    worker.start()
    try:
        connector_for(relay, pki).send(with_credentials(make_envelope("rich"), pki))
        for _ in range(100):
            if sink.messages:
                break
            stop.wait(0.1)
    finally:
        stop.set()
        worker.join(timeout=15)
    assert not worker.is_alive()
    assert len(sink.messages) == 1


def test_starttls_and_refusals(pki: TestPki, imap: Dovecot) -> None:
    assert source_for(imap, pki, tls="starttls", port=imap.imap_port).health().ok
    wrong = source_for(imap, pki, password="wrong")
    assert not wrong.health().ok
    no_cert = source_for(imap, pki, client_certificate_file=None, client_key_file=None)
    assert not no_cert.health().ok
    untrusted = source_for(imap, pki, ca_bundle=str(pki.other_ca_path))
    health = untrusted.health()
    assert not health.ok and "could not be verified" in health.detail


def test_run_survives_a_server_that_is_down(pki: TestPki) -> None:
    source = ImapReceiptSource(
        ImapSettings(
            host="127.0.0.1",
            port=free_port(),
            essms_finess="750000010",
            username="u",
            password="env:HOME",  # any reference: the server is down anyway
            poll_seconds=0.05,
            timeout=1,
        )
    )
    stop = threading.Event()
    worker = threading.Thread(target=source.run, args=(MemorySink(), stop))
    worker.start()
    stop.wait(0.3)
    stop.set()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert not source.health().ok
