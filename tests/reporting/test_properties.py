"""Invariants of the indicators over random, well-formed event histories (hypothesis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reporting import Capacity, Period, Rules, StayEvent, compute
from reporting.events import ABSENCE_KINDS
from reporting.indicators import compute_timeline, daily_counts, occupancy_series
from tests.reporting.helpers import FINESS

ACCS = ("permanent", "temporary", "day_care")
T0 = datetime(2025, 12, 1, tzinfo=UTC)


@st.composite
def person_history(draw: st.DrawFn, index: int) -> list[StayEvent]:
    """Stays of one person: admission, then moves, absences and maybe an exit; times in hours."""
    person = f"p{index}"
    t = draw(st.integers(0, 24 * 400))
    out: list[StayEvent] = []
    n = 0

    def add(kind: str, **kw: object) -> None:
        nonlocal n
        n += 1
        out.append(StayEvent(f"{person}-{n}", kind, person, FINESS, T0 + timedelta(hours=t), **kw))  # type: ignore[arg-type]

    for _ in range(draw(st.integers(1, 3))):
        add("admission", accommodation=draw(st.sampled_from(ACCS)), sex=draw(st.sampled_from(("F", "M", None))))
        absent = False
        for _ in range(draw(st.integers(0, 6))):
            t += draw(st.integers(1, 24 * 60))
            step = draw(st.sampled_from(("move", "transfer", "absence", "assess")))
            if step == "move":
                add("accommodation_change", accommodation=draw(st.sampled_from(ACCS)))
            elif step == "transfer":
                add("transfer", unit=draw(st.sampled_from("ABC")))
            elif step == "assess":
                add("assessment", gir=draw(st.integers(1, 6)))
            elif absent:
                add("absence_end")
                absent = False
            else:
                add("absence_start", absence_kind=draw(st.sampled_from(("hospitalisation", "holiday"))))
                absent = True
        if not draw(st.booleans()):
            break
        t += draw(st.integers(1, 24 * 30))
        add("exit", exit_reason=draw(st.sampled_from(("death", "home", "hospital"))))
        t += draw(st.integers(1, 24 * 30))
    return out


@st.composite
def histories(draw: st.DrawFn) -> list[StayEvent]:
    events: list[StayEvent] = []
    for i in range(draw(st.integers(0, 8))):
        events.extend(draw(person_history(i)))
    return events


RULES = st.builds(
    Rules,
    billing_stop_days=st.sampled_from(({}, {"hospitalisation": 5}, {"hospitalisation": 2, "holiday": 30})),
)
CAPS = [Capacity("permanent", 5), Capacity("temporary", 2), Capacity("day_care", 3, opening_days=250)]
_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(histories(), RULES, st.sampled_from(("2026", "2026-Q1", "2026-02", "2025-12")))
def test_days_add_up_across_accommodation_types(events: list[StayEvent], rules: Rules, code: str) -> None:
    ds = compute(events, finess=FINESS, period=Period.parse(code), capacities=CAPS, rules=rules)
    groups = ds.by_accommodation.values()
    t = ds.totals
    for name in ("days_realised", "days_present", "days_billable", "entries", "exits"):
        assert sum(getattr(g, name) for g in groups) == getattr(t, name), name
    assert t.days_present + sum(t.days_absent.values()) == t.days_realised
    assert t.days_absent_full_rate + t.days_absent_reduced_rate + t.days_absent_not_billed == sum(
        t.days_absent.values()
    )
    assert t.days_billable == t.days_realised - t.days_absent_not_billed
    assert all(g.people_accompanied <= t.people_accompanied for g in groups)
    assert t.people_accompanied <= sum(g.people_accompanied for g in groups)
    assert sum(t.people_by_sex.values()) == sum(t.people_by_age_band.values()) == t.people_accompanied
    assert sum(t.gir_distribution.values()) == t.people_present_at_end <= t.people_accompanied


@_settings
@given(histories(), RULES)
def test_people_accompanied_at_least_present_on_any_day(events: list[StayEvent], rules: Rules) -> None:
    period = Period.parse("2026")
    ds = compute(events, finess=FINESS, period=period, rules=rules)
    tl = compute_timeline(events, rules)
    counts = daily_counts(tl, finess=FINESS, start=period.start, end=period.end)
    assert all(ds.totals.people_accompanied >= in_stay >= present >= 0 for _, in_stay, present in counts)
    assert sum(c[1] for c in counts) == ds.totals.days_realised
    assert sum(c[2] for c in counts) == ds.totals.days_present


@_settings
@given(histories(), RULES)
def test_months_add_up_to_the_year(events: list[StayEvent], rules: Rules) -> None:
    year = Period.parse("2026")
    tl = compute_timeline(events, rules)
    whole = compute(events, finess=FINESS, period=year, rules=rules, timeline=tl, capacities=CAPS)
    months = [
        compute(events, finess=FINESS, period=m, rules=rules, timeline=tl, capacities=CAPS) for m in year.months()
    ]
    for name in ("days_realised", "days_present", "days_billable", "days_absent_not_billed", "entries", "exits"):
        assert sum(getattr(m.totals, name) for m in months) == getattr(whole.totals, name), name
    assert abs(sum(m.totals.theoretical_days for m in months) - whole.totals.theoretical_days) < 0.1
    assert max((m.totals.people_accompanied for m in months), default=0) <= whole.totals.people_accompanied


@_settings
@given(histories(), st.randoms(use_true_random=False))
def test_order_of_arrival_does_not_matter(events: list[StayEvent], rnd: object) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    p = Period.parse("2026-Q1")
    assert compute(events, finess=FINESS, period=p).as_json() == compute(shuffled, finess=FINESS, period=p).as_json()


# -- occupancy ≤ 100 % when no place is overbooked ---------------------------------------------
PLACES = {"permanent": 2, "temporary": 1, "day_care": 1}
CAPS_EVERY_DAY = [Capacity(acc, n) for acc, n in PLACES.items()]
PARIS = ZoneInfo("Europe/Paris")
D0 = date(2025, 12, 20)


@st.composite
def place_schedules(draw: st.DrawFn) -> list[StayEvent]:
    """Each place holds one person at a time: hébergement hands the place over on the exit day
    (that day is not counted for the leaver), day care only the day after (its exit day counts).
    With same-day re-admissions, absences across month ends, DST days (local times), identical
    re-sends (version 2) and a phantom admission into a full place, withdrawn by version 2."""
    out: list[StayEvent] = []
    n = 0

    def add(kind: str, person: str, day: date, hour: int, **kw: object) -> StayEvent:
        nonlocal n
        n += 1
        event = StayEvent(f"e{n}", kind, person, FINESS, datetime.combine(day, time(hour), PARIS), **kw)  # type: ignore[arg-type]
        out.append(event)
        return event

    for acc, places in PLACES.items():
        day_care = acc == "day_care"
        for place in range(places):
            day = D0 + timedelta(days=draw(st.integers(0, 20)))
            for k in range(draw(st.integers(1, 4))):
                person = f"{acc}-{place}-{k}"
                add("admission", person, day, 10, accommodation=acc)
                length = draw(st.integers(0, 3) if day_care else st.integers(1, 120))
                end = day + timedelta(days=length)
                if not day_care and length > 3 and draw(st.booleans()):
                    away = day + timedelta(days=draw(st.integers(1, length - 2)))
                    back = min(away + timedelta(days=draw(st.integers(0, 40))), end)
                    add("absence_start", person, away, 14, absence_kind=draw(st.sampled_from(ABSENCE_KINDS)))
                    if back < end:
                        add("absence_end", person, back, 16)
                if draw(st.booleans()):  # gone the same day and back: one continuous stay
                    add("exit", person, day, 11, exit_reason="home")
                    add("admission", person, day, 12, accommodation=acc)
                if draw(st.integers(0, 4)) == 0:
                    break  # still there
                add("exit", person, end, 15 if not day_care else 17, exit_reason="home")
                day = end + timedelta(days=draw(st.integers(1 if day_care else 0, 10)))
    for event in draw(st.lists(st.sampled_from(out), max_size=5)) if out else []:
        out.append(replace(event, version=2))
    phantom = add("admission", "phantom", D0 + timedelta(days=30), 10, accommodation="permanent")
    out.append(replace(phantom, version=2, cancelled=True))
    return out


@_settings
@given(place_schedules(), RULES, st.sampled_from(("2026", "2026-Q1", "2026-03", "2026-Q2", "2025-12")))
def test_occupancy_never_exceeds_100_percent_without_overbooking(
    events: list[StayEvent], rules: Rules, code: str
) -> None:
    period = Period.parse(code)
    tl = compute_timeline(events, rules)
    ds = compute(events, finess=FINESS, period=period, capacities=CAPS_EVERY_DAY, rules=rules, timeline=tl)
    for name, fig in [("all", ds.totals), *ds.by_accommodation.items()]:
        assert fig.occupancy_rate is not None and fig.occupancy_rate <= 100, (name, fig.occupancy_rate)
        assert fig.realisation_rate is not None and fig.realisation_rate <= 100, (name, fig.realisation_rate)
    for acc, places in PLACES.items():
        series = occupancy_series(
            tl, finess=FINESS, start=period.start, end=period.end, capacities=CAPS_EVERY_DAY, accommodation=acc
        )
        assert all(day["in_stay"] <= places for day in series), acc
