"""Small builders for hand-computed fixtures: one line per event, local times with offsets."""

from __future__ import annotations

import itertools
from datetime import date, datetime
from typing import Any

from reporting import StayEvent

FINESS = "750000001"
_ids = itertools.count(1)


def ev(kind: str, at: str, person: str = "p1", **kw: Any) -> StayEvent:
    """An event at ``at`` (ISO 8601; a bare date-time is read as Paris winter time +01:00)."""
    when = datetime.fromisoformat(at if ("+" in at[10:] or at.endswith("Z")) else at + "+01:00")
    kw.setdefault("event_id", f"e{next(_ids)}")
    if kind in ("admission",) and "accommodation" not in kw:
        kw["accommodation"] = "permanent"
    if kind == "absence_start" and "absence_kind" not in kw:
        kw["absence_kind"] = "hospitalisation"
    return StayEvent(kind=kind, person_ref=person, finess=kw.pop("finess", FINESS), at=when, **kw)


def d(text: str) -> date:
    return date.fromisoformat(text)
