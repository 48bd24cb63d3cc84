"""``dui-gateway indicators`` against a real database, and offline from an events file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from gateway.audit import iter_events
from gateway.indicators_cli import app
from gateway.security.crypto import KeyRing
from gateway.services import stays
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from reporting.events import to_json
from tests.reporting.helpers import ev


def test_export_csv_and_json_from_the_database_audited(gateway_env: str, tenant: Any, master_keys_spec: str) -> None:
    engine = make_engine(gateway_env)
    factory = make_sessionmaker(engine)
    ring = KeyRing.parse(master_keys_spec)
    try:
        with session_scope(factory) as session:
            for e in (
                ev("admission", "2026-01-10T14:00", finess=tenant.finess, accommodation="temporary"),
                ev("accommodation_change", "2026-01-20T09:00", finess=tenant.finess, accommodation="permanent"),
            ):
                stays.record_event(session, tenant_id=tenant.id, event=e, keyring=ring, actor="test")
        runner = CliRunner()
        result = runner.invoke(app, ["export", "--tenant", "og-test", "--finess", tenant.finess, "--period", "2026-01",
                                     "--period", "2026-02", "--actor", "dpo"])  # fmt: skip
        assert result.exit_code == 0, result.output
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        realised = {(r["period"], r["accommodation"]): r["value"] for r in rows if r["indicator"] == "days_realised"}
        assert realised[("2026-01", "all")] == "22" and realised[("2026-02", "all")] == "28"
        result = runner.invoke(app, ["export", "--tenant", "og-test", "--finess", tenant.finess, "--period", "2026",
                                     "--format", "json"])  # fmt: skip
        assert json.loads(result.stdout)["datasets"][0]["totals"]["days_realised"] == 356
        with factory() as session:
            reads = [e for e in iter_events(session) if e.entity_type == "indicators"]
        assert [e.actor for e in reads] == ["user:dpo", "user:dpo", "user:admin"]
        bad = runner.invoke(app, ["export", "--tenant", "og-test", "--finess", "750000028", "--period", "2026"])
        assert bad.exit_code == 1 and "does not belong" in bad.stderr
    finally:
        engine.dispose()


def test_compute_offline_from_an_events_file(tmp_path: Path) -> None:
    events = [ev("admission", "2024-02-01T10:00"), ev("absence_start", "2024-02-10T10:00"),
              ev("absence_end", "2024-02-15T10:00")]  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(to_json(e)) + "\n" for e in events), encoding="utf-8")
    result = CliRunner().invoke(app, ["compute", str(path), "--finess", "750000001", "--period", "2024-02",
                                      "--capacity", "permanent=1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    totals = json.loads(result.stdout)["datasets"][0]["totals"]
    # leap February: 29 nights, 5 away (10..14), 3 at the full rate then 2 reduced
    assert (totals["days_realised"], totals["days_present"], totals["occupancy_rate"]) == (29, 24, 100.0)
    assert (totals["days_absent_full_rate"], totals["days_absent_reduced_rate"]) == (3, 2)
    path.write_text('{"kind": "nope"}\n', encoding="utf-8")
    bad = CliRunner().invoke(app, ["compute", str(path), "--finess", "750000001", "--period", "2024"])
    assert bad.exit_code == 2 and "events.jsonl:1" in bad.stderr
