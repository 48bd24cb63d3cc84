"""What the ``mllp`` source's ``interpret`` makes of PAM-FR ADT messages: the ANS examples and a
hand-written message for every trigger event it accepts."""

from __future__ import annotations

import json

import pytest

from connectors.base import InboundMessage
from connectors.hl7v2 import MllpSource, MllpSourceSettings
from connectors.hl7v2.adt import CANCELS, EVENTS
from connectors.hl7v2.listener import ADT_TRIGGERS
from tests.connectors.hl7v2.support import EXAMPLES, INS, INS_OID, STRUCTURES, adt

SOURCE = MllpSource(MllpSourceSettings(essms_finess="750000010", port=0, local_authorities=["ESSMS-LOCAL"]))


def _interpret(raw: bytes) -> object:
    return SOURCE.interpret(InboundMessage(external_id="x", content=raw, media_type="application/hl7-v2+er7"))


def _event(raw: bytes):  # type: ignore[no-untyped-def]
    result = _interpret(raw)
    assert len(result.events) == 1, result  # type: ignore[attr-defined]
    return result.events[0]  # type: ignore[attr-defined]


def test_every_accepted_pam_fr_trigger_has_a_fixture() -> None:
    assert {t for t in ADT_TRIGGERS if t.startswith("A") and t != "A47"} | {"Z99"} == set(STRUCTURES)


@pytest.mark.parametrize("trigger", sorted(STRUCTURES))
def test_every_trigger_becomes_one_event(trigger: str) -> None:
    event = _event(adt(trigger, control_id=f"T-{trigger}"))
    payload = event.payload
    assert payload["schema"] == "dui-gateway.adt/1"
    assert payload["trigger"] == trigger
    assert payload["control_id"] == f"T-{trigger}"
    if trigger in CANCELS:
        assert event.event_type == "adt.cancelled"
        assert payload["cancels"]["trigger"] == CANCELS[trigger]
        assert payload["movement"]["action"] == "CANCEL"
    else:
        assert event.event_type == EVENTS[trigger][0]
        assert payload["cancels"] is None
    assert event.identifiers[0] == f"urn:oid:{INS_OID}|{INS}"  # INS first
    assert "urn:oid:1.2.250.1.999.1|000003" in event.identifiers
    assert event.person_ref is None
    assert event.essms_finess == "750000010"
    text = json.dumps(payload, ensure_ascii=False)
    assert "NOM-TEST" not in text and "19400101" not in text  # no names, no birth date
    if trigger == "A40":
        assert event.former_identifiers == ("urn:oid:1.2.250.1.999.1|000999",)


def test_the_four_resident_events() -> None:
    assert _event(adt("A01")).payload["label"] == "résident hospitalisé"
    assert _event(adt("A02")).payload["label"] == "résident transféré"
    assert _event(adt("A03")).payload["label"] == "résident sorti"
    assert _event(adt("A22")).payload["label"] == "résident de retour"


def test_a_movement_and_its_cancellation_share_a_series() -> None:
    admission = _event(adt("A01", movement="M-42"))
    cancel = _event(adt("A11", movement="M-42", control_id="MSG-2"))
    other = _event(adt("A01", movement="M-43"))
    assert admission.series == cancel.series
    assert admission.series != other.series
    assert admission.payload["movement"]["id"] == "M-42"
    assert admission.payload["movement"]["at"] == "2024-03-09T11:00:00"


def test_a_movement_update_names_the_movement_and_its_original_trigger() -> None:
    admission = _event(adt("A01", movement="M-7"))
    update = _event(adt("Z99", movement="M-7", control_id="MSG-3"))
    assert update.event_type == "adt.movement_updated"
    assert update.payload["movement"]["action"] == "UPDATE"
    assert update.payload["movement"]["original_trigger"] == "A01"
    assert update.series == admission.series


def test_a_local_identifier_of_the_essms_is_the_person_ref() -> None:
    event = _event(adt("A01", local_id="RES-0042"))
    assert event.person_ref == "RES-0042"


@pytest.mark.parametrize(
    ("name", "feeding", "refusals"),
    [
        ("ConsentementConsultation_NonOppositionAlimentation.er7", "not_opposed", {"dmp": False}),
        ("NonConsentementConsultation_NonOppositionAlimentation.er7", "not_opposed", {"dmp": False}),
        ("NonConsentementConsultation_OppositionAlimentation.er7", "opposed", {"dmp": True}),
        ("NonRecueillieConsentementConsultation_NonOppositionAlimentation.er7", "not_opposed", {"dmp": False}),
        ("NonRecueillieConsentementConsultation_NonRecueillieOppositionAlimentation.er7", "not_collected", {}),
    ],
)
def test_ans_consent_examples(name: str, feeding: str, refusals: dict[str, bool]) -> None:
    event = _event((EXAMPLES / "pam-fr-consent" / name).read_bytes())
    assert event.event_type == "adt.hospitalised"
    assert event.payload["dmp"]["feeding"] == feeding
    assert dict(event.sharing_refusals) == refusals
    assert event.identifiers[0] == "urn:oid:1.2.250.1.213.1.4.10|279035121518989"
    assert event.payload["movement"]["id"] == "312"
    assert event.payload["visit"]["class"] == "I"
    assert event.payload["pmsi"]["entry_mode"] == "8"
    assert event.payload["ins_collection"] == {"method": "INSI", "at": "2021-12-01T00:00:00"}
    assert event.payload["z_segments"] == ["ZBE", "ZFA", "ZFD", "ZFM"]


def test_application_acknowledgements() -> None:
    ack = b"MSH|^~\\&|PFI|X|DUI|Y|202106060932||ACK^T02^ACK|016|P|2.6\rMSA|AA|DG123\r"
    (one,) = _interpret(ack).acknowledgements  # type: ignore[attr-defined]
    assert (one.ack_ref, one.outcome, one.kind) == ("DG123", "delivered", "hl7v2-ack")
    refused = b"MSH|^~\\&|PFI|X|DUI|Y|202106060932||ACK^T02^ACK|017|P|2.6\rMSA|AE|DG124\rERR|||902^^L|E\r"
    (two,) = _interpret(refused).acknowledgements  # type: ignore[attr-defined]
    assert (two.outcome, two.reason) == ("failed", "AE 902")


@pytest.mark.parametrize(
    "raw",
    [b"", b"garbage", b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|X|P|2.5\r" + "é".encode("utf-16")],
)
def test_unreadable_content_gives_a_note_never_an_exception(raw: bytes) -> None:
    result = _interpret(raw)
    assert result.events == () and result.note  # type: ignore[attr-defined]
