"""The cases that break today's extractions, each computed by hand in the comments."""

from __future__ import annotations

from datetime import date

from reporting import Capacity, Period, Rules, compute
from reporting.events import affected_range, latest
from reporting.indicators import compute_timeline, daily_counts
from tests.reporting.helpers import FINESS, d, ev

JAN = Period.parse("2026-01")
FEB = Period.parse("2026-02")
MAR = Period.parse("2026-03")


def test_accommodation_change_mid_month_counts_the_person_once_and_splits_days() -> None:
    # temporary from 10 Jan (nights 10..19 = 10), permanent from 20 Jan (nights 20..31 = 12)
    events = [
        ev("admission", "2026-01-10T14:00", accommodation="temporary", provenance="home"),
        ev("accommodation_change", "2026-01-20T09:00", accommodation="permanent"),
    ]
    caps = [Capacity("permanent", 10), Capacity("temporary", 2)]
    ds = compute(events, finess=FINESS, period=JAN, capacities=caps)
    assert ds.totals.days_realised == 22
    assert ds.by_accommodation["temporary"].days_realised == 10
    assert ds.by_accommodation["permanent"].days_realised == 12
    assert ds.totals.people_accompanied == 1  # once, although in two types
    assert ds.by_accommodation["temporary"].people_accompanied == 1
    assert ds.by_accommodation["permanent"].people_accompanied == 1
    assert ds.totals.entries == 1 and ds.by_accommodation["temporary"].entries == 1
    assert ds.by_accommodation["permanent"].entries == 0
    assert ds.by_accommodation["temporary"].changes_out == 1
    assert ds.by_accommodation["permanent"].changes_in == 1
    assert ds.totals.entries_by_provenance == {"home": 1}
    # theoretical: 12 places x 31 days; permanent 10 x 31 = 310, 12 / 310 = 3.87 %
    assert ds.totals.theoretical_days == 372
    assert ds.by_accommodation["permanent"].occupancy_rate == 3.87
    assert ds.totals.people_present_at_end == 1
    assert ds.by_accommodation["permanent"].people_present_at_end == 1
    assert ds.by_accommodation["temporary"].people_present_at_end == 0


def test_transfer_between_units_does_not_split_the_type() -> None:
    events = [
        ev("admission", "2026-01-01T10:00", unit="A"),
        ev("transfer", "2026-01-15T10:00", unit="B"),
        ev("transfer", "2026-01-15T16:00", unit="C"),  # same day: C replaces B
    ]
    ds = compute(events, finess=FINESS, period=JAN)
    assert ds.totals.days_realised == 31
    assert ds.unit_transfers == 2
    assert set(ds.by_accommodation) == {"permanent"}


def test_absence_across_the_month_boundary_is_numbered_from_its_first_night() -> None:
    # hospitalised from 30 Jan 15:00 to 6 Feb 11:00: nights 30, 31 Jan and 1..5 Feb = 7 days;
    # days 1-3 (30 Jan, 31 Jan, 1 Feb) at the full rate, 4-5 reduced, 6-7 (4, 5 Feb) past a stop at 5
    events = [
        ev("admission", "2025-12-01T10:00"),
        ev("absence_start", "2026-01-30T15:00"),
        ev("absence_end", "2026-02-06T11:00"),
    ]
    rules = Rules(billing_stop_days={"hospitalisation": 5})
    jan = compute(events, finess=FINESS, period=JAN, rules=rules, capacities=[Capacity("permanent", 1)])
    assert jan.totals.days_absent == {"hospitalisation": 2}
    assert (jan.totals.days_absent_full_rate, jan.totals.days_absent_reduced_rate) == (2, 0)
    assert (jan.totals.days_realised, jan.totals.days_present, jan.totals.days_billable) == (31, 29, 31)
    assert jan.totals.absences_started == {"hospitalisation": 1}
    assert jan.totals.people_present_at_end == 0  # away on the night of 31 Jan
    assert jan.totals.hospitalisation_rate == 6.45  # 2 / 31
    feb = compute(events, finess=FINESS, period=FEB, rules=rules, capacities=[Capacity("permanent", 1)])
    assert feb.totals.days_absent == {"hospitalisation": 5}
    assert feb.totals.days_absent_full_rate == 1
    assert feb.totals.days_absent_reduced_rate == 2
    assert feb.totals.days_absent_not_billed == 2
    assert (feb.totals.days_realised, feb.totals.days_present, feb.totals.days_billable) == (28, 23, 26)
    assert feb.totals.absences_started == {}
    assert feb.totals.occupancy_rate == 92.86  # 26 / 28


