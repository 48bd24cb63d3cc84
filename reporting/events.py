"""Stay events: what happened to a person's stay in an ESSMS, as the indicators read it.

An event is a fact with a timestamp (timezone-aware): an admission, an exit (with its reason), a
transfer between units, a change of accommodation type, the start or end of an absence, or a
dependency assessment (GIR). Events are *versioned*: the same ``event_id`` sent again with a higher
``version`` replaces the earlier one (a correction), ``cancelled=True`` withdraws it. The
indicators are a pure function of the latest version of every event, so a late or corrected
event recomputes whatever period it touches (:func:`affected_range` says which).

:func:`from_inbound` is the seam for inbound sources (HL7 v2 ADT): it turns an
:class:`connectors.base.InboundEvent` about a matched resident into a stay event.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, Protocol

__all__ = [
    "ABSENCE_KINDS",
    "ACCOMMODATIONS",
    "EVENT_KINDS",
    "EXIT_REASONS",
    "SEXES",
    "InboundLike",
    "InvalidEvent",
    "NotAStayEvent",
    "StayEvent",
    "affected_range",
    "from_inbound",
    "from_json",
    "latest",
    "to_json",
]

EVENT_KINDS: Final = (
    "admission",
    "exit",
    "transfer",
    "accommodation_change",
    "absence_start",
    "absence_end",
    "assessment",
)
# Modalités d'accueil. Free codes matching _CODE_RE are accepted too (an ESSMS may have others);
# these are the ones the documentation describes.
ACCOMMODATIONS: Final = (
    "permanent",  # hébergement permanent
    "temporary",  # hébergement temporaire
    "day_care",  # accueil de jour
    "night_care",  # accueil de nuit
    "pasa",  # pôle d'activités et de soins adaptés
    "uhr",  # unité d'hébergement renforcée
    "semi_boarding",  # semi-internat (IME)
    "boarding",  # internat
    "home_service",  # service à domicile (SSIAD, SESSAD)
)
EXIT_REASONS: Final = ("death", "home", "other_essms", "hospital", "other", "unknown")
ABSENCE_KINDS: Final = ("hospitalisation", "holiday", "other")
SEXES: Final = ("F", "M", "U")

_CODE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_FINESS_RE = re.compile(r"^[0-9A-B]{9}$")

# Order of events at the same instant: a stay opens before anything happens in it and closes last.
_ORDER: Final = {
    "admission": 0,
    "absence_end": 1,
    "transfer": 2,
    "accommodation_change": 3,
    "assessment": 4,
    "absence_start": 5,
    "exit": 6,
}


class InvalidEvent(ValueError):
    """An inconsistent stay event; ``field`` names the offending field (for a JSON pointer)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class StayEvent:
    """One stay event (latest version wins). Raise ``ValueError`` on an inconsistent event.

    ``accommodation`` is required on an admission and a change of accommodation type; ``unit`` is
    required on a transfer; ``absence_kind`` on an absence start; ``gir`` (1-6) on an assessment.
    ``sex``, ``birth_date`` and ``gir`` may accompany an admission. Nothing here is sent out:
    datasets carry counts and age bands, never these values.
    """

    event_id: str
    kind: str
    person_ref: str
    finess: str
    at: datetime
    version: int = 1
    cancelled: bool = False
    accommodation: str | None = None
    unit: str | None = None
    exit_reason: str | None = None
    absence_kind: str | None = None
    provenance: str | None = None
    sex: str | None = None
    birth_date: date | None = None
    gir: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise InvalidEvent("kind", f"unknown event kind (one of {', '.join(EVENT_KINDS)})")
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise InvalidEvent("occurred_at", "the event timestamp needs a UTC offset")
        if not _FINESS_RE.match(self.finess):
            raise InvalidEvent("essms_finess", "the FINESS is 9 characters")
        if self.version < 1:
            raise InvalidEvent("version", "the version starts at 1")
        if self.cancelled:
            return
        if self.kind in ("admission", "accommodation_change") and not self.accommodation:
            raise InvalidEvent("accommodation", f"a {self.kind} names the accommodation type")
        if self.accommodation is not None and not _CODE_RE.match(self.accommodation):
            raise InvalidEvent("accommodation", "an accommodation type is a lowercase code")
        if self.kind == "transfer" and not self.unit:
            raise InvalidEvent("unit", "a transfer names the unit")
        if self.kind == "absence_start" and self.absence_kind not in ABSENCE_KINDS:
            raise InvalidEvent("absence_kind", f"an absence start has a kind among {', '.join(ABSENCE_KINDS)}")
        if self.kind == "exit" and self.exit_reason is not None and self.exit_reason not in EXIT_REASONS:
            raise InvalidEvent("exit_reason", f"an exit reason is one of {', '.join(EXIT_REASONS)}")
        if self.kind == "assessment" and self.gir is None:
            raise InvalidEvent("gir", "an assessment gives a GIR")
        if self.gir is not None and not 1 <= self.gir <= 6:
            raise InvalidEvent("gir", "a GIR is 1 to 6")
        if self.sex is not None and self.sex not in SEXES:
            raise InvalidEvent("sex", f"sex is one of {', '.join(SEXES)}")

    @property
    def sort_key(self) -> tuple[datetime, int, str]:
        return (self.at, _ORDER[self.kind], self.event_id)


