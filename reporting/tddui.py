"""Stay events derived from a ``tddui-export`` record (its stays), for ESSMS whose DUI sends
TDDUI exports rather than stay events.

A TDDUI stay gives only dates (entry, exit) and an encounter class, no time, no absence, no
exit reason: each stay becomes an admission at noon local time on its start date (noon keeps the
day whatever the offset) and, when it has ended, an exit at noon on its end date (reason
``unknown``). Event ids ``tddui:<stay id>:admission|exit``; pass the export's version so a newer
export corrects an older one. Absences, unit moves and exit reasons need stay events proper.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Final
from zoneinfo import ZoneInfo

from mappings.tddui import TdduiExportRecord
from reporting.events import StayEvent

__all__ = ["ENCOUNTER_CLASS_ACCOMMODATION", "from_tddui_export"]

# HL7 ActCode encounter class of tddui-encounter-sejour -> accommodation type
ENCOUNTER_CLASS_ACCOMMODATION: Final = {
    "IMP": "permanent",  # hébergement (temporary stays are not told apart by the class)
    "AMB": "day_care",  # accueil de jour
    "HH": "home_service",  # à domicile
    "SS": "day_care",  # short stay (séance)
    "FLD": "home_service",  # field
    "VR": "home_service",  # virtual
}


def _noon(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(12), tz)


def from_tddui_export(
    record: TdduiExportRecord, *, version: int = 1, timezone: str = "Europe/Paris"
) -> list[StayEvent]:
    """The stay events of the export's stays (see the module's docstring for what is lost)."""
    tz = ZoneInfo(timezone)
    person = record.person
    finess = record.essms.finess
    out: list[StayEvent] = []
    for stay in record.stays:
        out.append(
            StayEvent(
                event_id=f"tddui:{stay.id}:admission",
                kind="admission",
                person_ref=person.local_id,
                finess=finess,
                at=_noon(stay.start, tz),
                version=version,
                accommodation=ENCOUNTER_CLASS_ACCOMMODATION[stay.encounter_class],
                sex=str(person.traits.sex.value),
                birth_date=person.traits.birth_date,
            )
        )
        if stay.end is not None:
            out.append(
                StayEvent(
                    event_id=f"tddui:{stay.id}:exit",
                    kind="exit",
                    person_ref=person.local_id,
                    finess=finess,
                    at=_noon(stay.end, tz),
                    version=version,
                    exit_reason="unknown",
                )
            )
    return out
