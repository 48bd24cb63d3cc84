"""``dui-gateway backfill`` through its command line, as an operator runs it (real processes).

Interrupted (SIGINT, SIGKILL) and resumed: every valid item stored exactly once; malformed items
reported and skipped; the projection printed.
"""

from __future__ import annotations

import copy
import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.backfill import iter_items, project
from gateway.storage.models import ApiClient, Submission
from tests.peers.gateway import DEMO_FINESS, Deployment, provision

pytestmark = [pytest.mark.e2e]


def _record(n: int) -> dict[str, Any]:
    base = json.loads(
        resources.files("gateway.demo_data").joinpath("01-dlu-qualified-ins.json").read_text(encoding="utf-8")
    )
    record = copy.deepcopy(base)
    first13 = f"2380375{n:06d}"
    record["person"]["local_id"] = f"BF-{n}"
    record["person"]["ins"]["matricule"] = f"{first13}{97 - int(first13) % 97:02d}"
    return record


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment.create(tmp_path / "deployment")
    d.env["DUI_GATEWAY_LOG_LEVEL"] = "WARNING"
    try:
        d.migrate()
        yield d
    finally:
        d.close()


def _client_id(dep: Deployment) -> str:
    provision(dep.db_url, finess=DEMO_FINESS)
    with dep.engine.connect() as conn:
        return str(conn.execute(select(ApiClient.id)).scalar_one())


def _write_ndjson(path: Path, count: int, bad: dict[int, str]) -> set[str]:
    """``count`` lines, the ones in ``bad`` (0-based) replaced; returns the valid lines' local ids."""
    valid = set()
    with path.open("w", encoding="utf-8") as fh:
        for i in range(count):
            if i in bad:
                fh.write(bad[i] + "\n")
            else:
                fh.write(json.dumps(_record(i), ensure_ascii=False) + "\n")
                valid.add(f"BF-{i}")
    return valid


def _stored(dep: Deployment) -> list[Submission]:
    with dep.engine.connect() as conn:
        return list(conn.execute(select(Submission.person_ref, Submission.idempotency_key)).all())  # type: ignore[arg-type]


def _wait_checkpoint(path: Path, at_least: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(path.read_text())["done"] >= at_least:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"checkpoint {path} did not reach {at_least}")


BAD = {3: "{not json", 7: json.dumps({"person": {"local_id": "x"}}), 12: "[1, 2]"}


