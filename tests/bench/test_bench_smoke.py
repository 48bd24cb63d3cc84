"""``python -m bench`` in its tiny mode, so the benchmark command cannot rot.

It checks that every section runs and that the table and its markdown/JSON copies are written;
it asserts nothing about speed (speed lives in bench/, read by people)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_bench_tiny_mode_prints_and_writes_the_table(tmp_path: Path) -> None:
    kit = os.environ.get("CISIS_KIT_DIR")
    if not kit or not Path(kit, "schematrons").is_dir():
        pytest.skip("the bench needs the CI-SIS kit (CISIS_KIT_DIR)")
    md = tmp_path / "results.md"
    env = {**os.environ, "CISIS_KIT_DIR": kit}
    env.pop("DUI_GATEWAY_TEST_PG_URL", None)  # SQLite rows only: PostgreSQL is exercised by the e2e suite
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--pg-url", "", "--concurrency", "2", "--md", str(md)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = md.read_text(encoding="utf-8")
    for row in ("block limit", "intake c2, sqlite", "e2e SQLite", "cold start"):
        assert row in table, f"{row!r} missing from the table:\n{table}"
    assert "FAILED" not in table
    raw = json.loads(md.with_suffix(".json").read_text(encoding="utf-8"))
    assert raw["block_limit_dlu_s"] > 0 and raw["e2e"]["sqlite"]["dlu_s"] > 0
    assert raw["intake"]["sqlite"]["c2"] > 0, "no submission was stored through HTTP"
    # the whole run's CPU per DLU: the gateway process and the receiver, measured, not assumed
    # (4 DLUs may take less than the kernel's 10 ms CPU tick in the receiver: it may read 0)
    sqlite = raw["e2e"]["sqlite"]
    assert set(sqlite["other_cpu_ms_per_dlu"]) == {"sandbox"}
    assert sqlite["total_cpu_ms_per_dlu"] == pytest.approx(
        sum(sqlite["process_cpu_ms_per_dlu"]) + sqlite["other_cpu_ms_per_dlu"]["sandbox"]
    )
    assert sqlite["total_cpu_ms_per_dlu"] > 0
    assert "all processes" in table
