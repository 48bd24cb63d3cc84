"""Benchmark: DLU mapping alone, and mapping + full CI-SIS validation (XSD + 3 schematrons), single process.

Usage: CISIS_KIT_DIR=../shared/cisis-kit python bench/bench_dlu.py [--n 200] [--record rich]
Prints per-document latency percentiles and throughput. No assertion: figures only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mappings.base import RenderContext  # noqa: E402
from mappings.dlu import render_dlu, render_fludt  # noqa: E402
from mappings.record import DluRecord  # noqa: E402

RECORDS = ROOT / "tests" / "resources" / "records"


def _ctx(i: int) -> RenderContext:
    return RenderContext(now=datetime(2025, 3, 1, 9, 30, tzinfo=UTC), submission_id=uuid.UUID(int=i + 1))


def _report(label: str, samples: list[float]) -> None:
    samples = sorted(samples)
    ms = [s * 1000 for s in samples]
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(
        f"{label:<42} n={len(ms):<5} mean={statistics.fmean(ms):7.2f} ms  median={statistics.median(ms):7.2f} ms"
        f"  p95={p95:7.2f} ms  -> {1000 / statistics.fmean(ms):7.1f} docs/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="documents per measurement")
    parser.add_argument("--record", default="rich", help="sample record in tests/resources/records")
    args = parser.parse_args()

    payload = json.loads((RECORDS / f"{args.record}.json").read_text(encoding="utf-8"))
    record = DluRecord.model_validate(payload)
    size = len(render_dlu(record, _ctx(0)).content)
    print(f"record={args.record}  DLU size={size} bytes  python={sys.version.split()[0]}")

    timings: list[float] = []
    for _i in range(args.n):
        start = time.perf_counter()
        DluRecord.model_validate(payload)
        timings.append(time.perf_counter() - start)
    _report("record validation (pydantic)", timings)

    timings = []
    for i in range(args.n):
        start = time.perf_counter()
        render_dlu(record, _ctx(i))
        timings.append(time.perf_counter() - start)
    _report("mapping: DLU CDA", timings)

    if record.transfer is not None:
        timings = []
        for i in range(args.n):
            start = time.perf_counter()
            render_fludt(record, _ctx(i))
            timings.append(time.perf_counter() - start)
        _report("mapping: FLUDT CDA", timings)

    try:
        from ci_sis import load_validator
    except ImportError:
        print("ci_sis not available: validation not measured")
        return
    validator = load_validator()
    start = time.perf_counter()
    validator.prepare("DLU-EHPAD-DLU_2022.01")
    print(f"schematron compilation (once per process): {time.perf_counter() - start:.2f} s")
    timings = []
    for i in range(args.n):
        start = time.perf_counter()
        content = render_dlu(record, _ctx(i)).content
        report = validator.validate(content, "DLU-EHPAD-DLU_2022.01")
        timings.append(time.perf_counter() - start)
        if report.findings:
            raise SystemExit(f"unexpected findings: {[f.message for f in report.findings]}")
    _report("mapping + XSD + 3 schematrons: DLU", timings)


if __name__ == "__main__":
    main()
