"""FHIR conformance and DLU FHIR mapping timings: ``python bench/bench_profiles.py [repeat]``.

Prints the median wall time of ``profiles.check_rendition`` and ``mappings.dlu_fhir.to_fhir`` on
the sample records, the DMP's ITI-65 Provide Document Bundle (PDSm) for the rich DLU's CDA and the
TDDUI examples (after a warm-up run: models and FHIRPath compiled).

First, the bench suite's "FHIR profiles" block measured as ``python -m bench --only blocks`` does
(the demo DLU for 30 people, the FHIR tags of its renditions through the gateway's gate, after
two warm-up DLUs), in wall time and in CPU time of the process: the CPU time does not grow when
other processes share the machine, the wall time does.
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
TDDUI = Path(__file__).resolve().parents[1].parent / "shared" / "fhir-examples" / "tddui"


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


def dlu_block(runs: int = 30) -> tuple[float, float]:
    """(median wall ms, median CPU ms) of the FHIR checks of one demo DLU, as bench_blocks times them."""
    import dataclasses

    from bench.suite import demo_record, dlu_record
    from gateway.conformance import check_rendition as gate
    from gateway.settings import Settings
    from mappings import registry
    from tests.peers.gateway import random_master_keys

    doc = registry.get("dlu")
    assert doc is not None
    settings = Settings(
        profile="test", embedded_worker=False, master_keys=random_master_keys(), audit_keys=random_master_keys()
    )
    base = demo_record()
    walls: list[float] = []
    cpus: list[float] = []
    for i in range(runs + 2):
        record = doc.record_model.model_validate_json(json.dumps(dlu_record(i, "blk", base)).encode())
        renditions = doc.render(record, RenderContext(now=datetime.now(UTC), submission_id=uuid.uuid4()))
        wall = cpu = 0.0
        for rendition in renditions:
            for tag in rendition.conformance:
                if not tag.startswith("fhir"):
                    continue
                one = dataclasses.replace(rendition, conformance=(tag,))
                w, c = time.perf_counter(), time.process_time()
                outcome = gate(one, settings=settings)
                cpu += time.process_time() - c
                wall += time.perf_counter() - w
                assert all(r["ok"] for r in outcome), outcome
        if i >= 2:
            walls.append(wall)
            cpus.append(cpu)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000


def main() -> None:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    wall, cpu = dlu_block()
    print(f"{'FHIR profiles block (demo DLU, 30 people)':<48} wall {wall:.2f} ms, CPU {cpu:.2f} ms (medians)")
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
