"""Activity indicators of one ESSMS over one period, computed from its stay events (pure).

Every figure is defined in docs/indicators.md with its source and the judgements made. Inputs
are frozen values; nothing here reads a clock, a database or the network.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from types import MappingProxyType
from typing import Any, Final

from reporting.events import StayEvent, latest
from reporting.periods import Period
from reporting.timeline import Absence, Stay, Timeline, build

__all__ = [
    "GIR_POINTS",
    "LAYOUT_VERSION",
    "TOTAL",
    "Capacity",
    "Dataset",
    "Figures",
    "Rules",
    "compute",
    "compute_timeline",
    "daily_counts",
    "occupancy_by_period",
    "occupancy_series",
]

LAYOUT_VERSION: Final = "1.0"
TOTAL: Final = "all"
# AGGIR points per GIR used for the GMP (CASF annexe 2-1 / GMP rules).
GIR_POINTS: Final = MappingProxyType({1: 1000, 2: 840, 3: 660, 4: 420, 5: 250, 6: 70})
_ONE = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Capacity:
    """Places authorised/financed for one accommodation type, valid ``[valid_from, valid_to)``.

    ``opening_days``: days of opening per year (e.g. 210 for an IME semi-internat); None means
    open every day (hébergement permanent).
    """

    accommodation: str
    places: int
    valid_from: date = date(1900, 1, 1)
    valid_to: date | None = None
    opening_days: int | None = None

    def __post_init__(self) -> None:
        if self.places < 0:
            raise ValueError("places are >= 0")
        if self.opening_days is not None and not 1 <= self.opening_days <= 366:
            raise ValueError("opening days are 1 to 366 a year")

    def valid_on(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day < self.valid_to)


def _default_full_rate() -> Mapping[str, int]:
    return MappingProxyType({"hospitalisation": 3, "holiday": 3, "other": 3})


@dataclass(frozen=True)
class Rules:
    """The funder's counting rules, configurable per ESSMS (defaults: docs/indicators.md).

    ``full_rate_absence_days``: absence days billed at the full rate, per absence kind (CASF
    R314-204: past 72 hours the hébergement rate is reduced; 72 h = 3 nights). ``billing_stop_days``:
    absence day number after which nothing is billed any more (set by the département's RDAS or
    the contract, e.g. 21 or 35; absent = no stop). ``exit_day_counts``: accommodation types where
    the exit day is a day attended.
    """

    timezone: str = "Europe/Paris"
    full_rate_absence_days: Mapping[str, int] = field(default_factory=_default_full_rate)
    billing_stop_days: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    exit_day_counts: frozenset[str] = frozenset({"day_care", "pasa"})
    age_bands: tuple[int, ...] = (20, 60, 75, 85, 95)

    def as_json(self) -> dict[str, Any]:
        return {
            "timezone": self.timezone,
            "full_rate_absence_days": dict(sorted(self.full_rate_absence_days.items())),
            "billing_stop_days": dict(sorted(self.billing_stop_days.items())),
            "exit_day_counts": sorted(self.exit_day_counts),
            "age_bands": list(self.age_bands),
        }


@dataclass(slots=True)
class Figures:
    """The figures of one group (all accommodation types, or one) over the period."""

    places: int = 0
    theoretical_days: float = 0.0
    days_realised: int = 0
    days_present: int = 0
    days_absent: dict[str, int] = field(default_factory=dict)
    days_absent_full_rate: int = 0
    days_absent_reduced_rate: int = 0
    days_absent_not_billed: int = 0
    days_billable: int = 0
    occupancy_rate: float | None = None
    realisation_rate: float | None = None
    hospitalisation_rate: float | None = None
    people_accompanied: int = 0
    people_by_sex: dict[str, int] = field(default_factory=dict)
    people_by_age_band: dict[str, int] = field(default_factory=dict)
    people_present_at_end: int = 0
    entries: int = 0
    entries_by_provenance: dict[str, int] = field(default_factory=dict)
    exits: int = 0
    exits_by_reason: dict[str, int] = field(default_factory=dict)
    changes_in: int = 0
    changes_out: int = 0
    average_length_of_stay: float | None = None
    median_length_of_stay: float | None = None
    turnover_rate: float | None = None
    absences_started: dict[str, int] = field(default_factory=dict)
    gir_distribution: dict[str, int] = field(default_factory=dict)
    gmp_estimated: float | None = None


@dataclass(slots=True)
class Dataset:
    """The indicators of one ESSMS for one period: the exported unit (layout ``LAYOUT_VERSION``)."""

    finess: str
    period: Period
    rules: Rules
    totals: Figures
    by_accommodation: dict[str, Figures]
    events_used: int
    anomalies: int
    unit_transfers: int
    same_day_readmissions: int
    layout_version: str = LAYOUT_VERSION

    def as_json(self) -> dict[str, Any]:
        return {
            "layout_version": self.layout_version,
            "finess": self.finess,
            "period": {
                "code": self.period.code,
                "kind": self.period.kind,
                "start": self.period.start.isoformat(),
                "end": self.period.end.isoformat(),
            },
            "rules": self.rules.as_json(),
            "events_used": self.events_used,
            "anomalies": self.anomalies,
            "unit_transfers": self.unit_transfers,
            "same_day_readmissions": self.same_day_readmissions,
            "totals": asdict(self.totals),
            "by_accommodation": {k: asdict(v) for k, v in sorted(self.by_accommodation.items())},
        }


def _overlap(a0: date, a1: date | None, b0: date, b1: date | None) -> int:
    lo = max(a0, b0)
    hi = a1 if b1 is None else (b1 if a1 is None else min(a1, b1))
    if hi is None:
        raise ValueError("an open range needs a bounded one to overlap with")
    return max(0, (hi - lo).days)


def _rate(numerator: float, denominator: float) -> float | None:
    return round(100.0 * numerator / denominator, 2) if denominator > 0 else None


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _band(age: int | None, bands: Sequence[int]) -> str:
    if age is None:
        return "unknown"
    lower = 0
    for upper in bands:
        if age < upper:
            return f"{lower}-{upper - 1}"
        lower = upper
    return f"{lower}+"


def _inc(counter: dict[str, int], key: str, n: int = 1) -> None:
    counter[key] = counter.get(key, 0) + n


def _places(capacities: Sequence[Capacity], accommodation: str | None, day: date) -> tuple[int, float]:
    """(places, theoretical days) on one day for one type (None: every type)."""
    places, theoretical = 0, 0.0
    year_days = 366 if _leap(day.year) else 365
    for cap in capacities:
        if (accommodation is None or cap.accommodation == accommodation) and cap.valid_on(day):
            places += cap.places
            theoretical += cap.places * (cap.opening_days / year_days if cap.opening_days else 1.0)
    return places, theoretical


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _capacity_figures(fig: Figures, capacities: Sequence[Capacity], accommodation: str | None, period: Period) -> None:
    relevant = [c for c in capacities if accommodation is None or c.accommodation == accommodation]
    # piecewise constant: only evaluate where a capacity starts or stops
    cuts = sorted(
        {period.start, period.end}
        | {c.valid_from for c in relevant if period.start < c.valid_from < period.end}
        | {c.valid_to for c in relevant if c.valid_to is not None and period.start < c.valid_to < period.end}
    )
    theoretical = 0.0
    for lo, hi in itertools.pairwise(cuts):
        # per-day share depends on the year's length: split at a new year inside the piece
        day = lo
        while day < hi:
            stop = min(hi, date(day.year + 1, 1, 1))
            _, per_day = _places(relevant, None, day)
            theoretical += per_day * (stop - day).days
            day = stop
    fig.theoretical_days = round(theoretical, 2)
    fig.places = _places(relevant, None, period.end - _ONE)[0]


class _Acc:
    """Accumulates figures for one group, including who was there."""

    def __init__(self) -> None:
        self.fig = Figures()
        self.people: set[str] = set()
        self.present_end: set[str] = set()
        self.los: list[int] = []


def compute_timeline(events: Iterable[StayEvent], rules: Rules) -> Timeline:
    """The timeline of the latest versions of ``events``."""
    return build(latest(events), timezone=rules.timezone, exit_day_counts=rules.exit_day_counts)


def compute(
    events: Iterable[StayEvent],
    *,
    finess: str,
    period: Period,
    capacities: Sequence[Capacity] = (),
    rules: Rules | None = None,
    timeline: Timeline | None = None,
) -> Dataset:
    """The indicators of ``finess`` over ``period`` from every version of its stay events.

    Pass ``timeline`` (from :func:`compute_timeline`) to compute several periods from one pass.
    """
    rules = rules or Rules()
    if timeline is None:
        evs = [e for e in events if e.finess == finess]
        tl = compute_timeline(evs, rules)
    else:
        tl = timeline
    groups: dict[str, _Acc] = {TOTAL: _Acc()}
    last_day = period.end - _ONE

    def group(acc: str) -> _Acc:
        g = groups.get(acc)
        if g is None:
            g = groups[acc] = _Acc()
        return g

    for stay in tl.stays:
        if stay.finess != finess:
            continue
        _stay_figures(stay, period, rules, groups[TOTAL], group, last_day)
    for name, g in groups.items():
        _finish(g, tl, capacities, None if name == TOTAL else name, period, rules, last_day)
    for cap in capacities:  # a type with places and no one in it still shows
        group(cap.accommodation)
        if not groups[cap.accommodation].fig.theoretical_days and not groups[cap.accommodation].people:
            _finish(groups[cap.accommodation], tl, capacities, cap.accommodation, period, rules, last_day)
    return Dataset(
        finess=finess,
        period=period,
        rules=rules,
        totals=groups[TOTAL].fig,
        by_accommodation={k: g.fig for k, g in groups.items() if k != TOTAL},
        events_used=tl.event_counts.get(finess, 0),
        anomalies=len(tl.anomalies),
        unit_transfers=sum(1 for day, f in tl.transfers if f == finess and period.start <= day < period.end),
        same_day_readmissions=sum(1 for day in tl.same_day_readmissions if period.start <= day < period.end),
    )


def _stay_figures(stay: Stay, period: Period, rules: Rules, total: _Acc, group: Any, last_day: date) -> None:
    p0, p1 = period.start, period.end
    if stay.entry >= p1 or (stay.end is not None and stay.end <= p0 and (stay.exit is None or stay.exit < p0)):
        return  # nothing of this stay (entry, exit, move, absence, day) falls in the period
    first_acc = stay.segments[0].accommodation
    if p0 <= stay.entry < p1:
        for g in (total, group(first_acc)):
            g.fig.entries += 1
            _inc(g.fig.entries_by_provenance, stay.provenance or "unknown")
    if stay.exit is not None and p0 <= stay.exit < p1:
        last_acc = stay.segments[-1].accommodation
        length = (stay.exit - stay.entry).days
        for g in (total, group(last_acc)):
            g.fig.exits += 1
            _inc(g.fig.exits_by_reason, stay.exit_reason or "unknown")
            g.los.append(length)
    for before, after in zip(stay.segments, stay.segments[1:], strict=False):
        if before.accommodation != after.accommodation and p0 <= after.start < p1:
            group(before.accommodation).fig.changes_out += 1
            group(after.accommodation).fig.changes_in += 1
    absences = _absences_in(stay, p0, p1)
    for absence in absences:
        if p0 <= absence.start < p1:
            for g in (total, group(_acc_on(stay, absence.start))):
                _inc(g.fig.absences_started, absence.kind)
    for seg in stay.segments:
        days = _overlap(seg.start, seg.end, p0, p1)
        if days == 0:
            continue
        g = group(seg.accommodation)
        lo, hi = max(seg.start, p0), (p1 if seg.end is None else min(seg.end, p1))
        absent_here = not_billed_here = 0
        for absence in absences:
            n = _overlap(absence.start, absence.end, lo, hi)
            if n == 0:
                continue
            # absence day k (1-based from the absence's first night, numbered across period
            # boundaries) is billed at the full rate if k <= full, not billed if k > stop, at the
            # reduced rate otherwise
            full = rules.full_rate_absence_days.get(absence.kind, 0)
            stop = rules.billing_stop_days.get(absence.kind)
            full_end = absence.start + timedelta(days=full)
            if absence.end is not None:
                full_end = min(full_end, absence.end)
            n_full = _overlap(absence.start, full_end, lo, hi)
            n_stop = 0
            if stop is not None:
                n_stop = _overlap(absence.start + timedelta(days=max(stop, full)), absence.end, lo, hi)
            absent_here += n
            not_billed_here += n_stop
            for target in (total, g):
                _inc(target.fig.days_absent, absence.kind, n)
                target.fig.days_absent_full_rate += n_full
                target.fig.days_absent_reduced_rate += n - n_full - n_stop
                target.fig.days_absent_not_billed += n_stop
        for target in (total, g):
            target.fig.days_realised += days
            target.fig.days_present += days - absent_here
            target.fig.days_billable += days - not_billed_here
            target.people.add(stay.person_ref)
    if stay.entry <= last_day and (stay.end is None or stay.end > last_day):
        here = _acc_on(stay, last_day)
        if not any(a.start <= last_day and (a.end is None or a.end > last_day) for a in stay.absences):
            total.present_end.add(stay.person_ref)
            group(here).present_end.add(stay.person_ref)


def _absences_in(stay: Stay, lo: date, hi: date) -> list[Absence]:
    """The stay's absences overlapping ``[lo, hi)`` (they are in order and do not overlap)."""
    absences = stay.absences
    if len(absences) < 8:
        return [a for a in absences if a.start < hi and (a.end is None or a.end > lo)]
    # the first absence ending after lo: ends are increasing, like starts
    i = bisect.bisect_right(absences, lo, key=lambda a: a.start) - 1
    i = max(i, 0)
    out = []
    for a in absences[i:]:
        if a.start >= hi:
            break
        if a.end is None or a.end > lo:
            out.append(a)
    return out


