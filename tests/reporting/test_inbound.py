"""The seam from inbound ADT movements (dui-gateway.adt/1, the hl7v2 branch) to stay events, with
hand-built events of that shape (:class:`connectors.base.InboundEvent`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.base import InboundEvent
from reporting import Period, compute, from_inbound
from reporting.events import NotAStayEvent
from tests.reporting.helpers import FINESS, ev


def _adt(event_type: str, at: str, series: str = "MVT-1", **payload: object) -> InboundEvent:
    return InboundEvent(
        event_type=event_type,
        payload={"schema": "dui-gateway.adt/1", "occurred_at": at, **payload},
        essms_finess=FINESS,
        person_ref="p1",
        series=series,
    )


def test_a01_and_a03_become_a_hospitalisation_absence_in_paris_time() -> None:
    # the hl7v2 reader drops HL7 offsets: naive times are Paris local time
    out = from_inbound(_adt("adt.hospitalised", "2026-03-10T09:00:00", series="Z1", recorded_at="2026-03-10T09:05:00"))
    back = from_inbound(_adt("adt.discharged", "2026-03-20T18:00:00", series="Z2"))
    assert (out.kind, out.absence_kind, out.event_id, out.person_ref) == (
        "absence_start", "hospitalisation", "inbound:Z1", "p1",
    )  # fmt: skip
    assert out.at == datetime(2026, 3, 10, 8, tzinfo=UTC)
    assert out.version == int(datetime(2026, 3, 10, 8, 5, tzinfo=UTC).timestamp())
    assert back.kind == "absence_end" and back.version == 1
    ds = compute([ev("admission", "2026-01-01T10:00"), out, back], finess=FINESS, period=Period.parse("2026-03"))
    assert ds.totals.days_absent == {"hospitalisation": 10}


def test_a_cancellation_of_the_same_movement_withdraws_it() -> None:
    out = from_inbound(_adt("adt.hospitalised", "2026-03-10T09:00:00+01:00", recorded_at="2026-03-10T09:05:00"))
    cancel = from_inbound(
        _adt(
            "adt.cancelled",
            "2026-03-10T09:00:00+01:00",
            recorded_at="2026-03-10T10:00:00",
            cancels={"trigger": "A01", "event_type": "adt.hospitalised"},
        )
    )
    assert cancel.event_id == out.event_id and cancel.cancelled and cancel.version > out.version
    ds = compute([ev("admission", "2026-01-01T10:00"), out, cancel], finess=FINESS, period=Period.parse("2026-03"))
    assert ds.totals.days_absent == {}


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (InboundEvent("adt.transferred", {"occurred_at": "2026-03-10T09:00:00Z"}, FINESS, "p1", "s"), "not a stay"),
        (InboundEvent("adt.leave_started", {"occurred_at": "2026-03-10T09:00:00Z"}, FINESS, "p1", "s"), "not a stay"),
        (InboundEvent("mssante.message", {"occurred_at": "2026-03-10T09:00:00Z"}, FINESS, "p1", "s"), "not a stay"),
        (InboundEvent("adt.hospitalised", {"occurred_at": "2026-03-10T09:00:00Z"}, FINESS, None, "s"), "not matched"),
        (InboundEvent("adt.hospitalised", {"occurred_at": "yesterday"}, FINESS, "p1", "s"), "not ISO 8601"),
        (InboundEvent("adt.hospitalised", {}, FINESS, "p1", "s"), "occurred_at is missing"),
        (InboundEvent("adt.hospitalised", {"occurred_at": "2026-03-10T09:00:00Z"}, FINESS, "p1", None), "no series"),
    ],
)
def test_what_is_not_a_stay_event_says_why(event: InboundEvent, why: str) -> None:
    with pytest.raises(NotAStayEvent, match=why):
        from_inbound(event)
