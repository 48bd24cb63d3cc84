"""The CSV and JSON layouts 1.0: header, one row per figure, empty when undefined, round trip."""

from __future__ import annotations

import csv
import io
import json

from reporting import Capacity, Period, compute
from reporting.events import from_json, to_json
from reporting.export import CSV_COLUMNS, to_csv, to_json_bytes
from tests.reporting.helpers import FINESS, d, ev


def _datasets() -> list:  # type: ignore[type-arg]
    events = [
        ev("admission", "2026-01-10T14:00", sex="F", birth_date=d("1940-01-01"), gir=2, provenance="home"),
        ev("exit", "2026-01-20T10:00", exit_reason="death"),
    ]
    caps = [Capacity("permanent", 10)]
    return [compute(events, finess=FINESS, period=Period.parse(p), capacities=caps) for p in ("2026-01", "2026-02")]


def test_csv_is_long_with_one_row_per_figure_and_breakdown() -> None:
    text = to_csv(_datasets())
    assert text.startswith(",".join(CSV_COLUMNS) + "\r\n")
    rows = list(csv.DictReader(io.StringIO(text)))
    jan = {(r["accommodation"], r["indicator"], r["breakdown"]): r["value"] for r in rows if r["period"] == "2026-01"}
    assert jan[("all", "days_realised", "")] == "10"
    assert jan[("all", "exits_by_reason", "death")] == "1"
    assert jan[("all", "people_by_age_band", "85-94")] == "1"
    assert jan[("all", "occupancy_rate", "")] == "3.23"  # 10 / 310
    assert jan[("permanent", "average_length_of_stay", "")] == "10"
    feb = {(r["accommodation"], r["indicator"]): r["value"] for r in rows if r["period"] == "2026-02"}
    assert feb[("all", "average_length_of_stay")] == ""  # undefined: no exit
    assert feb[("all", "turnover_rate")] == "0"
    assert {r["layout_version"] for r in rows} == {"1.0"} and {r["finess"] for r in rows} == {FINESS}


def test_json_layout_names_its_version_and_has_no_personal_data() -> None:
    body = to_json_bytes(_datasets())
    doc = json.loads(body)
    assert doc["layout_version"] == "1.0" and [x["period"]["code"] for x in doc["datasets"]] == ["2026-01", "2026-02"]
    jan = doc["datasets"][0]
    assert jan["period"]["end"] == "2026-02-01" and jan["rules"]["full_rate_absence_days"]["hospitalisation"] == 3
    assert set(jan["by_accommodation"]) == {"permanent"}
    assert b"p1" not in body and b"1940" not in body


def test_event_json_round_trip() -> None:
    e = ev("admission", "2026-03-29T00:30:00+01:00", sex="M", birth_date=d("1950-02-03"), gir=4, unit="A")
    assert from_json(json.loads(json.dumps(to_json(e)))) == e