def _acc_on(stay: Stay, day: date) -> str:
    for seg in stay.segments:
        if seg.start <= day and (seg.end is None or day < seg.end):
            return seg.accommodation
    return stay.segments[-1].accommodation if day >= stay.segments[-1].start else stay.segments[0].accommodation


def _finish(
    g: _Acc,
    tl: Timeline,
    capacities: Sequence[Capacity],
    accommodation: str | None,
    period: Period,
    rules: Rules,
    last_day: date,
) -> None:
    fig = g.fig
    _capacity_figures(fig, capacities, accommodation, period)
    fig.occupancy_rate = _rate(fig.days_billable, fig.theoretical_days)
    fig.realisation_rate = _rate(fig.days_realised, fig.theoretical_days)
    fig.hospitalisation_rate = _rate(fig.days_absent.get("hospitalisation", 0), fig.days_realised)
    fig.people_accompanied = len(g.people)
    fig.people_present_at_end = len(g.present_end)
    sexes: Counter[str] = Counter()
    bands: Counter[str] = Counter()
    for ref in g.people:
        person = tl.persons.get(ref)
        sexes[(person.sex if person and person.sex else "U")] += 1
        birth = person.birth_date if person else None
        bands[_band(_age(birth, last_day) if birth else None, rules.age_bands)] += 1
    fig.people_by_sex = dict(sorted(sexes.items()))
    fig.people_by_age_band = dict(sorted(bands.items()))
    girs: Counter[str] = Counter()
    points: list[int] = []
    for ref in g.present_end:
        person = tl.persons.get(ref)
        gir = person.gir_on(last_day) if person else None
        girs[f"GIR{gir}" if gir else "unknown"] += 1
        if gir:
            points.append(GIR_POINTS[gir])
    fig.gir_distribution = dict(sorted(girs.items()))
    fig.gmp_estimated = round(sum(points) / len(points), 1) if points else None
    if g.los:
        fig.average_length_of_stay = round(sum(g.los) / len(g.los), 2)
        fig.median_length_of_stay = float(statistics.median(g.los))
    fig.turnover_rate = round(fig.entries / fig.places, 4) if fig.places else None
    fig.days_absent = dict(sorted(fig.days_absent.items()))
    fig.absences_started = dict(sorted(fig.absences_started.items()))
    fig.exits_by_reason = dict(sorted(fig.exits_by_reason.items()))
    fig.entries_by_provenance = dict(sorted(fig.entries_by_provenance.items()))


