"""Broken copies of the kit examples yield exactly the failed asserts the ANS pipeline reports."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from lxml import etree

from ci_sis import Validator
from tests.ci_sis.cisis_mutations import MUTATIONS, Mutation

pytestmark = pytest.mark.conformance


def _mutated(examples: Path, mutation: Mutation) -> bytes:
    tree = etree.parse(str(examples / mutation.example[0]))
    before = etree.tostring(tree)
    mutation.mutate(tree)
    after = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
    assert after != before
    return after


def test_at_least_fifteen_mutations() -> None:
    assert len(MUTATIONS) >= 15
    assert len({m.name for m in MUTATIONS}) == len(MUTATIONS)
    assert all(m.expected for m in MUTATIONS)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_mutation_yields_expected_findings(validator: Validator, examples: Path, mutation: Mutation) -> None:
    report = validator.validate(_mutated(examples, mutation), mutation.example[1])
    assert not report.ok
    found = [f for f in report.findings if f.stage == "schematron"]
    actual = Counter((Path(f.schema).name, f.pattern, f.kind, f.location) for f in found)
    wanted = Counter((schema, pattern, kind, location) for schema, pattern, kind, location, _ in mutation.expected)
    assert actual == wanted
    for schema, pattern, kind, location, fragment in mutation.expected:
        messages = [
            f.message
            for f in found
            if (Path(f.schema).name, f.pattern, f.kind, f.location) == (schema, pattern, kind, location)
        ]
        assert any(m.startswith(fragment) for m in messages), (fragment, messages)
    for f in found:
        assert f.severity == "error" and f.rule_context and f.test


def test_fired_report_counts_like_a_failed_assert(validator: Validator, examples: Path) -> None:
    mutation = next(m for m in MUTATIONS if m.name == "dlu-null-flavor-service-event-low")
    report = validator.validate(_mutated(examples, mutation), mutation.example[1])
    assert [f.kind for f in report.findings if f.stage == "schematron"] == ["report"]
    assert not report.ok