def _sort_key(e: StayEvent) -> tuple[datetime, int, str]:
    return (e.at, _ORDER[e.kind], e.event_id)


def latest(events: Iterable[StayEvent]) -> list[StayEvent]:
    """The latest version of each event (by ``event_id``), cancelled ones dropped, in time order.

    Two versions with the same number: the one seen last wins (storage gives them in arrival order).
    """
    best: dict[str, StayEvent] = {}
    for event in events:
        known = best.get(event.event_id)
        if known is None or event.version >= known.version:
            best[event.event_id] = event
    kept = [e for e in best.values() if not e.cancelled]
    kept.sort(key=_sort_key)
    return kept


def affected_range(
    old: StayEvent | None, new: StayEvent, person_events: Iterable[StayEvent]
) -> tuple[datetime, datetime | None]:
    """The time range whose figures a new or corrected event may change: ``[start, end)``.

    It starts at the earlier of the old and new timestamps and ends at the person's next event
    after the later one (``None``: open, the change holds until today). Periods overlapping this
    range are the ones to recompute, and to send again if they were already reported.
    """
    start = min(new.at, old.at) if old is not None else new.at
    later = max(new.at, old.at) if old is not None else new.at
    if old is not None and (old.birth_date != new.birth_date or old.sex != new.sex):
        return start, None  # identity traits change every period the person appears in
    following = [
        e.at
        for e in person_events
        if e.event_id != new.event_id and e.person_ref == new.person_ref and e.finess == new.finess and e.at > later
    ]
    return start, min(following) if following else None


class NotAStayEvent(ValueError):
    """An inbound event that is not a movement of a matched resident (ignored, with the reason)."""


class InboundLike(Protocol):
    """The shape of :class:`connectors.base.InboundEvent` that :func:`from_inbound` reads."""

    @property
    def event_type(self) -> str: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...
    @property
    def essms_finess(self) -> str: ...
    @property
    def person_ref(self) -> str | None: ...
    @property
    def series(self) -> str | None: ...


# ADT movement (last segment of event_type, dui-gateway.adt/1 of the hl7v2 branch) -> stay event
# kind. The ADT feed is a hospital's, about the ESSMS's residents: A01 opens a hospitalisation
# (an absence of the ESSMS), A03 closes it. A02 (a move inside the hospital), A21/A22 (a leave
# from the hospital) do not change the ESSMS stay: not stay events (docs/indicators.md).
_INBOUND_KINDS: Final = {
    "hospitalised": "absence_start",
    "discharged": "absence_end",
}
_PARIS = "Europe/Paris"


