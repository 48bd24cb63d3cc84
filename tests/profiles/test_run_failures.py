"""A FHIR check that crashes gives no verdict: it raises, it never becomes a finding of the resource.

A FHIRPath engine failure on a structurally valid resource is the gateway's fault (a constraint the
engine cannot evaluate): :class:`profiles.ValidationRunError`, which the conformance gate turns into a
held submission. On a resource that already has structure errors the same failure stays a
``processing`` issue: the data may be what broke the expression, and the verdict is "invalid" anyway."""

from __future__ import annotations

from typing import Any

import pytest

from profiles import ValidationRunError, definitions, validate
from profiles._rules import Invariant, Profile

URL = "https://example.org/StructureDefinition/test-crashing-patient"


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "Test", "given": ["Ann", "Marie"]}], **extra}


@pytest.fixture
def crashing_profile(monkeypatch: pytest.MonkeyPatch) -> str:
    # '+' on a collection of two names raises inside fhirpathpy: a constraint the engine cannot evaluate
    invariant = Invariant("test-1", "name.given + 'x' = 'x'", "never evaluated", context="")
    monkeypatch.setitem(definitions.PROFILES, URL, Profile(URL, "Patient", "crashing", rules=(invariant,)))
    return URL


def test_an_engine_crash_on_a_valid_resource_raises(crashing_profile: str) -> None:
    with pytest.raises(ValidationRunError, match="test-1"):
        validate(patient(), crashing_profile)


def test_the_same_crash_on_a_structurally_invalid_resource_stays_a_finding(crashing_profile: str) -> None:
    report = validate(patient(birthDate="31/12/1940"), crashing_profile)
    assert not report.ok
    assert {i.rule for i in report.errors} >= {"structure", "test-1"}
    assert any(i.code == "processing" for i in report.errors)
