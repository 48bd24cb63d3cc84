"""Stay events from a tddui-export record: one admission per stay, an exit when it ended."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from mappings.tddui import TdduiExportRecord
from reporting import Period, compute
from reporting.tddui import from_tddui_export

FIXTURE = Path(__file__).resolve().parents[1] / "resources" / "records" / "ppa-ehpad.json"


def _record(stays: list[dict[str, object]]) -> TdduiExportRecord:
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    data.pop("stay", None)
    data.pop("ppa", None)
    data["stays"] = stays
    return TdduiExportRecord.model_validate(data)


def test_stays_become_admissions_and_exits_at_local_noon() -> None:
    record = _record(
        [
            {"id": "S1", "start": "2024-01-10", "end": "2024-02-05", "encounter_class": "IMP"},
            {"id": "S2", "start": "2024-03-01", "encounter_class": "AMB"},
        ]
    )
    events = from_tddui_export(record, version=3)
    assert [(e.event_id, e.kind, e.at.date(), e.version) for e in events] == [
        ("tddui:S1:admission", "admission", date(2024, 1, 10), 3),
        ("tddui:S1:exit", "exit", date(2024, 2, 5), 3),
        ("tddui:S2:admission", "admission", date(2024, 3, 1), 3),
    ]
    assert events[0].at.utcoffset() == timedelta(hours=1) and events[0].at.hour == 12
    assert (events[0].accommodation, events[2].accommodation) == ("permanent", "day_care")
    assert events[1].exit_reason == "unknown"
    finess = record.essms.finess
    jan = compute(events, finess=finess, period=Period.parse("2024-01"))
    assert jan.totals.days_realised == 22 and jan.totals.people_accompanied == 1
    assert jan.totals.people_by_sex == {record.person.traits.sex.value: 1}
    feb = compute(events, finess=finess, period=Period.parse("2024-02"))
    assert (feb.totals.days_realised, feb.totals.exits) == (4, 1)
