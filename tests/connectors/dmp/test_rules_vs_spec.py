"""The simulator's rules compared line by line with the spec's tables (``shared/specs/dmp-mes.md``):
every metadata the spec lists has a rule with the same requiredness, and no rule is invented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connectors.sandbox.dmp import rules as R

SPEC = Path(__file__).resolve().parents[3].parent / "shared" / "specs" / "dmp-mes.md"
REGISTRY_ASSIGNED = {"entryUUID", "logicalID", "version", "availabilityStatus"}


def _spec() -> str:
    if not SPEC.exists():
        pytest.skip(f"{SPEC} not present (shared/ beside the repository)")
    return SPEC.read_text(encoding="utf-8")


def _document_entry_lines(text: str) -> dict[str, str]:
    section = text.split("### DocumentEntry", 1)[1].split("### SubmissionSet", 1)[0]
    out: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] in ("Metadata", "---") or set(cells[0]) <= {"-"}:
            continue
        names = [n.strip() for n in re.split(r"[,/]", cells[0]) if n.strip()]
        reqs = [r.strip() for r in cells[1].split("/")]
        for i, name in enumerate(names):
            if name in REGISTRY_ASSIGNED:
                continue
            req = (reqs[i] if i < len(reqs) else reqs[0]).split(" ")[0]
            out[f"DE.{name}"] = req
    return out


def _submission_set_lines(text: str) -> dict[str, str]:
    paragraph = text.split("### SubmissionSet", 1)[1].split("\n", 2)[1]
    out: dict[str, str] = {}
    for names, req in re.findall(r"\*{0,2}([A-Za-z/]+)\*{0,2} \((R|RE|O)\b", paragraph):
        for name in names.split("/"):
            key = f"SS.author.{name}" if name.startswith("author") else f"SS.{name}"
            out[key] = req
    return out


def test_every_document_entry_line_of_the_spec_has_its_rule() -> None:
    spec = _document_entry_lines(_spec())
    ours = {r.id: r.req for r in R.DE_RULES}
    assert len(spec) >= 24
    assert spec == ours


def test_every_submission_set_line_of_the_spec_has_its_rule() -> None:
    spec = _submission_set_lines(_spec())
    ours = {r.id: r.req for r in R.SS_RULES}
    assert len(spec) == 10
    assert spec == ours
