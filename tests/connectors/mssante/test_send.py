"""The MSSanté connector against a real SMTP relay (client-certificate TLS) delivering into dovecot."""

from __future__ import annotations

import base64
import email
import hashlib
import io
import re
import zipfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
from lxml import etree

from connectors.base import Connector, Envelope, HeldVersion, PermanentError, Receipt, TransientError
from connectors.mssante import MssanteConnector, MssanteSettings
from connectors.mssante.cda import safe_parser
from connectors.mssante.message import message_id
from connectors.mssante.xdm import entry_uuid
from tests.connectors.contract import ConnectorContract
from tests.connectors.mssante.conftest import (
    DAC,
    SENDER,
    URGENCES,
    connector_for,
    make_envelope,
    with_credentials,
)
from tests.peers.mail import Dovecot, SmtpRelay, smtp_relay
from tests.peers.mail_pki import TestPki
from tests.peers.net import free_port

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
HL7 = "urn:hl7-org:v3"
NS = {"rim": RIM, "h": HL7}


def arrived(imap: Dovecot, user: str, envelope: Envelope) -> list[EmailMessage]:
    mid = message_id(envelope.idempotency_key, SENDER.rsplit("@", 1)[1])
    found = []
    for raw in imap.messages(user):
        msg = email.message_from_bytes(raw, policy=policy.default)
        if str(msg["Message-ID"]).strip() == mid:
            assert isinstance(msg, EmailMessage)
            found.append(msg)
    return found


def xdm_of(msg: EmailMessage) -> zipfile.ZipFile:
    [part] = [p for p in msg.iter_attachments() if p.get_filename() == "IHE_XDM.ZIP"]
    data = part.get_content()
    assert isinstance(data, bytes)
    return zipfile.ZipFile(io.BytesIO(data))