def _inbound_time(raw: object, field: str) -> datetime:
    if not isinstance(raw, str):
        raise NotAStayEvent(f"payload.{field} is missing")
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise NotAStayEvent(f"payload.{field} is not ISO 8601") from None
    if at.tzinfo is None:  # HL7 DTM in France: local time (the hl7v2 reader drops the offset)
        from zoneinfo import ZoneInfo

        at = at.replace(tzinfo=ZoneInfo(_PARIS))
    return at


def from_inbound(event: InboundLike) -> StayEvent:
    """Turn an inbound ADT movement about a matched resident into a stay event.

    ``event_type`` ``adt.hospitalised`` (A01) starts an absence of kind hospitalisation,
    ``adt.discharged`` (A03) ends it; ``adt.cancelled`` whose ``payload.cancels.event_type`` is
    one of those withdraws it. ``payload.occurred_at`` is the movement's time (ISO 8601; without
    an offset it is Paris local time, as HL7 times are in France). The event id is
    ``inbound:<series>`` (the ZBE movement), so a resend is idempotent; the version is
    ``payload.version`` when given, else the message's ``recorded_at`` in epoch seconds (a later
    update or cancellation of the same movement wins). Raises :class:`NotAStayEvent` otherwise.
    """
    payload = event.payload
    movement = event.event_type.rsplit(".", 1)[-1]
    cancelled = movement == "cancelled"
    if cancelled:
        cancels = payload.get("cancels")
        target = cancels.get("event_type") if isinstance(cancels, Mapping) else None
        movement = str(target or "").rsplit(".", 1)[-1]
    kind = _INBOUND_KINDS.get(movement)
    if kind is None:
        raise NotAStayEvent(f"event type {event.event_type!r} is not a stay movement")
    if not event.person_ref:
        raise NotAStayEvent("the inbound event is not matched to a resident")
    series = event.series or payload.get("movement_id")
    if not isinstance(series, str) or not series:
        raise NotAStayEvent("the inbound event has no series (movement identifier)")
    at = _inbound_time(payload.get("occurred_at"), "occurred_at")
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        recorded = payload.get("recorded_at")
        version = int(_inbound_time(recorded, "recorded_at").timestamp()) if isinstance(recorded, str) else 1
        version = max(version, 1)
    try:
        return StayEvent(
            event_id=f"inbound:{series}"[:128],
            kind=kind,
            person_ref=event.person_ref,
            finess=event.essms_finess,
            at=at,
            version=version,
            cancelled=cancelled or payload.get("cancelled") is True,
            absence_kind="hospitalisation" if kind == "absence_start" else None,
        )
    except InvalidEvent as exc:
        raise NotAStayEvent(str(exc)) from None


def to_json(event: StayEvent) -> dict[str, Any]:
    """The event as JSON (what is stored, encrypted): only the fields that are set."""
    out: dict[str, Any] = {
        "event_id": event.event_id,
        "kind": event.kind,
        "person_ref": event.person_ref,
        "finess": event.finess,
        "at": event.at.isoformat(),
        "version": event.version,
    }
    if event.cancelled:
        out["cancelled"] = True
    for name in ("accommodation", "unit", "exit_reason", "absence_kind", "provenance", "sex", "gir"):
        value = getattr(event, name)
        if value is not None:
            out[name] = value
    if event.birth_date is not None:
        out["birth_date"] = event.birth_date.isoformat()
    return out


def from_json(data: Mapping[str, Any]) -> StayEvent:
    """The inverse of :func:`to_json` (``ValueError`` on an inconsistent event)."""
    kw = dict(data)
    kw["at"] = datetime.fromisoformat(kw["at"])
    if "birth_date" in kw:
        kw["birth_date"] = date.fromisoformat(kw["birth_date"])
    return StayEvent(**kw)
