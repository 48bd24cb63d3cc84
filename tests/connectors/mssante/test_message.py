"""Building blocks without servers: the hardened CDA reader and what refuses to become a message."""

from __future__ import annotations

from dataclasses import replace

import pytest

from connectors.base import PermanentError
from connectors.mssante import MssanteConnector, MssanteSettings
from connectors.mssante.cda import CdaUnreadable, read_cda
from tests.connectors.contract import make_envelope as contract_envelope
from tests.connectors.mssante.conftest import SENDER, URGENCES, make_envelope


def _connector(**kwargs: object) -> MssanteConnector:
    settings: dict[str, object] = {"host": "relay.invalid", "sender": SENDER, "recipients": [URGENCES], **kwargs}
    return MssanteConnector(MssanteSettings.model_validate(settings))


def test_entities_and_external_references_are_not_expanded(tmp_path: object) -> None:
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">'
        b'<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><id root="1.2.3"/><title>&x;&b;</title></ClinicalDocument>'
    )
    header = read_cda(xxe)
    assert "root:" not in header.title and "aaaaaaaaaa" not in header.title
    with pytest.raises(CdaUnreadable):
        read_cda(b"<not-a-cda/>")
    with pytest.raises(CdaUnreadable):
        read_cda(b"\x00garbage")


def test_build_is_pure_and_stable() -> None:
    env = make_envelope("rich")
    conn = _connector()
    data1, mid1, rcpts, sender = conn.build(env)
    data2, mid2, _, _ = conn.build(env)
    assert mid1 == mid2 and rcpts == [URGENCES] and sender == SENDER
    assert mid1.encode() in data1 and mid2.encode() in data2


def test_no_cda_no_message() -> None:
    with pytest.raises(PermanentError, match="no CDA"):
        _connector().build(contract_envelope())


def test_one_person_per_message() -> None:
    a, b = make_envelope("rich"), make_envelope("accented_names", seed=9)
    mixed = replace(a, renditions=(a.renditions[0], b.renditions[0]))
    with pytest.raises(PermanentError, match="one person"):
        _connector().build(mixed)


def test_invisible_to_the_person_is_never_sent_to_the_person() -> None:
    env = make_envelope("rich", to_person=True)
    first = env.renditions[0]
    assert first.metadata is not None
    hidden = replace(first, metadata=replace(first.metadata, extra={**first.metadata.extra, "invisible_patient": True}))
    with pytest.raises(PermanentError, match="invisible"):
        _connector(recipients=[]).build(replace(env, renditions=(hidden,)))


def test_no_sender_no_message() -> None:
    conn = MssanteConnector(MssanteSettings(host="relay.invalid", recipients=[URGENCES]))
    with pytest.raises(PermanentError, match="sender"):
        conn.build(make_envelope("rich"))