def test_hospitalisation_shorter_than_72_hours_is_billed_in_full() -> None:
    # 10 Mar 09:00 -> 12 Mar 18:00: nights 10, 11 = 2 days, both at the full rate
    events = [
        ev("admission", "2026-01-01T10:00"),
        ev("absence_start", "2026-03-10T09:00"),
        ev("absence_end", "2026-03-12T18:00"),
    ]
    ds = compute(events, finess=FINESS, period=MAR, rules=Rules(billing_stop_days={"hospitalisation": 5}))
    assert ds.totals.days_absent == {"hospitalisation": 2}
    assert ds.totals.days_absent_full_rate == 2
    assert ds.totals.days_absent_reduced_rate == ds.totals.days_absent_not_billed == 0
    assert ds.totals.days_billable == 31 and ds.totals.days_present == 29


def test_hospitalisation_longer_than_72_hours_is_reduced_then_stops() -> None:
    # 10 Mar -> 20 Mar: nights 10..19 = 10 days: 3 full, then reduced; with a stop after 5: 2 reduced, 5 not billed
    events = [
        ev("admission", "2026-01-01T10:00"),
        ev("absence_start", "2026-03-10T09:00"),
        ev("absence_end", "2026-03-20T18:00"),
    ]
    no_stop = compute(events, finess=FINESS, period=MAR)
    assert (no_stop.totals.days_absent_full_rate, no_stop.totals.days_absent_reduced_rate) == (3, 7)
    assert no_stop.totals.days_billable == 31
    stop = compute(events, finess=FINESS, period=MAR, rules=Rules(billing_stop_days={"hospitalisation": 5}))
    assert (stop.totals.days_absent_full_rate, stop.totals.days_absent_reduced_rate) == (3, 2)
    assert stop.totals.days_absent_not_billed == 5
    assert stop.totals.days_billable == 26 and stop.totals.days_present == 21


def test_same_day_readmission_is_one_stay() -> None:
    # admitted 5 Jan; out 15 Jan 10:00, back 15 Jan 17:00: one stay, nights 5..31 = 27
    events = [
        ev("admission", "2026-01-05T10:00"),
        ev("exit", "2026-01-15T10:00", exit_reason="hospital"),
        ev("admission", "2026-01-15T17:00"),
    ]
    ds = compute(events, finess=FINESS, period=JAN)
    assert ds.totals.days_realised == 27
    assert (ds.totals.entries, ds.totals.exits) == (1, 0)
    assert ds.same_day_readmissions == 1
    assert ds.totals.people_accompanied == 1
    assert ds.totals.average_length_of_stay is None


def test_readmission_the_next_day_is_two_stays() -> None:
    # [5, 15) = 10 nights, exit; [16, 1 Feb) = 16 nights; length of the stay that ended: 10 days
    events = [
        ev("admission", "2026-01-05T10:00"),
        ev("exit", "2026-01-15T10:00", exit_reason="hospital"),
        ev("admission", "2026-01-16T17:00", provenance="hospital"),
    ]
    ds = compute(events, finess=FINESS, period=JAN, capacities=[Capacity("permanent", 4)])
    assert ds.totals.days_realised == 26
    assert (ds.totals.entries, ds.totals.exits) == (2, 1)
    assert ds.totals.exits_by_reason == {"hospital": 1}
    assert ds.totals.people_accompanied == 1
    assert ds.totals.average_length_of_stay == 10.0
    assert ds.totals.turnover_rate == 0.5  # 2 entries / 4 places
    assert ds.same_day_readmissions == 0


