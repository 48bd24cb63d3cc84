"""The compiled FHIRPath invariants (profiles._fhirpath) give fhirpathpy's result on every invariant
evaluation of the mutation corpus: the valid carriers (IG examples, the gateway's outputs and their
entries), one mutation per generated rule, and seeded random mutations (wrong types, odd values,
primitive extensions, extensions without url...). Where fhirpathpy raises, the closures must have
stepped aside (``Fallback``), so that the engine's failure stays what it was."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import profiles._rules as rules
from profiles import definitions, validate
from profiles._fhirpath import Fallback, compile_invariant
from profiles._rules import Invariant
from profiles.definitions import base_r4
from tests.profiles import mutations
from tests.profiles.test_engine_equivalence import _mutated
from tests.profiles.test_mutations import samples

SEED = 1512


def _expressions() -> set[str]:
    profiles = [*definitions.PROFILES.values(), *(definitions.base_profile(t) for t in base_r4._DEFINITIONS)]
    profiles.append(definitions.base_profile("Patient"))  # the common rules only
    return {r.expression for p in profiles for r in p.rules if isinstance(r, Invariant)}


def test_every_declared_invariant_is_compiled() -> None:
    missing = sorted(e for e in _expressions() if compile_invariant(e) is None)
    assert missing == []


def test_the_closures_keep_fhirpathpy_quirks() -> None:
    def run(expression: str, value: Any) -> list[Any]:
        fast = compile_invariant(expression)
        assert fast is not None
        result = fast(value)
        assert result == rules._reference(expression)(value)
        return result

    bundle = {"resourceType": "Bundle", "type": "document", "entry": [{"fullUrl": "a"}, {"fullUrl": "a"}]}
    assert run("entry.fullUrl = 'a'", bundle) == [False]  # two items against one: false, not an error
    assert run("entry.fullUrl != 'a'", bundle) == [True]
    assert run("entry.fullUrl.isDistinct()", bundle) == [False]
    assert run("total = 1", bundle) == []
    assert run("total.empty() or type = 'history'", bundle) == [True]
    assert run("type = 'collection' implies total.exists()", bundle) == [True]
    assert run("entry.first().resource.is(Composition)", bundle) == []
    extensions = {"extension": [{"url": "u", "valueCode": "A"}, {"url": "u", "valueCode": "B"}]}
    assert run("extension('u').value = 'A'", {"resourceType": "Patient", **extensions}) == [True]  # first only
    assert run("matches('^[0-9]+$')", "0123") == [True]
    with pytest.raises(Fallback):  # fhirpathpy: "Expected string, but got ..."
        compile_invariant("matches('^[0-9]+$')")({"value": "1"})  # type: ignore[misc]
    with pytest.raises(Fallback):  # fhirpathpy takes resourceType as the type path, whatever it is
        compile_invariant("entry.first().resource.is(Composition)")(  # type: ignore[misc]
            {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": None}}]}
        )
    with pytest.raises(Fallback):  # fhirpathpy evaluates on a list as on the collection of its items
        compile_invariant("name.exists()")([{"name": "x"}, {}])  # type: ignore[misc]
    with pytest.raises(Fallback):  # a primitive extension: fhirpathpy adds a node of its own
        compile_invariant("type = 'document'")({"type": "document", "_type": {"id": "x"}})  # type: ignore[misc]


def _cases() -> list[dict[str, Any]]:
    carriers = samples()
    cases = list(_mutated(carriers))
    rng = random.Random(SEED)
    for carrier in carriers:
        for _ in range(2):
            mutated = mutations.random_mutation(carrier, rng)
            if mutated is not None:
                cases.append(mutated)
    return cases


def test_compiled_invariants_evaluate_as_fhirpathpy(monkeypatch: pytest.MonkeyPatch) -> None:
    tally: Counter[str] = Counter()

    def checked(expression: str) -> Callable[[Any], list[Any]]:
        fast = compile_invariant(expression)
        reference = rules._reference(expression)
        assert fast is not None, expression

        def evaluate(value: Any) -> list[Any]:
            try:
                expected = reference(value)
            except Exception:
                with pytest.raises(Fallback):
                    fast(value)
                tally["raised"] += 1
                raise
            try:
                result = fast(value)
            except Fallback:
                tally["fallback"] += 1
                return expected
            assert result == expected, (expression, value)
            tally["compiled"] += 1
            return result

        return evaluate

    monkeypatch.setattr(rules, "_compiled", checked)
    cases = _cases()
    assert len(cases) > 1500
    for case in cases:
        try:
            validate(case)
        except AssertionError:
            raise
        except Exception:  # a run failure (fhirpathpy raised: checked above; or another check)
            continue
    assert tally["compiled"] > 20 * (tally["fallback"] + tally["raised"]) and tally["compiled"] > 10_000, tally