def test_backfill_reports_bad_lines_and_a_rerun_adds_nothing(dep: Deployment, tmp_path: Path) -> None:
    client = _client_id(dep)
    source = tmp_path / "records.ndjson"
    valid = _write_ndjson(source, 20, BAD)
    out = dep.run(
        "backfill", str(source), "--client", client, "--batch", "6", "--no-progress", "--rates", "1=10,2=18,4=30"
    )
    assert "20/20 items handled (17 accepted, 0 already there, 3 errors" in out
    assert "projection for 790,000 DLUs" in out and "8 workers" in out
    rows = _stored(dep)
    assert {r[0] for r in rows} == valid and len(rows) == len(valid)
    report = [
        json.loads(line) for line in (tmp_path / "records.ndjson.backfill-errors.ndjson").read_text().splitlines()
    ]
    assert [r["item"] for r in report] == ["line 4", "line 8", "line 13"]
    assert [r["status"] for r in report] == [422, 422, 422]
    assert report[1]["errors"] and all(e["pointer"].startswith("/record") for e in report[1]["errors"])
    assert "BF-" not in json.dumps(report)  # the report never quotes a record

    # the same source again, checkpoint removed: every item is a replay, nothing is stored twice
    (tmp_path / "records.ndjson.backfill.json").unlink()
    out = dep.run("backfill", str(source), "--client", client, "--no-progress")
    assert "(0 accepted, 17 already there, 3 errors" in out
    assert len(_stored(dep)) == len(valid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_backfill_interrupted_then_resumed_loses_and_duplicates_nothing(
    dep: Deployment, tmp_path: Path, sig: signal.Signals
) -> None:
    client = _client_id(dep)
    source = tmp_path / "records.ndjson"
    valid = _write_ndjson(source, 400, {50: "{", 250: "null"})
    checkpoint = tmp_path / "records.ndjson.backfill.json"
    proc = dep.spawn("backfill-1", "backfill", str(source), "--client", client, "--batch", "5", "--no-progress")
    _wait_checkpoint(checkpoint, 30)
    proc.proc.send_signal(sig)
    proc.proc.wait(timeout=60)
    assert proc.proc.returncode != 0
    done_before = json.loads(checkpoint.read_text())["done"]
    assert done_before < 400, "the run finished before it was interrupted: grow the source"
    assert len(_stored(dep)) < len(valid)

    out = dep.run("backfill", str(source), "--client", client, "--batch", "50", "--no-progress", timeout=300)
    assert f"{done_before} already done" in out
    assert "400/400 items handled" in out
    rows = _stored(dep)
    assert Counter(r[0] for r in rows) == Counter(dict.fromkeys(valid, 1)), "each valid line stored exactly once"
    assert len({r[1] for r in rows}) == len(rows)
    errors = (tmp_path / "records.ndjson.backfill-errors.ndjson").read_text().splitlines()
    assert sorted(json.loads(e)["item"] for e in errors) == ["line 251", "line 51"]


def test_backfill_reads_a_folder_and_refuses_an_unknown_client(dep: Deployment, tmp_path: Path) -> None:
    client = _client_id(dep)
    folder = tmp_path / "records"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        (folder / ("sub" if i else "") / f"r{i}.json").write_text(
            json.dumps({"document_type": "dlu", "record": _record(900 + i)}), encoding="utf-8"
        )
    out = dep.run("backfill", str(folder), "--client", client, "--no-progress")
    assert "3/3 items handled (3 accepted" in out
    assert [i.where for i in iter_items(folder)] == ["r0.json", "sub/r1.json", "sub/r2.json"]
    with pytest.raises(RuntimeError, match="no active API client"):
        dep.run("backfill", str(folder), "--client", "nope", "--no-progress")


def test_projection_uses_the_measured_scaling() -> None:
    rates = {1: 10.0, 2: 18.0, 4: 30.0}
    assert project(rates, 2) == 18.0
    assert project(rates, 3) == pytest.approx(24.0)
    # the last doubling gave x1.67: applied once more for 8 workers
    assert project(rates, 8) == pytest.approx(30.0 * 30.0 / 18.0)
    assert project({1: 10.0}, 4) == pytest.approx(10.0 * 1.5**2)


def test_scaling_from_the_bench_leaves_out_runs_with_more_workers_than_cpus(tmp_path: Path) -> None:
    from gateway.backfill import scaling_from

    path = tmp_path / "RESULTS.json"
    e2e = {
        "sqlite": {"dlu_s": 9.0, "workers": 1},
        "pg1": {"dlu_s": 10.0, "workers": 1},
        "pg2": {"dlu_s": 18.0, "workers": 2},
        "pg4": {"dlu_s": 17.0, "workers": 4},
    }
    path.write_text(json.dumps({"cpus": 2, "e2e": e2e}))
    assert scaling_from(path) == {1: 10.0, 2: 18.0}
    path.write_text(json.dumps({"cpus": 8, "e2e": e2e}))
    assert scaling_from(path) == {1: 10.0, 2: 18.0, 4: 17.0}


def test_per_core_projection_uses_the_measured_worker_cpu(tmp_path: Path) -> None:
    from gateway.backfill import CpuScaling, cpu_scaling_from, project_per_core, projection_table

    path = tmp_path / "RESULTS.json"
    e2e = {
        "sqlite": {"dlu_s": 9.0, "workers": 1, "process_cpu_ms_per_dlu": [70.0]},
        "pg1": {"dlu_s": 16.0, "workers": 1, "process_cpu_ms_per_dlu": [50.0], "pg_cpu_ms_per_dlu": 9.0},
        "pg2": {"dlu_s": 24.0, "workers": 2, "process_cpu_ms_per_dlu": [30.0, 30.0], "pg_cpu_ms_per_dlu": 10.0},
        "pg4": {"dlu_s": 20.0, "workers": 4, "process_cpu_ms_per_dlu": [25.0] * 4, "pg_cpu_ms_per_dlu": 12.0},
    }
    path.write_text(json.dumps({"cpus": 2, "e2e": e2e}))
    scaling = cpu_scaling_from(path)
    # the 4-worker run shared 2 cores: left out; the database's largest share kept
    assert scaling == CpuScaling({1: 50.0, 2: 60.0}, 16.0, 10.0)
    assert scaling.core_use == pytest.approx(0.8)  # 16 DLU/s x 50 ms
    assert project_per_core(scaling, 1) == pytest.approx(16.0)
    assert project_per_core(scaling, 2) == pytest.approx(2 * 0.8 * 1000 / 60.0)
    # CPU per DLU grew x1.2 over the last doubling: again x1.2 per doubling beyond
    assert project_per_core(scaling, 8) == pytest.approx(8 * 0.8 * 1000 / (60.0 * 1.2**2))
    # a cost that fell with more workers is not extrapolated downwards
    flat = CpuScaling({1: 50.0, 2: 40.0}, 16.0)
    assert project_per_core(flat, 8) == pytest.approx(8 * 0.8 * 1000 / 40.0)
    table = projection_table({1: 16.0, 2: 24.0}, [1, 8], cpu=scaling)
    assert "per core" in table and "8 workers" in table and "database" in table
    path.write_text(json.dumps({"cpus": 2, "e2e": {"pg2": e2e["pg2"]}}))
    assert cpu_scaling_from(path) is None  # no single-worker run: no share of a core measured
