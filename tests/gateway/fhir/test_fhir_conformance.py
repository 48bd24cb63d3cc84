"""What stock FHIR clients stumbled on: _count=0, modifiers, parameter errors, paging while
documents arrive, caching of Binary, token forms, Allow/HEAD, the OpenAPI description."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.app import openapi_document
from tests.gateway.fhir.conftest import Facade

FHIR_JSON = "application/fhir+json"


def _links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}


def _outcome_400(response: Any, parameter: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert any(parameter in issue.get("expression", []) for issue in body["issue"]), body


def _second_person(record: dict[str, Any], n: int) -> dict[str, Any]:
    other = copy.deepcopy(record)
    other["person"]["local_id"] = f"{record['person']['local_id']}-{n}"
    return other


def test_count_zero_gives_the_total_and_no_next_link(facade: Facade, ppa_record: dict[str, Any]) -> None:
    facade.submit_ppa(ppa_record)
    bundle = facade.get("/DocumentReference", params={"_count": 0}).json()
    assert bundle["total"] == 2 and "entry" not in bundle
    assert set(_links(bundle)) == {"self"}


@pytest.mark.parametrize(
    ("name", "value"),
    [("patient:missing", "true"), ("patient:identifier", "x|y"), ("type:text", "PPA"), ("status:not", "current")],
)
def test_unknown_modifiers_are_refused_naming_the_parameter(facade: Facade, name: str, value: str) -> None:
    _outcome_400(facade.get("/DocumentReference", params={name: value}), name)


@pytest.mark.parametrize(("name", "value"), [("_count", "lots"), ("_count", "101"), ("_count", "-1")])
def test_parameter_errors_are_400_operation_outcomes_naming_the_parameter(
    facade: Facade, name: str, value: str
) -> None:
    _outcome_400(facade.get("/DocumentReference", params={name: value}), name)


def test_keyset_paging_never_repeats_an_entry_while_documents_arrive(
    facade: Facade, ppa_record: dict[str, Any]
) -> None:
    for n in range(3):
        facade.submit_ppa(_second_person(ppa_record, n))  # 6 documents
    seen: list[str] = []
    page = facade.get("/DocumentReference", params={"_count": 2}).json()
    arrived = 0
    while True:
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        if arrived < 2:  # new documents arrive between pages
            facade.submit_ppa(_second_person(ppa_record, 10 + arrived))
            arrived += 1
        links = _links(page)
        if "next" not in links:
            break
        page = facade.http.get(links["next"], headers={"Authorization": f"Bearer {facade.api_key}"}).json()
    assert len(seen) == len(set(seen)) == 6  # the snapshot order: newer documents come first, not in between


def test_binary_and_search_results_are_not_cached(facade: Facade, ppa_record: dict[str, Any]) -> None:
    facade.submit_ppa(ppa_record)
    search = facade.get("/DocumentReference")
    assert search.headers["cache-control"] == "no-store"
    rendition_id = search.json()["entry"][0]["resource"]["id"]
    for headers in ({}, {"Accept": FHIR_JSON}):
        binary = facade.get(f"/Binary/{rendition_id}", headers=headers)
        assert binary.status_code == 200 and binary.headers["cache-control"] == "no-store"
    assert facade.get(f"/DocumentReference/{rendition_id}").headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("params", "total"),
    [
        ({"status": "http://hl7.org/fhir/document-reference-status|current"}, 2),
        ({"status": "|current"}, 2),
        ({"status": "current"}, 2),
        ({"status": "http://hl7.org/fhir/document-reference-status|superseded"}, 0),
        ({"type": "http://loinc.org|80788-3"}, 2),
        ({"type": "urn:oid:2.16.840.1.113883.6.1|80788-3"}, 2),
        ({"type": "80788-3"}, 2),
        ({"type": "|80788-3"}, 0),  # explicitly no system: the LOINC code does not match
        ({"type": "http://loinc.org|74207-2"}, 0),
        ({"type": "http://loinc.org|80788-3,http://loinc.org|74207-2"}, 2),  # OR within one parameter
    ],
)
def test_token_forms(facade: Facade, ppa_record: dict[str, Any], params: dict[str, str], total: int) -> None:
    facade.submit_ppa(ppa_record)
    response = facade.get("/DocumentReference", params=params)
    assert response.status_code == 200, response.text
    assert response.json()["total"] == total


def test_a_status_token_of_another_system_is_refused(facade: Facade) -> None:
    _outcome_400(facade.get("/DocumentReference", params={"status": "http://example.org|current"}), "status")


def test_head_and_allow(facade: Facade, ppa_record: dict[str, Any]) -> None:
    facade.submit_ppa(ppa_record)
    rendition_id = facade.get("/DocumentReference").json()["entry"][0]["resource"]["id"]
    for path in ("/metadata", "/DocumentReference", f"/DocumentReference/{rendition_id}", f"/Binary/{rendition_id}"):
        head = facade.http.head(facade.fhir_base + path, headers={"Authorization": f"Bearer {facade.api_key}"})
        assert head.status_code == 200 and head.content == b"", path
        refused = facade.http.delete(facade.fhir_base + path, headers={"Authorization": f"Bearer {facade.api_key}"})
        assert refused.status_code == 405, path
        assert {m.strip() for m in refused.headers["allow"].split(",")} == {"GET", "HEAD"}, path
        assert refused.json()["resourceType"] == "OperationOutcome"
    refused = facade.http.get(facade.fhir_base + "/$validate", headers={"Authorization": f"Bearer {facade.api_key}"})
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"


def test_openapi_describes_the_fhir_routes_as_fhir() -> None:
    paths = openapi_document()["paths"]
    for path, item in paths.items():
        if not path.startswith("/fhir/r4"):
            continue
        for method, operation in item.items():
            if method not in ("get", "post"):
                continue
            ok = operation["responses"]["200"]["content"]
            assert list(ok) != ["application/json"], (path, method)
            assert FHIR_JSON in ok or path.startswith("/fhir/r4/Binary"), (path, method)
            if path != "/fhir/r4/metadata":
                for status in ("400", "401", "403"):
                    error = operation["responses"][status]["content"][FHIR_JSON]["schema"]
                    assert error == {"$ref": "#/components/schemas/OperationOutcome"}, (path, status)
    validate = paths["/fhir/r4/$validate"]["post"]
    body = validate["requestBody"]["content"][FHIR_JSON]["schema"]
    resource = openapi_document()["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert resource["type"] == "object" and "resourceType" in resource["required"]
    binary = paths["/fhir/r4/Binary/{rendition_id}"]["get"]["responses"]["200"]["content"]
    assert {"application/xml", FHIR_JSON} <= set(binary)
