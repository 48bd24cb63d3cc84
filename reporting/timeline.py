"""From events to stays: per person, the days in the ESSMS split by accommodation type and unit,
and the absences. Days are *local calendar days* (the ESSMS's time zone, Europe/Paris by default),
so a 23- or 25-hour day at a DST change is one day like any other.

Conventions (docs/indicators.md, "Counting days"):

* a stay covers ``[entry, end)``: the entry day counts, the exit day does not (a day is a night
  spent, the hébergement billing convention), except for the accommodation types whose exit day
  counts (day care, PASA: a day attended) and for a stay that starts and ends on the same day,
  which counts one day;
* an absence covers the nights away: ``[left, returned)``; leaving and coming back the same day is
  no absence day;
* an exit followed by a re-admission of the same person in the same ESSMS on the same day is one
  continuous stay (no exit, no entry; a change of accommodation type or unit if they differ),
  counted in ``same_day_readmissions``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from reporting.events import StayEvent

__all__ = ["Absence", "Anomaly", "Person", "Segment", "Stay", "Timeline", "build"]

_ONE = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Segment:
    """Days ``[start, end)`` of a stay in one accommodation type and unit (``end`` None: open)."""

    start: date
    end: date | None
    accommodation: str
    unit: str | None


@dataclass(frozen=True, slots=True)
class Absence:
    """Nights away ``[start, end)`` (``end`` None: not back yet) of one kind."""

    start: date
    end: date | None
    kind: str


@dataclass(slots=True)
class Stay:
    """One stay (séjour / accompagnement) of a person in an ESSMS."""

    person_ref: str
    finess: str
    entry: date
    provenance: str | None
    segments: list[Segment] = field(default_factory=list)
    absences: list[Absence] = field(default_factory=list)
    exit: date | None = None
    exit_reason: str | None = None
    end: date | None = None  # exclusive end of the days counted (None while open)


@dataclass(slots=True)
class Person:
    """What the indicators need of a person: sex, birth date, GIR over time."""

    person_ref: str
    sex: str | None = None
    birth_date: date | None = None
    girs: list[tuple[date, int]] = field(default_factory=list)

    def gir_on(self, day: date) -> int | None:
        """The latest GIR assessed on or before ``day``."""
        value = None
        for when, gir in self.girs:
            if when <= day:
                value = gir
        return value


@dataclass(frozen=True, slots=True)
class Anomaly:
    """An event the timeline could not place (no personal data: the event id and why)."""

    event_id: str
    reason: str


@dataclass(slots=True)
class Timeline:
    stays: list[Stay]
    persons: dict[str, Person]
    anomalies: list[Anomaly]
    same_day_readmissions: list[date]
    transfers: list[tuple[date, str]]  # (day, finess)
    event_counts: dict[str, int] = field(default_factory=dict)  # events used, per FINESS


def build(
    events: Sequence[StayEvent], *, timezone: str = "Europe/Paris", exit_day_counts: Iterable[str] = ()
) -> Timeline:
    """Stays from events that are already the latest versions, in time order (see ``latest``)."""
    tz = ZoneInfo(timezone)
    counts_exit = frozenset(exit_day_counts)
    persons: dict[str, Person] = {}
    open_stays: dict[tuple[str, str], Stay] = {}
    closed_last: dict[tuple[str, str], Stay] = {}
    stays: list[Stay] = []
    anomalies: list[Anomaly] = []
    readmissions: list[date] = []
    transfers: list[tuple[date, str]] = []

    def close_segment(stay: Stay, day: date) -> Segment:
        last = stay.segments[-1]
        stay.segments[-1] = Segment(last.start, day, last.accommodation, last.unit)
        return last

    def move(stay: Stay, day: date, accommodation: str, unit: str | None) -> None:
        last = stay.segments[-1]
        if last.accommodation == accommodation and last.unit == unit:
            return
        if last.start == day:  # a second move the same day replaces the first
            stay.segments[-1] = Segment(day, None, accommodation, unit)
        else:
            close_segment(stay, day)
            stay.segments.append(Segment(day, None, accommodation, unit))

    def end_absence(stay: Stay, day: date) -> None:
        if stay.absences and stay.absences[-1].end is None:
            a = stay.absences[-1]
            stay.absences[-1] = Absence(a.start, max(day, a.start), a.kind)

    event_counts: dict[str, int] = {}
    for ev in events:
        event_counts[ev.finess] = event_counts.get(ev.finess, 0) + 1
        day = ev.at.astimezone(tz).date()
        person = persons.setdefault(ev.person_ref, Person(ev.person_ref))
        if ev.sex is not None:
            person.sex = ev.sex
        if ev.birth_date is not None:
            person.birth_date = ev.birth_date
        if ev.gir is not None:
            person.girs.append((day, ev.gir))
        key = (ev.person_ref, ev.finess)
        stay = open_stays.get(key)
        if ev.kind == "admission":
            assert ev.accommodation is not None
            if stay is not None:
                anomalies.append(Anomaly(ev.event_id, "admission while a stay is open"))
                continue
            previous = closed_last.get(key)
            if previous is not None and previous.exit == day:
                # Same-day re-admission: the stay goes on.
                readmissions.append(day)
                previous.exit = previous.exit_reason = previous.end = None
                last = previous.segments[-1]
                previous.segments[-1] = Segment(last.start, None, last.accommodation, last.unit)
                move(previous, day, ev.accommodation, ev.unit)
                open_stays[key] = previous
                del closed_last[key]
                continue
            stay = Stay(ev.person_ref, ev.finess, day, ev.provenance)
            stay.segments.append(Segment(day, None, ev.accommodation, ev.unit))
            stays.append(stay)
            open_stays[key] = stay
            continue
        if stay is None:
            anomalies.append(Anomaly(ev.event_id, f"{ev.kind} outside a stay"))
            continue
        if ev.kind == "exit":
            end_absence(stay, day)
            last_acc = stay.segments[-1].accommodation
            stay.exit = day
            stay.exit_reason = ev.exit_reason or "unknown"
            stay.end = day + _ONE if (day == stay.entry or last_acc in counts_exit) else day
            close_segment(stay, stay.end)
            # a segment opened on the exit day (moved, then left) holds no day: drop it
            if len(stay.segments) > 1 and stay.segments[-1].start >= stay.end:
                stay.segments.pop()
                close_segment(stay, stay.end)
            if stay.absences and stay.absences[-1].start >= stay.end:
                stay.absences.pop()
            del open_stays[key]
            closed_last[key] = stay
        elif ev.kind == "transfer":
            if stay.segments[-1].unit != ev.unit:
                transfers.append((day, ev.finess))
            move(stay, day, stay.segments[-1].accommodation, ev.unit)
        elif ev.kind == "accommodation_change":
            assert ev.accommodation is not None
            move(stay, day, ev.accommodation, ev.unit if ev.unit is not None else stay.segments[-1].unit)
        elif ev.kind == "absence_start":
            assert ev.absence_kind is not None
            if stay.absences and stay.absences[-1].end is None:
                anomalies.append(Anomaly(ev.event_id, "absence start during an absence"))
                continue
            stay.absences.append(Absence(day, None, ev.absence_kind))
        elif ev.kind == "absence_end":
            if not stay.absences or stay.absences[-1].end is not None:
                anomalies.append(Anomaly(ev.event_id, "absence end without a start"))
                continue
            end_absence(stay, day)
    # zero-length absences (left and came back the same day) hold no night
    for stay in stays:
        stay.absences = [a for a in stay.absences if a.end is None or a.end > a.start]
    return Timeline(stays, persons, anomalies, readmissions, transfers, event_counts)