def test_admission_and_death_the_same_day_counts_one_day() -> None:
    events = [ev("admission", "2026-01-05T10:00"), ev("exit", "2026-01-05T22:00", exit_reason="death")]
    ds = compute(events, finess=FINESS, period=JAN)
    assert ds.totals.days_realised == 1
    assert ds.totals.exits_by_reason == {"death": 1}
    assert ds.totals.average_length_of_stay == 0.0


def test_day_care_counts_the_exit_day() -> None:
    # enrolled 5 Jan, left 9 Jan: days attended 5..9 = 5 (exit day counts for day care)
    events = [
        ev("admission", "2026-01-05T09:00", accommodation="day_care"),
        ev("exit", "2026-01-09T17:00", exit_reason="home"),
    ]
    ds = compute(events, finess=FINESS, period=JAN)
    assert ds.by_accommodation["day_care"].days_realised == 5


def test_correction_after_the_period_was_reported_changes_it_and_says_which_range() -> None:
    first = ev("admission", "2026-01-10T14:00", event_id="adm-1")
    exit_ = ev("exit", "2026-02-10T14:00", event_id="exit-1", exit_reason="home")
    reported = compute([first, exit_], finess=FINESS, period=JAN)
    assert reported.totals.days_realised == 22
    corrected = ev("admission", "2026-01-05T14:00", event_id="adm-1", version=2)
    events = [first, exit_, corrected]
    again = compute(events, finess=FINESS, period=JAN)
    assert again.totals.days_realised == 27
    start, end = affected_range(first, corrected, latest(events))
    assert (start.date(), end.date() if end else None) == (date(2026, 1, 5), date(2026, 2, 10))
    # an older version arriving late does not win
    stale = compute([corrected, exit_, first], finess=FINESS, period=JAN)
    assert stale.totals.days_realised == 27
    # cancelling the exit reopens the stay
    cancelled = ev("exit", "2026-02-10T14:00", event_id="exit-1", version=2, cancelled=True, exit_reason="home")
    feb = compute([*events, cancelled], finess=FINESS, period=FEB)
    assert feb.totals.days_realised == 28 and feb.totals.exits == 0


def test_leap_year_february_and_opening_days() -> None:
    events = [ev("admission", "2024-02-01T10:00")]
    ds = compute(events, finess=FINESS, period=Period.parse("2024-02"), capacities=[Capacity("permanent", 1)])
    assert ds.totals.days_realised == 29 and ds.totals.theoretical_days == 29
    assert ds.totals.occupancy_rate == 100.0
    year = compute(events, finess=FINESS, period=Period.parse("2024"), capacities=[Capacity("permanent", 1)])
    assert year.totals.theoretical_days == 366 and year.totals.days_realised == 335
    # an IME semi-internat open 210 days a year, 10 places: 2100 theoretical days in the year,
    # 10 x 210 x 29 / 366 = 166.39 in February 2024
    ime = [Capacity("semi_boarding", 10, opening_days=210)]
    assert compute([], finess=FINESS, period=Period.parse("2024"), capacities=ime).totals.theoretical_days == 2100
    assert compute([], finess=FINESS, period=Period.parse("2024-02"), capacities=ime).totals.theoretical_days == 166.39


def test_capacity_change_mid_period() -> None:
    caps = [Capacity("permanent", 10, valid_to=d("2026-01-16")), Capacity("permanent", 12, valid_from=d("2026-01-16"))]
    ds = compute([], finess=FINESS, period=JAN, capacities=caps)
    assert ds.totals.theoretical_days == 10 * 15 + 12 * 16
    assert ds.totals.places == 12


