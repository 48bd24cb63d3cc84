"""The seam from inbound ADT movements (branch hl7v2) to stay events, with hand-built events of
the shape that branch produces (:class:`connectors.base.InboundEvent`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.base import InboundEvent
from reporting import Period, compute, from_inbound
from reporting.events import NotAStayEvent
from tests.reporting.helpers import FINESS, ev


def _adt(movement: str, at: str, series: str = "MSG-1", **payload: object) -> InboundEvent:
    return InboundEvent(
        event_type=f"adt.{movement}",
        payload={"occurred_at": at, **payload},
        essms_finess=FINESS,
        person_ref="p1",
        series=series,
    )


def test_hospitalisation_and_return_become_an_absence() -> None:
    out = from_inbound(_adt("hospitalised", "2026-03-10T09:00:00+01:00", series="A21-77"))
    back = from_inbound(_adt("returned", "2026-03-20T18:00:00+01:00", series="A22-78"))
    assert (out.kind, out.absence_kind, out.event_id, out.person_ref) == (
        "absence_start",
        "hospitalisation",
        "inbound:A21-77",
        "p1",
    )
    assert back.kind == "absence_end"
    ds = compute([ev("admission", "2026-01-01T10:00"), out, back], finess=FINESS, period=Period.parse("2026-03"))
    assert ds.totals.days_absent == {"hospitalisation": 10}


def test_discharge_transfer_corrections_and_cancellations() -> None:
    exit_ = from_inbound(_adt("discharged", "2026-03-10T09:00:00Z", exit_reason="death"))
    assert exit_.kind == "exit" and exit_.exit_reason == "death" and exit_.at == datetime(2026, 3, 10, 9, tzinfo=UTC)
    assert from_inbound(_adt("discharged", "2026-03-10T09:00:00Z")).exit_reason == "unknown"
    moved = from_inbound(_adt("transferred", "2026-03-10T09:00:00Z", unit="B"))
    assert (moved.kind, moved.unit) == ("transfer", "B")
    fixed = from_inbound(_adt("hospitalised", "2026-03-11T09:00:00Z", version=2))
    cancelled = from_inbound(_adt("hospitalised", "2026-03-11T09:00:00Z", version=3, cancelled=True))
    assert (fixed.version, cancelled.cancelled) == (2, True)


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (InboundEvent("mssante.message", {"occurred_at": "2026-03-10T09:00:00Z"}, FINESS, "p1", "s"), "not a stay"),
        (InboundEvent("adt.hospitalised", {"occurred_at": "2026-03-10T09:00:00Z"}, FINESS, None, "s"), "not matched"),
        (InboundEvent("adt.hospitalised", {"occurred_at": "2026-03-10T09:00:00"}, FINESS, "p1", "s"), "no UTC offset"),
        (InboundEvent("adt.hospitalised", {}, FINESS, "p1", "s"), "occurred_at is missing"),
        (InboundEvent("adt.transferred", {"occurred_at": "2026-03-10T09:00:00Z"}, FINESS, "p1", "s"), "names the unit"),
    ],
)
def test_what_is_not_a_stay_event_says_why(event: InboundEvent, why: str) -> None:
    with pytest.raises(NotAStayEvent, match=why):
        from_inbound(event)
