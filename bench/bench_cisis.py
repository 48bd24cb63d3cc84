"""CI-SIS validation benchmark: milliseconds per document, warm, median of N runs, one process.

    CISIS_KIT_DIR=../shared/cisis-kit .venv/bin/python bench/bench_cisis.py [--runs 30] [--cpu 0]

For each DLU example of the kit (DLU, FLUDT, FLUDR) it prints: document parsing, XSD alone, each
schematron alone with our set-based compilation and with the classic compilation (one walk of the
document per pattern, value sets read by document() on each run, as the ISO skeleton compiles
them), and the full validation (bytes in, report out). Target: full validation <= 30 ms per DLU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from lxml import etree

from ci_sis import load_validator
from ci_sis._engine import ENGINE
from ci_sis._schematron import load_schema
from ci_sis._xslt import compile_schema
from ci_sis.validator import CompiledSchematron, Validator

EXAMPLES = [
    ("DLU-EHPAD-DLU_2022.01.xml", "DLU-EHPAD-DLU_2022.01"),
    ("DLU-EHPAD-FLUDT_2022.01.xml", "DLU-EHPAD-FLUDT_2022.01"),
    ("DLU-EHPAD-FLUDR_2022.01.xml", "DLU-EHPAD-FLUDR_2022.01"),
]
TARGET_MS = 30.0


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def classic(path: Path) -> CompiledSchematron:
    """The skeleton-like compilation: one mode and one walk per pattern, document() on every run."""
    schema = load_schema(path)
    xslt = compile_schema(schema, shape="classic", preload_documents=False)
    return CompiledSchematron(path, path.name, schema, ENGINE.compile(xslt), xslt)


def bench_example(
    validator: Validator, name: str, volet: str, runs: int, baselines: dict[Path, CompiledSchematron]
) -> float:
    """Print the figures for one example; return its full validation time."""
    kit = validator.kit
    xml = (kit.root / "ExemplesCDA" / name).read_bytes()
    tree = etree.fromstring(xml).getroottree()
    node = Validator.saxon_document(xml)
    print(f"\n{name} ({len(xml) / 1024:.0f} KiB)")
    print(f"  {'parse (lxml + Saxon)':<44} {median_ms(lambda: Validator.saxon_document(xml), runs):8.2f}")
    print(f"  {'XSD alone (lxml)':<44} {median_ms(lambda: validator.xsd_findings(tree), runs):8.2f}")
    for sch in kit.schematrons(volet):
        ours = validator.compiled(sch)
        base = baselines.get(sch) or baselines.setdefault(sch, classic(sch))
        ours_ms = median_ms(partial(ENGINE.run, ours.executable, node), runs)
        base_ms = median_ms(partial(ENGINE.run, base.executable, node), max(5, runs // 3))
        label = f"{sch.name} ({len(ours.schema.patterns)} patterns)"
        print(f"  {label:<44} {ours_ms:8.2f}   classic: {base_ms:8.2f}")
    full = median_ms(lambda: validator.validate(xml, volet), runs)
    print(f"  {'FULL validation (XSD + 3 schematrons)':<44} {full:8.2f}")
    return full


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kit", default=os.environ.get("CISIS_KIT_DIR"), help="CI-SIS kit (default $CISIS_KIT_DIR)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--cpu", type=int, default=0, help="pin the process to this CPU (-1: no pinning)")
    args = parser.parse_args()
    if not args.kit:
        print("CISIS_KIT_DIR is not set (or pass --kit)", file=sys.stderr)
        return 2
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    validator: Validator = load_validator(Path(args.kit))
    kit = validator.kit
    print(f"kit {kit.root}, {args.runs} runs, median ms, CPU {'any' if args.cpu < 0 else args.cpu}")

    start = time.perf_counter()
    for _, volet in EXAMPLES:
        validator.prepare(volet)
    print(f"cold compilation (XSD + 5 schematrons, our compiler + saxonche): {(time.perf_counter() - start):.2f} s")
    baselines: dict[Path, CompiledSchematron] = {}

    worst = 0.0
    for name, volet in EXAMPLES:
        worst = max(worst, bench_example(validator, name, volet, args.runs, baselines))
    verdict = "met" if worst <= TARGET_MS else "NOT met"
    print(f"\nworst full validation {worst:.2f} ms per DLU; target {TARGET_MS:.0f} ms {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