def test_dst_days_are_calendar_days_in_paris() -> None:
    # 23:30 UTC on 28 March 2026 is 00:30 on 29 March in Paris (winter time, +01:00)
    # hospitalised 28 Mar 20:00 +01:00, back 31 Mar 20:00 +02:00: 71 hours but 3 nights (28, 29, 30)
    events = [
        ev("admission", "2026-03-28T23:30:00Z", person="p1"),
        ev("admission", "2026-03-01T10:00", person="p2"),
        ev("absence_start", "2026-03-28T20:00+01:00", person="p2"),
        ev("absence_end", "2026-03-31T20:00+02:00", person="p2"),
        # autumn: 01:30 UTC on 25 Oct 2026 is 02:30 CET (after the clocks go back): 25 Oct in Paris
        ev("exit", "2026-10-25T01:30:00Z", person="p1", exit_reason="home"),
    ]
    mar = compute(events, finess=FINESS, period=MAR)
    tl = compute_timeline(events, Rules())
    p1 = next(s for s in tl.stays if s.person_ref == "p1")
    assert p1.entry == d("2026-03-29") and p1.exit == d("2026-10-25")
    assert mar.totals.days_absent == {"hospitalisation": 3}
    assert mar.totals.days_absent_full_rate == 3
    assert mar.totals.days_realised == 31 + 3  # p2 all month, p1 nights 29, 30, 31
    oct_ = compute(events, finess=FINESS, period=Period.parse("2026-10"))
    assert oct_.totals.days_realised == 24 + 31  # p1 nights 1..24, p2 all month
    counts = daily_counts(tl, finess=FINESS, start=d("2026-03-27"), end=d("2026-04-02"))
    assert [(c[1], c[2]) for c in counts] == [(1, 1), (1, 0), (2, 1), (2, 1), (2, 2), (2, 2)]


def test_people_by_sex_age_and_gir() -> None:
    events = [
        ev("admission", "2026-01-02T10:00", person="a", sex="F", birth_date=d("1940-06-01"), gir=2),
        ev("admission", "2026-01-03T10:00", person="b", sex="M", birth_date=d("1941-12-31"), gir=4),
        ev("assessment", "2026-01-20T10:00", person="b", gir=3),
        ev("admission", "2026-01-04T10:00", person="c"),
        ev("exit", "2026-01-10T10:00", person="c", exit_reason="death"),
    ]
    ds = compute(events, finess=FINESS, period=JAN)
    assert ds.totals.people_accompanied == 3
    assert ds.totals.people_by_sex == {"F": 1, "M": 1, "U": 1}
    # ages on 31 Jan 2026: a 85, b 84
    assert ds.totals.people_by_age_band == {"75-84": 1, "85-94": 1, "unknown": 1}
    # present on 31 Jan: a (GIR2 = 840 points), b (GIR3 = 660 points): GMP 750
    assert ds.totals.gir_distribution == {"GIR2": 1, "GIR3": 1}
    assert ds.totals.gmp_estimated == 750.0
    assert ds.totals.median_length_of_stay == 6.0


def test_events_of_other_essms_and_anomalies_are_kept_apart() -> None:
    events = [
        ev("admission", "2026-01-02T10:00", person="a"),
        ev("admission", "2026-01-02T10:00", person="a", finess="750000002"),
        ev("exit", "2026-01-05T10:00", person="z", exit_reason="home"),  # no stay: anomaly
    ]
    ds = compute(events, finess=FINESS, period=JAN)
    assert ds.totals.days_realised == 30
    assert ds.anomalies == 1


def test_exit_on_the_first_of_the_month_counts_in_that_month_without_a_day() -> None:
    # nights 10..31 Jan; leaves 1 Feb: the exit is February's, its day is not counted
    events = [ev("admission", "2026-01-10T10:00"), ev("exit", "2026-02-01T10:00", exit_reason="home")]
    jan = compute(events, finess=FINESS, period=JAN)
    feb = compute(events, finess=FINESS, period=FEB)
    assert (jan.totals.days_realised, jan.totals.exits, jan.totals.people_present_at_end) == (22, 0, 1)
    assert (feb.totals.days_realised, feb.totals.exits, feb.totals.people_accompanied) == (0, 1, 0)
    assert feb.totals.average_length_of_stay == 22.0
