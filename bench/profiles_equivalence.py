"""Same reports before and after a change of ``profiles``: dump them for a large corpus, compare dumps.

    python bench/profiles_equivalence.py dump OUT.jsonl [--corpus CORPUS.json] [--profiles-root DIR]
    python bench/profiles_equivalence.py compare A.jsonl B.jsonl

The corpus (built once, saved to ``--corpus`` so that both sides validate exactly the same inputs):

- every JSON resource of ``../shared/fhir-examples`` and of the IG packages of
  ``../shared/fhir-ig/packages`` (examples and conformance resources alike);
- the gateway's FHIR outputs: the DLU document bundle of every DLU record fixture, the PPA TDDUI
  bundle of every PPA fixture, the TDDUI export, the SDO Consent/Tasks, the DMP's ITI-65 bundles,
  with their entries (``tests.profiles.test_mutations.samples`` and the whole bundles);
- one mutation per applicable generated rule of each valid carrier (``tests.profiles.mutations``);
- seeded random mutations of every carrier (drop/duplicate/empty elements, wrong codes and
  systems, wrong JSON types, extreme values, unknown elements, primitive extensions, references
  to elsewhere, contained resources...).

Each case is validated with ``validate`` (declared profiles) and ``check_rendition`` under each
conformance tag; a dump line holds every issue (severity, code, expression, message, profile,
rule) in report order, the checked profiles, or the error raised. ``--profiles-root`` puts
another checkout's ``profiles`` package first on ``sys.path`` (the code before the change).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tarfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DUI_GATEWAY_SHARED_DIR", ROOT.parent / "shared"))  # ../shared beside the checkout
EXAMPLES = SHARED / "fhir-examples"
PACKAGES = SHARED / "fhir-ig" / "packages"
TAGS = ("fhir:r4", "fhir:tddui", "fhir:pdsm")
SEED = 20261201
RANDOM_PER_CARRIER = 12


def _entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e["resource"] for e in bundle.get("entry", []) if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


def _shared_resources() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if EXAMPLES.is_dir():
        for path in sorted(EXAMPLES.rglob("*.json")):
            out.append((f"examples/{path.relative_to(EXAMPLES)}", json.loads(path.read_text(encoding="utf-8-sig"))))
    if PACKAGES.is_dir():
        for tgz in sorted(PACKAGES.glob("*.tgz")):
            with tarfile.open(tgz) as archive:
                for member in sorted(archive.getmembers(), key=lambda m: m.name):
                    name = member.name.rsplit("/", 1)[-1]
                    if not member.isfile() or not name.endswith(".json") or name.startswith((".", "package")):
                        continue
                    handle = archive.extractfile(member)
                    assert handle is not None
                    data = json.loads(handle.read().decode("utf-8-sig"))
                    if isinstance(data, dict) and "resourceType" in data:
                        out.append((f"{tgz.stem}/{member.name}", data))
    return out


def _gateway_outputs() -> list[tuple[str, dict[str, Any]]]:
    from mappings.dlu_fhir import to_fhir
    from mappings.ppa import PpaRecord, render_fhir
    from mappings.record import DluRecord
    from tests.profiles.test_gateway_outputs import CTX, RECORDS, mhd_outputs, sdo_outputs

    out: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(RECORDS.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if "dlu" in data:
            out.append((f"dlu/{path.stem}", json.loads(to_fhir(DluRecord.model_validate(data), CTX).content)))
        elif path.stem.startswith("ppa-"):
            out.append((f"ppa/{path.stem}", json.loads(render_fhir(PpaRecord.model_validate(data), CTX).content)))
    for index, resource in enumerate(sdo_outputs()):
        out.append((f"sdo/{index}", resource))
    for index, bundle in enumerate(mhd_outputs()):
        out.append((f"mhd/{index}", bundle))
    return out


def build_corpus() -> list[tuple[str, Any]]:
    from tests.profiles.mutations import random_mutation
    from tests.profiles.test_engine_equivalence import _mutated
    from tests.profiles.test_mutations import samples

    cases: list[tuple[str, Any]] = []
    carriers = _shared_resources() + _gateway_outputs()
    for name, resource in carriers:
        cases.append((name, resource))
        if resource.get("resourceType") == "Bundle":
            for index, entry in enumerate(_entries(resource)):
                cases.append((f"{name}#entry{index}", entry))
    valid = samples()
    for index, case in enumerate(_mutated(valid)):
        cases.append((f"rule-mutation/{index}", case))
    rng = random.Random(SEED)
    for name, resource in list(cases[: len(cases)]):
        if name.startswith("rule-mutation/") or not isinstance(resource, dict):
            continue
        for index in range(RANDOM_PER_CARRIER):
            mutated = random_mutation(resource, rng)
            if mutated is not None:
                cases.append((f"{name}~{index}", mutated))
    cases.append(("not-json", "{not json"))
    cases.append(("not-a-resource", json.dumps([1, 2])))
    return cases


# -- dump and compare ----------------------------------------------------------------------------
def _outcome(run: Any) -> dict[str, Any]:
    try:
        report = run()
    except Exception as exc:  # the dump records a run failure as such
        return {"raised": type(exc).__name__, "message": str(exc)}
    return {
        "ok": report.ok,
        "issues": [[i.severity, i.code, i.expression, i.message, i.profile, i.rule] for i in report.issues],
        "profiles": list(report.profiles),
        "outcome": report.to_operation_outcome(),
    }


def dump(out: Path, corpus_path: Path | None) -> None:
    from profiles import check_rendition, validate

    if corpus_path is not None and corpus_path.exists():
        cases = [tuple(c) for c in json.loads(corpus_path.read_text(encoding="utf-8"))]
    else:
        cases = build_corpus()
        if corpus_path is not None:
            corpus_path.write_text(json.dumps(cases), encoding="utf-8")
    with out.open("w", encoding="utf-8") as handle:
        for name, case in cases:
            content = case.encode() if isinstance(case, str) else json.dumps(case).encode()
            line: dict[str, Any] = {"case": name, "validate": _outcome(lambda c=content: validate(c))}
            for tag in TAGS:
                line[tag] = _outcome(lambda c=content, t=tag: check_rendition(c, t))
            handle.write(json.dumps(line, sort_keys=True) + "\n")
    print(f"{len(cases)} cases, {len(cases) * (1 + len(TAGS))} reports -> {out}")


def compare(a: Path, b: Path) -> int:
    left = a.read_text(encoding="utf-8").splitlines()
    right = b.read_text(encoding="utf-8").splitlines()
    differ = [i for i, (x, y) in enumerate(zip(left, right, strict=False)) if x != y]
    issues = sum(sum(len(v.get("issues", [])) for k, v in json.loads(x).items() if k != "case") for x in left)
    print(f"{len(left)} vs {len(right)} cases, {issues} issues on the left, {len(differ)} differing cases")
    for index in differ[:10]:
        print("DIFF", json.loads(left[index])["case"])
    return 0 if len(left) == len(right) and not differ else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("out", type=Path)
    d.add_argument("--corpus", type=Path)
    d.add_argument("--profiles-root", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.command == "dump":
        if args.profiles_root is not None:
            sys.path.insert(0, str(args.profiles_root))
        dump(args.out, args.corpus)
    else:
        raise SystemExit(compare(args.a, args.b))


if __name__ == "__main__":
    main()
