"""FHIR conformance and DLU FHIR mapping timings: ``python bench/bench_profiles.py [repeat]``.

Prints the median wall time of ``profiles.check_rendition`` and ``mappings.dlu_fhir.to_fhir`` on
the sample records, the DMP's ITI-65 Provide Document Bundle (PDSm) for the rich DLU's CDA and the
TDDUI examples (after a warm-up run: models and FHIRPath compiled).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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


def _iti65(ctx: RenderContext) -> dict[str, Any]:
    """The DMP connector's ITI-65 bundle for the rich DLU's CDA (only the envelope fields it reads)."""
    from connectors.dmp.metadata import document_entry
    from connectors.dmp.mhd import provide_bundle
    from mappings.dlu import DLU

    record = DluRecord.model_validate_json((RECORDS / "rich.json").read_text(encoding="utf-8"))
    cda = next(r for r in DLU.render(record, ctx) if r.kind == "cda")
    assert cda.metadata is not None
    entry = document_entry(
        cda.content, cda.metadata, document_id=cda.document_id, entry_id=f"urn:uuid:{uuid.uuid4()}", document_ref="d"
    )
    envelope: Any = SimpleNamespace(idempotency_key="bench", facts=DLU.facts(record))
    return provide_bundle(envelope, [entry], [cda], {}, "1.2.250.1.999.1.1")


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
    content = json.dumps(_iti65(ctx)).encode()
    ms = median_ms(lambda: check_rendition(content, "fhir:pdsm"), repeat)
    print(f"{'check_rendition fhir:pdsm ITI-65 (DLU rich)':<48} {len(content):>8} {ms:>10.1f}")
    if TDDUI.is_dir():
        for path in sorted(TDDUI.glob("*.json")):
            data = path.read_bytes()
            ms = median_ms(lambda d=data: validate(d), repeat)
            print(f"{'validate ' + path.stem[:39]:<48} {len(data):>8} {ms:>10.1f}")


if __name__ == "__main__":
    main()
