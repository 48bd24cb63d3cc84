"""The ``mllp`` connector: the connector contract against a real MLLP peer on loopback, the MDM
it builds (initial, replacement), and the CI-SIS cda-in-mdm examples parsed, rebuilt, compared."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.base import Envelope, HeldVersion, PermanentError, TransientError
from connectors.hl7v2.connector import MllpConnector, MllpConnectorSettings, build_mdm, control_id
from connectors.hl7v2.mdm import parse_mdm
from connectors.hl7v2.message import parse
from connectors.sandbox.mllp import MllpPeer
from tests.connectors.contract import ConnectorContract, make_envelope
from tests.connectors.hl7v2.support import EXAMPLES
from tests.peers.net import free_port

MDM = EXAMPLES / "cda-in-mdm"


class TestMllp(ConnectorContract):
    @pytest.fixture
    def peer(self) -> Iterator[MllpPeer]:
        with MllpPeer() as peer:
            yield peer

    def connector(self, peer: MllpPeer) -> MllpConnector:
        host, port = peer.address
        return MllpConnector(MllpConnectorSettings(host=host, port=port, timeout=5))

    def down_connector(self) -> MllpConnector:
        return MllpConnector(MllpConnectorSettings(host="127.0.0.1", port=free_port(), timeout=2))

    def reject_next(self, peer: MllpPeer) -> None:
        peer.answer_next("AE")

    def fail_next(self, peer: MllpPeer) -> None:
        peer.answer_next("AR")

    def slow_next(self, peer: MllpPeer, seconds: float) -> None:
        peer.answer_next("AA", delay=seconds)

    def acknowledge_later(self, peer: MllpPeer) -> None:
        peer.answer_next("CA")

    def accepted_count(self, peer: MllpPeer, envelope: Envelope) -> int:
        return sum(
            1
            for received in list(peer.received.values())
            if base64.b64encode(envelope.renditions[0].content).decode() in received.content.decode()
        )


def _settings(**extra: Any) -> MllpConnectorSettings:
    return MllpConnectorSettings(host="127.0.0.1", port=1, sending_facility="750000010", **extra)


def test_first_version_is_an_initial_transmission_with_the_cda_in_base64() -> None:
    env = make_envelope()
    message = parse_mdm(build_mdm(env, _settings()).to_er7())
    assert message.trigger == "T02" and message.status == "F"
    assert message.document == env.renditions[0].content
    assert message.document_type[0] == "34133-9"
    assert message.control_id == control_id(env, env.renditions[0], "T02")
    assert dict(message.metadata)["DESTDMP"] is True
    parsed = parse(build_mdm(env, _settings()).to_er7().decode())
    assert parsed.get("MSH", 9) == "MDM" and parsed.get("MSH", 9, 3) == "MDM_T02"
    assert parsed.get("PID", 3) == "P-CONTRACT-1"  # no CDA recordTarget: the DUI's person reference


def test_a_later_version_replaces_what_this_destination_holds() -> None:
    first = make_envelope()
    rendition = first.renditions[0]
    later = dataclasses.replace(
        make_envelope(version=2, set_id=rendition.set_id),
        held={rendition.set_id: HeldVersion("note", rendition.set_id, 1, rendition.document_id)},
    )
    message = parse_mdm(build_mdm(later, _settings()).to_er7())
    assert (message.trigger, message.status) == ("T10", "C")
    assert message.parent_document_id == rendition.document_id.replace("^", ".") + "^750000010"
    deletion = dataclasses.replace(later, options={"mdm_event": "deletion"})
    assert parse_mdm(build_mdm(deletion, _settings()).to_er7()).status == "D"


def test_the_pid_comes_from_the_cda_record_target_ins_first() -> None:
    cda = (MDM / "Transmission-initiale-MDM__CR_Radio_CDAN1_v1.XML").read_bytes()
    env = make_envelope()
    env = dataclasses.replace(env, renditions=(dataclasses.replace(env.renditions[0], content=cda),))
    pid = parse(build_mdm(env, _settings()).to_er7().decode()).first("PID")
    assert pid is not None
    first_id = pid.raw(3).split("~")[0]
    assert "^INS" in first_id and "1.2.250.1.213.1.4." in first_id


@pytest.mark.parametrize(
    ("message", "trigger", "cda"),
    [
        ("Transmission-initiale-MDM__message_MDM_CR_Radio_INIT_N1_Base64.er7", "T02", "CR_Radio_CDAN1_v1"),
        ("Transmission-initiale-MDM__message_MDM_CR_Radio_INIT_N1.er7", "T02", None),
        ("Remplacement-MDM__message_MDM_CR_Radio_RPLC_N1.er7", "T10", None),
        ("Suppression-MDM__message_MDM_CR_Radio_DEL_N1.er7", "T04", None),
    ],
)
def test_cda_in_mdm_examples_round_trip(message: str, trigger: str, cda: str | None) -> None:
    raw = (MDM / message).read_bytes()
    parsed = parse_mdm(raw)
    assert parsed.trigger == trigger
    if cda is not None:  # the base64 example carries a CDA like the one of its folder (not byte-identical)
        head = (MDM / f"Transmission-initiale-MDM__{cda}.XML").read_bytes()[:3000]
        assert parsed.document.startswith(head)
    rebuilt = parsed.to_er7()
    assert parse_mdm(rebuilt) == parsed

    def segments(data: bytes) -> list[list[str]]:
        out = []
        for line in data.decode("utf-8").replace("\n", "\r").split("\r"):
            if line.strip():
                fields = line.rstrip().split("|")
                while fields and fields[-1] == "":
                    fields.pop()
                out.append(fields)
        return out

    assert segments(rebuilt) == segments(raw)


def test_answers_map_to_outcomes() -> None:
    with MllpPeer() as peer:
        conn = MllpConnector(MllpConnectorSettings(host=peer.address[0], port=peer.address[1], timeout=5))
        env = make_envelope()
        receipt = conn.send(env)
        assert receipt.status == "delivered" and receipt.detail["ack"] == "AA"
        peer.answer_next("AE")
        with pytest.raises(PermanentError):
            conn.send(make_envelope())
        peer.answer_next("AR")
        with pytest.raises(TransientError):
            conn.send(make_envelope())
        peer.answer_next("CA")
        later = conn.send(make_envelope())
        assert later.status == "sent" and later.ack_ref == later.remote_id
