"""Well-formed JSON with the wrong JSON type somewhere is reported, never raised.

The shapes below raised ``TypeError`` out of ``validate``/``check_rendition`` (an HTTP 500 at
``$validate``, a submission held by the gate instead of rejected); each is now a ``structure``
finding at its location. The property test puts wrong JSON types at random paths of valid
resources and asserts that every run ends with a report.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles import RENDITION_TAGS, Report, check_rendition, validate
from tests.profiles.mutations import _get, _locations

SUBJECT = {"reference": "Patient/1"}
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def condition(clinical_status: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "clinicalStatus": clinical_status, "subject": SUBJECT}


#: (name, resource, expression of the structure error expected)
RAISED_BEFORE: list[tuple[str, dict[str, Any], str]] = [
    ("meta.profile an integer", {"resourceType": "Patient", "meta": {"profile": 5}}, "Patient.meta.profile"),
    ("meta.profile a boolean", {"resourceType": "Patient", "meta": {"profile": True}}, "Patient.meta.profile"),
    ("meta.profile a number", {"resourceType": "Patient", "meta": {"profile": 1.5}}, "Patient.meta.profile"),
    ("Bundle.entry an integer", {"resourceType": "Bundle", "type": "collection", "entry": 5}, "Bundle.entry"),
    ("contained a boolean", {"resourceType": "Patient", "contained": True}, "Patient.contained"),
    ("coding false at a binding", condition({"coding": False}), "Condition.clinicalStatus.coding"),
    ("coding a number at a binding", condition({"coding": 1.5}), "Condition.clinicalStatus.coding"),
    (
        "an object where a code is expected",
        condition({"coding": [{"system": CLINICAL, "code": {"code": "active"}}]}),
        "Condition.clinicalStatus.coding[0].code",
    ),
    (
        "an array where a code is expected",
        condition({"coding": [{"system": CLINICAL, "code": ["active"]}]}),
        "Condition.clinicalStatus.coding[0].code",
    ),
    (
        "an array where a system is expected",
        condition({"coding": [{"system": [CLINICAL], "code": "active"}]}),
        "Condition.clinicalStatus.coding[0].system",
    ),
    (
        "an object where a system is expected",
        condition({"coding": [{"system": {"value": CLINICAL}, "code": "active"}]}),
        "Condition.clinicalStatus.coding[0].system",
    ),
    (
        "an integer where a url is expected (the model's own validator trips on it)",
        {"resourceType": "DocumentReference", "status": "current", "content": [{"attachment": {"url": 5}}]},
        "DocumentReference.content[0].attachment.url",
    ),
    (
        "a boolean where a url is expected, in an extension",
        {"resourceType": "Patient", "extension": [{"url": "https://example.org/x", "valueUrl": True}]},
        "Patient.extension[0].valueUrl",
    ),
]


def _structure_errors(report: Report) -> list[str]:
    return [i.expression for i in report.issues if i.severity == "error" and i.code == "structure"]


@pytest.mark.parametrize(("name", "resource", "where"), RAISED_BEFORE, ids=[c[0] for c in RAISED_BEFORE])
def test_a_wrong_json_type_is_a_structure_error_at_its_path(name: str, resource: dict[str, Any], where: str) -> None:
    content = json.dumps(resource).encode()
    report = validate(content)
    assert not report.ok
    assert where in _structure_errors(report), report.issues
    assert validate(resource).issues == report.issues  # a dict or its JSON: the same findings
    for tag in RENDITION_TAGS:
        assert where in _structure_errors(check_rendition(content, tag))


def test_a_wrong_json_type_in_a_bundle_entry_is_reported_at_the_entry() -> None:
    patient = {"resourceType": "Patient", "meta": {"profile": 7}, "contained": 3}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "urn:uuid:1", "resource": patient}]}
    report = validate(bundle)
    assert {"Bundle.entry[0].resource.meta.profile", "Bundle.entry[0].resource.contained"} <= set(
        _structure_errors(report)
    )


def test_every_url_the_model_trips_on_is_located_and_the_rest_still_checked() -> None:
    endpoint = {"resourceType": "Endpoint", "id": "e", "status": "active", "address": 1.5}
    resource = {
        "resourceType": "DocumentReference",
        "status": "current",
        "contained": [endpoint],
        "content": [{"attachment": {"url": 5, "size": "big"}}, {"attachment": {"url": False}}],
    }
    report = validate(resource)
    messages = {i.expression: i.message for i in report.errors}
    assert messages["DocumentReference.content[0].attachment.url"].endswith("a number is not a valid value here")
    assert messages["DocumentReference.content[1].attachment.url"].endswith("a boolean is not a valid value here")
    assert messages["DocumentReference.contained[0].address"].endswith("a number is not a valid value here")
    assert "DocumentReference.content[0].attachment.size" in messages  # the rest of the resource is checked
    assert "DocumentReference.contained[0].connectionType" in messages  # required, absent
    assert resource["content"][0]["attachment"]["url"] == 5  # the caller's resource is left as it was


def test_json_nested_past_the_recursion_limit_is_a_fatal_finding() -> None:
    depth = 5000
    text = '{"resourceType": "Patient", "extension": [' + '{"a": ' * depth + "1" + "}" * depth + "]}"
    for report in (validate(text), check_rendition(text.encode(), "fhir:r4")):
        assert [(i.severity, i.message) for i in report.issues] == [("fatal", "nested too deeply to be checked")]
    nested: Any = "x"
    for _ in range(depth):
        nested = {"a": nested}
    report = validate({"resourceType": "Patient", "extension": [nested]})
    assert [(i.severity, i.message) for i in report.issues] == [("fatal", "nested too deeply to be checked")]


# -- property: wrong JSON types at random paths -----------------------------------------------------
_PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"profile": ["https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"]},
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "123456789012345", "type": {"text": "INS"}}],
    "name": [{"family": "Martin", "given": ["Anne"]}],
    "gender": "female",
    "birthDate": "1950-02-03",
    "telecom": [{"system": "phone", "value": "0102030405", "use": "home"}],
    "contained": [{"resourceType": "Organization", "id": "o1", "name": "ESSMS"}],
    "managingOrganization": {"reference": "#o1"},
}
_CONDITION = {
    **condition({"coding": [{"system": CLINICAL, "code": "active"}], "text": "active"}),
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
}
_DOCUMENT = {
    "resourceType": "DocumentReference",
    "status": "current",
    "type": {"coding": [{"system": "http://loinc.org", "code": "34133-9"}]},
    "content": [{"attachment": {"contentType": "application/pdf", "url": "https://example.org/doc.pdf"}}],
}
CARRIERS: list[dict[str, Any]] = [
    _PATIENT,
    _CONDITION,
    _DOCUMENT,
    {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{i}",
                "resource": r,
                "request": {"method": "POST", "url": r["resourceType"]},
            }
            for i, r in enumerate((_PATIENT, _CONDITION, _DOCUMENT))
        ],
    },
]

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_wrong_json_types_at_random_paths_are_reported_not_raised(data: st.DataObject) -> None:
    resource = copy.deepcopy(data.draw(st.sampled_from(CARRIERS), label="carrier"))
    kinds: list[tuple[str, str]] = []  # (JSON type before, after) of each change
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        path = data.draw(st.sampled_from(_locations(resource)), label="path")
        holder = _get(resource, path[:-1])
        old = _json_kind(holder[path[-1]])
        value = data.draw(_JSON.filter(lambda v, old=old: _json_kind(v) != old), label="value")
        holder[path[-1]] = value
        kinds.append((old, _json_kind(value)))
    content = json.dumps(resource).encode()
    report = validate(content)  # must not raise
    report.to_operation_outcome()
    for tag in RENDITION_TAGS:
        check_rendition(content, tag).to_operation_outcome()
    # one change, an object or an array where the resource had a string: always a finding
    if len(kinds) == 1 and kinds[0][0] == "str" and kinds[0][1] in ("dict", "list"):
        assert not report.ok, report.issues


def _annexe_document_reference() -> dict[str, Any]:
    from tests.support.shared import SHARED

    path = SHARED / "fhir-examples" / "pdsm4dmp" / "Bundle-example-annexe-searchset-documentreferences.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    bundle = json.loads(path.read_text(encoding="utf-8"))
    resource: dict[str, Any] = bundle["entry"][1]["resource"]
    assert resource["resourceType"] == "DocumentReference" and resource["author"][0]["reference"].startswith("#")
    return resource


@pytest.mark.parametrize("target", ["#kept", "#missing-contained"])
def test_a_primitive_extension_beside_a_reference_gets_the_reports_of_the_bare_value(target: str) -> None:
    # fhirpathpy fails on ``reference.startsWith('#')`` when ``_reference`` carries an extension
    # ("Expected string, but got [...]"): that was a ValidationRunError (HTTP 500 at $validate,
    # a submission held), for a valid resource
    resource = _annexe_document_reference()
    if target != "#kept":
        resource["author"][0]["reference"] = target
    bare = copy.deepcopy(resource)
    resource["author"][0]["_reference"] = {"extension": [{"url": "https://example.org/ext", "valueString": "x"}]}
    assert validate(resource).issues == validate(bare).issues
    for tag in RENDITION_TAGS:
        assert check_rendition(resource, tag).issues == check_rendition(bare, tag).issues


@pytest.mark.parametrize(
    "declared", ["https://interop.esante.gouv.fr/ig/fhir/core/StructureDefinition/fr-core-patient", {"a": "b"}]
)
def test_a_meta_profile_that_is_not_a_list_is_one_structure_error_not_a_note_per_character(declared: Any) -> None:
    report = validate({"resourceType": "Patient", "meta": {"profile": declared}})
    assert [(i.severity, i.code, i.expression) for i in report.issues] == [
        ("error", "structure", "Patient.meta.profile")
    ]
    assert "valid list" in report.issues[0].message
