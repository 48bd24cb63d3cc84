"""The checker's memoised selections give the reports of the plain walk, on every carrier of the
mutation suite (IG examples, the gateway's outputs and their entries) and on every one of its
mutations: the optimisation of profiles._rules changes no finding, order included."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import profiles._rules as rules
from profiles import validate
from profiles._paths import Node, select
from profiles.definitions.generated import load
from tests.profiles import mutations
from tests.profiles.test_mutations import samples


class _PlainChecker(rules._Checker):
    """The checker before memoisation: every rule walks the resource and every slice predicate
    walks the item again."""

    def lookup(self, rule_path: str) -> Callable[[Any], bool] | None:
        slice_ = self.slices.get(rule_path)
        return slice_.predicate if slice_ else None

    def select(self, node: Node, path: str, prefix: str = "") -> list[Node]:
        return select(node, path, self.lookup, prefix=prefix)


def _report(resource: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    report = validate(resource)
    return [(i.severity, i.code, i.expression, i.message, i.profile, i.rule) for i in report.issues]


def _mutated(resources: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each carrier, then one broken copy per applicable mutation of the generated rules."""
    for resource in resources:
        yield resource
        chain = mutations._chain_of(resource)
        checker = mutations._selector(resource, chain)
        for profile in chain:
            for rule in profile.rules:
                for mutation in [*mutations._mutations(rule, checker), *mutations._synthesized(rule, checker)]:
                    broken = copy.deepcopy(resource)
                    if mutation(broken) is not None:
                        yield broken
                    break


def test_memoised_checker_reports_what_the_plain_walk_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load()  # the generated profiles are there
    cases = list(_mutated(samples()))
    assert len(cases) > 1000
    fast = [_report(case) for case in cases]
    monkeypatch.setattr(rules, "_Checker", _PlainChecker)
    plain = [_report(case) for case in cases]
    assert sum(len(r) for r in plain) > len(cases)  # the mutations do produce findings
    for index, (got, expected) in enumerate(zip(fast, plain, strict=True)):
        assert got == expected, (index, cases[index].get("resourceType"))