def daily_counts(
    tl: Timeline, *, finess: str, start: date, end: date, accommodation: str | None = None
) -> list[tuple[date, int, int]]:
    """Per day in ``[start, end)``: (day, people in a stay, people present), by difference arrays."""
    n = (end - start).days
    in_stay = [0] * (n + 1)
    absent = [0] * (n + 1)

    def add(arr: list[int], lo: date, hi: date | None) -> None:
        a = max((lo - start).days, 0)
        b = n if hi is None else min((hi - start).days, n)
        if a < b:
            arr[a] += 1
            arr[b] -= 1

    for stay in tl.stays:
        if stay.finess != finess:
            continue
        for seg in stay.segments:
            if accommodation is not None and seg.accommodation != accommodation:
                continue
            add(in_stay, seg.start, seg.end)
            for a in stay.absences:
                lo = max(a.start, seg.start)
                hi = seg.end if a.end is None else (a.end if seg.end is None else min(a.end, seg.end))
                if hi is None or lo < hi:
                    add(absent, lo, hi)
    out: list[tuple[date, int, int]] = []
    s = ab = 0
    for i in range(n):
        s += in_stay[i]
        ab += absent[i]
        out.append((start + timedelta(days=i), s, s - ab))
    return out


def occupancy_series(
    tl: Timeline,
    *,
    finess: str,
    start: date,
    end: date,
    capacities: Sequence[Capacity] = (),
    accommodation: str | None = None,
) -> list[dict[str, Any]]:
    """Per day: people in a stay, present, places, occupancy (in-stay / places, %) — for a chart."""
    rows = []
    for day, in_stay, present in daily_counts(tl, finess=finess, start=start, end=end, accommodation=accommodation):
        places = _places(capacities, accommodation, day)[0]
        rows.append(
            {
                "date": day.isoformat(),
                "in_stay": in_stay,
                "present": present,
                "places": places,
                "occupancy_rate": _rate(in_stay, places),
            }
        )
    return rows


def occupancy_by_period(series: Sequence[Mapping[str, Any]], periods: Sequence[Period]) -> list[dict[str, Any]]:
    """The daily series of :func:`occupancy_series` summed over each period (for a chart by month
    or quarter): days in a stay, place-days, and their ratio in % (None without places) — the
    mean of the daily occupancy weighted by places, the same computation as the daily series."""
    out = []
    for period in periods:
        in_stay = place_days = 0
        for row in series:
            day = date.fromisoformat(str(row["date"]))
            if period.start <= day < period.end:
                in_stay += int(row["in_stay"])
                place_days += int(row["places"])
        out.append(
            {
                "period": period.code,
                "in_stay_days": in_stay,
                "place_days": place_days,
                "occupancy_rate": _rate(in_stay, place_days),
            }
        )
    return out
