"""Fixtures for the MSSanté tests: a test PKI, real dovecot + SMTP relay on loopback, envelopes
built from the project's sample records through the real mappings."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.base import Envelope, InboundMessage, StoredInbound
from connectors.mssante import MssanteConnector, MssanteSettings
from connectors.mssante.imap import ImapReceiptSource, ImapSettings
from mappings import registry
from mappings.base import RenderContext
from tests.peers.mail import Dovecot, SmtpRelay, dovecot, dovecot_available, smtp_relay
from tests.peers.mail_pki import TestPki

RECORDS = Path(__file__).resolve().parents[2] / "resources" / "records"

SENDER = "ehpad-st-joseph@ehpad.mssante.fr"
URGENCES = "urgences@ch-test.mssante.fr"
DAC = "dac75@dac.mssante.fr"
USERS = {"essms": "essms-pw", "urgences": "urg-pw", "dac": "dac-pw", "patient": "pat-pw"}
MAILBOXES = {SENDER: "essms", URGENCES: "urgences", DAC: "dac"}


class MemorySink:
    """An InboundSink that keeps the first message per external_id (as the gateway's does)."""

    def __init__(self) -> None:
        self.messages: dict[str, InboundMessage] = {}
        self.calls: list[str] = []
        self.fail = False

    def store(self, message: InboundMessage) -> StoredInbound:
        self.calls.append(message.external_id)
        if self.fail:
            raise RuntimeError("database unavailable")
        duplicate = message.external_id in self.messages
        self.messages.setdefault(message.external_id, message)
        return StoredInbound(id=message.external_id, duplicate=duplicate)


def render(name: str, *, seed: int = 7, doc_type: str = "dlu") -> tuple[Any, Any]:
    doc = registry.get(doc_type)
    assert doc is not None
    data = json.loads((RECORDS / f"{name}.json").read_text(encoding="utf-8"))
    record = doc.record_model.model_validate(data)
    ctx = RenderContext(now=datetime(2025, 3, 1, 9, 30, tzinfo=UTC), submission_id=uuid.UUID(int=seed))
    return doc.facts(record), doc.render(record, ctx)


def make_envelope(
    name: str = "rich", *, to: Any = None, seed: int = 7, doc_type: str = "dlu", **options: Any
) -> Envelope:
    facts, renditions = render(name, seed=seed, doc_type=doc_type)
    opts = dict(options)
    if to is not None:
        opts["to"] = to
    return Envelope(
        delivery_id=str(uuid.uuid4()),
        submission_id=str(uuid.UUID(int=seed)),
        idempotency_key=f"delivery-{uuid.uuid4()}",
        tenant="t1",
        destination="mss-urgences",
        document_type=doc_type,
        renditions=tuple(renditions),
        facts=facts,
        options=opts,
        deadline=datetime.now(UTC) + timedelta(seconds=60),
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("mss-pki"))


@pytest.fixture
def imap(pki: TestPki) -> Iterator[Dovecot]:
    if not dovecot_available():
        pytest.skip("dovecot is not installed (scripts/install-test-deps.sh)")
    with dovecot(pki, USERS) as server:
        yield server


@pytest.fixture
def relay(pki: TestPki, imap: Dovecot) -> Iterator[SmtpRelay]:
    with smtp_relay(pki, imap, MAILBOXES) as server:
        yield server


def connector_for(relay: SmtpRelay, pki: TestPki, **overrides: Any) -> MssanteConnector:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": relay.port,
        "tls": "implicit" if relay.implicit_tls else "starttls",
        "ca_bundle": str(pki.ca_path),
        "sender": SENDER,
        "recipients": [URGENCES],
        "timeout": 10,
        "nil": "NIL-TEST-0001",
        "contact": "support@editeur.test",
    }
    settings.update(overrides)
    return MssanteConnector(MssanteSettings(**settings))


def with_credentials(envelope: Envelope, pki: TestPki, **kwargs: Any) -> Envelope:
    return replace(envelope, credentials=pki.credentials(**kwargs))


def source_for(imap: Dovecot, pki: TestPki, *, user: str = "essms", **overrides: Any) -> ImapReceiptSource:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": imap.imaps_port,
        "tls": "implicit",
        "ca_bundle": str(pki.ca_path),
        "essms_finess": "750000010",
        "username": user,
        "password": USERS[user],
        "client_certificate_file": str(pki.client.cert_path),
        "client_key_file": str(pki.client.key_path),
        "timeout": 10,
        "poll_seconds": 0.2,
    }
    settings.update(overrides)
    password = settings.get("password")
    if isinstance(password, str) and not password.startswith(("env:", "file:")):
        # the settings take references only: hand the test password over through the environment
        os.environ[f"TEST_IMAP_PASSWORD_{user}"] = password
        settings["password"] = f"env:TEST_IMAP_PASSWORD_{user}"
    return ImapReceiptSource(ImapSettings(**settings))