class TestMssanteContract(ConnectorContract):
    @pytest.fixture
    def peer(self, pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> tuple[SmtpRelay, Dovecot, TestPki]:
        return relay, imap, pki

    def connector(self, peer: tuple[SmtpRelay, Dovecot, TestPki]) -> Connector:
        relay, _, pki = peer
        # the contract's envelopes carry no credentials: the deployment-wide certificate files
        return connector_for(
            relay, pki, client_certificate_file=str(pki.client.cert_path), client_key_file=str(pki.client.key_path)
        )

    def down_connector(self) -> Connector:
        return MssanteConnector(
            MssanteSettings(
                host="127.0.0.1",
                port=free_port(),
                sender=SENDER,
                recipients=[URGENCES],
                timeout=2,
                require_client_certificate=False,
            )
        )

    def reject_next(self, peer: tuple[SmtpRelay, Dovecot, TestPki]) -> None:
        peer[0].reject_next()

    def fail_next(self, peer: tuple[SmtpRelay, Dovecot, TestPki]) -> None:
        peer[0].fail_next()

    def accepted_count(self, peer: tuple[SmtpRelay, Dovecot, TestPki], envelope: Envelope) -> int:
        return len(arrived(peer[1], "urgences", envelope))

    def envelope(self) -> Envelope:
        return make_envelope("rich")


def test_message_follows_the_referential(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    env = with_credentials(make_envelope("rich", to=[URGENCES, DAC]), pki)
    receipt = connector_for(relay, pki).send(env)

    assert isinstance(receipt, Receipt)
    assert receipt.status == "sent"
    assert receipt.ack_ref == receipt.remote_id == message_id(env.idempotency_key, "ehpad.mssante.fr")
    [accepted] = relay.accepted
    assert "EHPAD Saint-Joseph" in accepted.client_cert_subject, "the ESSMS certificate was presented"
    assert accepted.dsn_mail["ENVID"] == receipt.ack_ref.strip("<>")
    assert all(d["NOTIFY"] == "SUCCESS,FAILURE,DELAY" for d in accepted.dsn_rcpt)

    for user in ("urgences", "dac"):
        [msg] = arrived(imap, user, env)
        assert str(msg["Subject"]).startswith("XDM/1.0/DDM+Document de liaison d'urgence ")
        assert msg["X-MSS-INS"] == "O"
        assert msg["X-MSS-CODECDA"] == "74207-2"
        assert msg["X-MSS-NIL"] == "NIL-TEST-0001"
        assert msg["X-MSS-MES"] is None, "X-MSS-MES is for the person's box only"
        assert msg["Disposition-Notification-To"] == SENDER
        assert msg.get_content_type() == "multipart/mixed"
        body = msg.get_body(("plain",))
        assert body is not None and "messagerie sécurisée de santé" in body.get_content()

        zf = xdm_of(msg)
        names = zf.namelist()
        assert names[:3] == ["INDEX.HTM", "README.TXT", "IHE_XDM/SUBSET01/METADATA.XML"]
        cdas = [r for r in env.renditions if r.kind in ("cda", "fludt-cda")]
        assert len(names) == 3 + len(cdas)
        for n, rendition in enumerate(cdas, start=1):
            assert zf.read(f"IHE_XDM/SUBSET01/DOC{n:04d}.XML") == rendition.content, "byte for byte"
        index = zf.read("INDEX.HTM").decode()
        assert "IHE_XDM/SUBSET01/DOC0001.XML" in index and "README.TXT" in index


def test_metadata_matches_the_cda(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    env = with_credentials(make_envelope("rich"), pki)
    connector_for(relay, pki).send(env)
    [msg] = arrived(imap, "urgences", env)
    zf = xdm_of(msg)
    meta = etree.fromstring(zf.read("IHE_XDM/SUBSET01/METADATA.XML"), parser=safe_parser())
    entries = meta.findall(f".//{{{RIM}}}ExtrinsicObject")
    assert len(entries) == 2
    for entry in entries:
        slots = {s.get("name"): [v.text for v in s.iter(f"{{{RIM}}}Value")] for s in entry.findall(f"{{{RIM}}}Slot")}
        [uri] = slots["URI"]
        cda_bytes = zf.read(f"IHE_XDM/SUBSET01/{uri}")
        cda = etree.fromstring(cda_bytes, parser=safe_parser())
        assert slots["hash"] == [hashlib.sha1(cda_bytes).hexdigest()]
        assert slots["size"] == [str(len(cda_bytes))]
        ext_ids = {
            e.find(f"{{{RIM}}}Name/{{{RIM}}}LocalizedString").get("value"): e.get("value")
            for e in entry.findall(f"{{{RIM}}}ExternalIdentifier")
        }
        doc_id = cda.find("h:id", NS)
        expected_uid = doc_id.get("root") + (f"^{doc_id.get('extension')}" if doc_id.get("extension") else "")
        assert ext_ids["XDSDocumentEntry.uniqueId"] == expected_uid
        assert entry.get("id") == entry_uuid(expected_uid)
        ins = [
            i for i in cda.findall("h:recordTarget/h:patientRole/h:id", NS) if i.get("root") == "1.2.250.1.213.1.4.10"
        ]
        assert ins, "the sample carries a test INS"
        assert ext_ids["XDSDocumentEntry.patientId"] == f"{ins[0].get('extension')}^^^&1.2.250.1.213.1.4.10&ISO^NH"
        codes = {
            c.get("classificationScheme"): c.get("nodeRepresentation")
            for c in entry.findall(f"{{{RIM}}}Classification")
        }
        assert codes["urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"] == cda.find("h:code", NS).get("code")
        assert codes["urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"] == cda.find("h:confidentialityCode", NS).get(
            "code"
        )
        facility = cda.find(".//h:healthCareFacility/h:code", NS).get("code")
        assert codes["urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"] == facility
        title = entry.find(f"{{{RIM}}}Name/{{{RIM}}}LocalizedString").get("value")
        assert title == cda.find("h:title", NS).text
        assert slots["languageCode"] == [cda.find("h:languageCode", NS).get("code")]
        effective = cda.find("h:effectiveTime", NS).get("value")
        created = datetime.strptime(effective, "%Y%m%d%H%M%S%z").astimezone(UTC).strftime("%Y%m%d%H%M%S")
        assert slots["creationTime"] == [created]
    package = meta.find(f".//{{{RIM}}}RegistryPackage")
    assert package is not None
    recipients = [v.text for v in package.iter(f"{{{RIM}}}Value")]
    assert f"|^^Internet^{URGENCES}" in recipients
    members = meta.findall(f".//{{{RIM}}}Association")
    assert {a.get("targetObject") for a in members} == {e.get("id") for e in entries}


def test_resend_keeps_message_id_and_package(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    env = with_credentials(make_envelope("rich"), pki)
    conn = connector_for(relay, pki)
    first, second = conn.send(env), conn.send(env)
    assert first.ack_ref == second.ack_ref
    a, b = relay.accepted_with(first.ack_ref or "")
    zip_a = xdm_of(email.message_from_bytes(a.content, policy=policy.default))  # type: ignore[arg-type]
    zip_b = xdm_of(email.message_from_bytes(b.content, policy=policy.default))  # type: ignore[arg-type]
    assert [zip_a.read(n) for n in zip_a.namelist()] == [zip_b.read(n) for n in zip_b.namelist()]
    assert len(arrived(imap, "urgences", env)) == 1, "the mailbox recognised the resend"


def test_pdf_of_an_n1_document_travels_alongside(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    env = with_credentials(make_envelope("ppa-ehpad", doc_type="ppa"), pki)
    connector_for(relay, pki).send(env)
    [msg] = arrived(imap, "urgences", env)
    [cda] = [r for r in env.renditions if r.kind == "cda"]
    text = etree.fromstring(cda.content, parser=safe_parser()).find("h:component/h:nonXMLBody/h:text", NS)
    pdf = base64.b64decode("".join(text.text.split()))
    [part] = [p for p in msg.iter_attachments() if p.get_content_type() == "application/pdf"]
    assert part.get_content() == pdf
    assert xdm_of(msg).read("IHE_XDM/SUBSET01/DOC0001.XML") == cda.content
    assert len(xdm_of(msg).namelist()) == 4, "the FHIR rendition does not travel by MSSanté"


def test_person_box_only_with_a_qualified_ins(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    conn = connector_for(relay, pki, recipients=[])
    env = with_credentials(make_envelope("not_qualified", to_person=True), pki)
    with pytest.raises(PermanentError, match="qualified INS"):
        conn.send(env)
    assert relay.accepted == []

    env = with_credentials(make_envelope("rich", to_person=True), pki)
    receipt = conn.send(env)
    [accepted] = relay.accepted
    [rcpt] = accepted.rcpt_tos
    meta = env.renditions[0].metadata
    assert meta is not None
    assert rcpt == f"{meta.patient_id}@patient.mssante.fr"
    msg = email.message_from_bytes(accepted.content, policy=policy.default)
    assert msg["X-MSS-MES"] == "FIN"
    body = msg.get_body(("plain",))
    assert body is not None and "Mon espace santé" in body.get_content()
    assert receipt.status == "sent"
    assert meta.patient_id not in str(receipt.detail), "no INS in what operators see"


def test_person_and_professionals_never_share_a_message(pki: TestPki, relay: SmtpRelay) -> None:
    env = with_credentials(make_envelope("rich", to=[URGENCES], to_person=True), pki)
    with pytest.raises(PermanentError):
        connector_for(relay, pki).send(env)


def test_recipients_per_essms_and_domain_checks(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    env = with_credentials(make_envelope("rich"), pki)
    conn = connector_for(relay, pki, recipients=[], recipients_by_finess={env.facts.essms_finess: [DAC]})
    conn.send(env)
    assert len(arrived(imap, "dac", env)) == 1
    with pytest.raises(PermanentError, match="outside the MSSanté domains"):
        connector_for(relay, pki).send(with_credentials(make_envelope("rich", to="someone@gmail.com"), pki))


def test_4xx_then_success(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    env = with_credentials(make_envelope("rich"), pki)
    conn = connector_for(relay, pki)
    relay.fail_next(reply="452 4.3.1 Insufficient system storage")
    with pytest.raises(TransientError, match="452"):
        conn.send(env)
    assert arrived(imap, "urgences", env) == []
    conn.send(env)
    assert len(arrived(imap, "urgences", env)) == 1


def test_5xx_is_permanent_with_the_server_text(pki: TestPki, relay: SmtpRelay) -> None:
    relay.reject_next(reply="554 5.7.1 Message refused: missing X-MSS-NIL")
    with pytest.raises(PermanentError, match=re.escape("554 5.7.1 Message refused: missing X-MSS-NIL")) as info:
        connector_for(relay, pki).send(with_credentials(make_envelope("rich"), pki))
    assert info.value.__cause__ is not None


def test_refused_recipient_sends_to_nobody(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    relay.refuse_recipient(DAC)
    env = with_credentials(make_envelope("rich", to=[URGENCES, DAC]), pki)
    with pytest.raises(PermanentError, match="550"):
        connector_for(relay, pki).send(env)
    assert arrived(imap, "urgences", env) == [], "all recipients or none"


def test_refused_person_box_text_is_redacted(pki: TestPki, relay: SmtpRelay) -> None:
    env = with_credentials(make_envelope("rich", to_person=True), pki)
    meta = env.renditions[0].metadata
    assert meta is not None
    relay.refuse_recipient(
        f"{meta.patient_id}@patient.mssante.fr", f"550 5.1.1 <{meta.patient_id}@patient.mssante.fr> unknown"
    )
    with pytest.raises(PermanentError) as info:
        connector_for(relay, pki, recipients=[]).send(env)
    assert meta.patient_id not in str(info.value)
    assert "***@patient.mssante.fr" in str(info.value)


def test_relay_down_is_transient(pki: TestPki) -> None:
    conn = MssanteConnector(MssanteSettings(host="127.0.0.1", port=free_port(), sender=SENDER, recipients=[URGENCES]))
    with pytest.raises(TransientError, match="unreachable") as info:
        conn.send(with_credentials(make_envelope("rich"), pki))
    assert isinstance(info.value.__cause__, OSError)


def test_untrusted_relay_certificate_is_permanent(pki: TestPki, relay: SmtpRelay) -> None:
    conn = connector_for(relay, pki, ca_bundle=str(pki.other_ca_path))
    with pytest.raises(PermanentError, match="could not be verified"):
        conn.send(with_credentials(make_envelope("rich"), pki))
    assert relay.accepted == []


def test_client_certificate_refused_by_the_relay(pki: TestPki, relay: SmtpRelay) -> None:
    # TLS 1.3: the relay's refusal reaches the client as a bare disconnect after the handshake
    with pytest.raises((PermanentError, TransientError), match="client certificate") as info:
        connector_for(relay, pki).send(with_credentials(make_envelope("rich"), pki, rogue=True))
    assert relay.accepted == []
    assert info.value.__cause__ is not None


def test_missing_client_certificate_is_permanent(pki: TestPki, relay: SmtpRelay) -> None:
    with pytest.raises(PermanentError, match="client certificate"):
        connector_for(relay, pki).send(make_envelope("rich"))


def test_implicit_tls(pki: TestPki, imap: Dovecot) -> None:
    with smtp_relay(pki, imap, {SENDER: "essms", URGENCES: "urgences"}, implicit_tls=True) as relay:
        env = with_credentials(make_envelope("rich"), pki)
        conn = connector_for(relay, pki)
        assert conn.send(env).status == "sent"
        assert len(arrived(imap, "urgences", env)) == 1
        files = connector_for(
            relay, pki, client_certificate_file=str(pki.client.cert_path), client_key_file=str(pki.client.key_path)
        )
        assert files.health().ok


def test_replacement_names_the_version_the_destination_holds(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    first = with_credentials(make_envelope("rich", seed=7), pki)
    conn = connector_for(relay, pki)
    receipt = conn.send(first)
    [dlu_v1] = [r for r in first.renditions if r.kind == "cda"]
    v2 = make_envelope("rich", seed=8)
    renditions = tuple(
        replace(r, set_id=dlu_v1.set_id, version=2, replaces=dlu_v1.document_id) if r.kind == "cda" else r
        for r in v2.renditions
    )
    held = {dlu_v1.set_id: HeldVersion("cda", dlu_v1.set_id, 1, dlu_v1.document_id, remote_id=receipt.remote_id)}
    second = with_credentials(replace(v2, renditions=renditions, held=held), pki)
    conn.send(second)
    [msg] = arrived(imap, "urgences", second)
    assert str(msg["Subject"]).startswith("Annule et remplace - XDM/1.0/DDM+")
    assert msg["In-Reply-To"] == receipt.remote_id
    meta = etree.fromstring(xdm_of(msg).read("IHE_XDM/SUBSET01/METADATA.XML"), parser=safe_parser())
    rplc = [a for a in meta.iter(f"{{{RIM}}}Association") if a.get("associationType").endswith(":RPLC")]
    assert [a.get("targetObject") for a in rplc] == [entry_uuid(dlu_v1.document_id)]


def test_deadline_passed_is_transient(pki: TestPki, relay: SmtpRelay) -> None:
    env = replace(with_credentials(make_envelope("rich"), pki), deadline=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(TransientError):
        connector_for(relay, pki).send(env)


def test_settings_validate_addresses() -> None:
    with pytest.raises(ValueError):
        MssanteSettings(host="relay", recipients=["not an address"])
    settings: Any = MssanteSettings(host="relay")
    assert settings.verify_tls is True and settings.tls == "starttls"


def test_accented_names_survive_the_wire(pki: TestPki, imap: Dovecot, relay: SmtpRelay) -> None:
    env = with_credentials(make_envelope("accented_names"), pki)
    connector_for(relay, pki).send(env)
    [accepted] = relay.accepted
    assert accepted.content.isascii(), "7-bit clean: encoded words, quoted-printable and base64"
    [msg] = arrived(imap, "urgences", env)
    [cda] = [r for r in env.renditions if r.kind == "cda"]
    family = etree.fromstring(cda.content, parser=safe_parser()).find(
        "h:recordTarget/h:patientRole/h:patient/h:name/h:family", NS
    )
    assert family is not None and family.text
    assert family.text.upper() in str(msg["Subject"])
    assert not str(msg["Subject"]).startswith(" ")
