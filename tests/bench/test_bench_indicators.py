"""The indicators benchmark's synthetic year never overbooks a place, so no occupancy rate of it
may exceed 100 % (it once printed 100.75 %: its day care had more attendees than places and more
days than its opening days; the computation was right, the generator was fixed)."""

from __future__ import annotations

from bench.bench_indicators import CAPS, DAY_CARE_DAYS, FINESS, synthetic_year
from reporting import Period, Rules, compute
from reporting.indicators import compute_timeline, occupancy_series


def test_synthetic_year_never_overbooks_and_stays_at_or_below_100_percent() -> None:
    events = synthetic_year(7)
    assert 35_000 < len(events) < 45_000  # the volume the benchmark is about
    year = Period.parse("2025")
    tl = compute_timeline(events, Rules())
    for cap in CAPS:
        series = occupancy_series(
            tl, finess=FINESS, start=year.start, end=year.end, capacities=CAPS, accommodation=cap.accommodation
        )
        assert max(day["in_stay"] for day in series) <= cap.places, cap.accommodation
    attended = {day["date"] for day in occupancy_series(
        tl, finess=FINESS, start=year.start, end=year.end, capacities=CAPS, accommodation="day_care"
    ) if day["in_stay"]}  # fmt: skip
    assert len(attended) <= len(DAY_CARE_DAYS) == CAPS[2].opening_days
    ds = compute(events, finess=FINESS, period=year, capacities=CAPS, timeline=tl)
    rates = {name: f.occupancy_rate for name, f in ds.by_accommodation.items()}
    assert all(rate is not None and 0 < rate <= 100 for rate in rates.values()), rates
    assert ds.totals.occupancy_rate is not None and ds.totals.occupancy_rate <= 100
