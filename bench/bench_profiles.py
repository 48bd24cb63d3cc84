"""FHIR conformance and DLU FHIR mapping timings: ``python bench/bench_profiles.py [repeat]``.

Prints the median wall time of ``profiles.check_rendition`` and ``mappings.dlu_fhir.to_fhir`` on
the sample records and the TDDUI examples (after a warm-up run: models and FHIRPath compiled).
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from mappings.base import RenderContext
from mappings.dlu_fhir import to_fhir
from mappings.ppa import PpaRecord, render_fhir
from mappings.record import DluRecord
from profiles import check_rendition, validate

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "tests" / "resources" / "records"
TDDUI = Path("/work/shared/fhir-examples/tddui")


def median_ms(action: Callable[[], object], repeat: int) -> float:
    action()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    ctx = RenderContext(now=datetime(2036, 1, 1, tzinfo=UTC), submission_id=uuid.uuid4())
    print(f"{'case':<48} {'bytes':>8} {'median ms':>10}")
    for name in ("minimal", "rich"):
        record = DluRecord.model_validate_json((RECORDS / f"{name}.json").read_text(encoding="utf-8"))
        content = to_fhir(record, ctx).content
        ms = median_ms(lambda r=record: to_fhir(r, ctx), repeat)
        print(f"{'dlu_fhir.to_fhir ' + name:<48} {len(content):>8} {ms:>10.1f}")
        ms = median_ms(lambda c=content: check_rendition(c, "fhir:r4"), repeat)
        print(f"{'check_rendition fhir:r4 DLU ' + name:<48} {len(content):>8} {ms:>10.1f}")
    ppa = PpaRecord.model_validate_json((RECORDS / "ppa-ehpad.json").read_text(encoding="utf-8"))
    content = render_fhir(ppa, ctx).content
    ms = median_ms(lambda: check_rendition(content, "fhir:tddui"), repeat)
    print(f"{'check_rendition fhir:tddui PPA ppa-ehpad':<48} {len(content):>8} {ms:>10.1f}")
    if TDDUI.is_dir():
        for path in sorted(TDDUI.glob("*.json")):
            data = path.read_bytes()
            ms = median_ms(lambda d=data: validate(d), repeat)
            print(f"{'validate ' + path.stem[:39]:<48} {len(data):>8} {ms:>10.1f}")


if __name__ == "__main__":
    main()
