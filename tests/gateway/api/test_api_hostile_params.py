"""Inputs at the edges of their types answer a precise 4xx problem naming the parameter, never a 500:
dates near year 1 and 9999 (filters and cursors), integers past 64 bits, JSON nested deeper than the
parser's recursion limit, on /v1 and on the FHIR facade."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.gateway.api.live import Api
from tests.gateway.api.support import ADMIN_TOKEN, bearer, note, post_note

EDGE_DATES = [
    "0001-01-01T00:00:00+00:00",
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59.999999-14:00",
    "9999-12-31T23:59:59.999999",
    "9999-12-31",
]
HUGE = str(2**64 + 1)


def _problem(response: Any, status: int, parameter: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    if parameter is not None:
        names = [e.get("parameter") or e.get("pointer") for e in body.get("errors", [])]
        assert parameter in names, body
    return body


def _cursor(created: str, sid: str = "ffffffff-ffff-ffff-ffff-ffffffffffff") -> str:
    raw = json.dumps([created, sid]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("value", EDGE_DATES)
@pytest.mark.parametrize("name", ["created_from", "created_to"])
def test_submission_filters_at_the_ends_of_time(client: Api, tenant: Any, name: str, value: str) -> None:
    post_note(client, tenant.api_key, note(tenant.finess))
    response = client.get("/v1/submissions", params={name: value}, headers=bearer(tenant.api_key))
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        _problem(response, 422, name)


@pytest.mark.parametrize("value", [*EDGE_DATES, "not-a-date", "12345"])
def test_crafted_cursors(client: Api, tenant: Any, value: str) -> None:
    post_note(client, tenant.api_key, note(tenant.finess))
    response = client.get("/v1/submissions", params={"cursor": _cursor(value)}, headers=bearer(tenant.api_key))
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        _problem(response, 422, "cursor")
    other = client.get("/v1/submissions", params={"cursor": _cursor(value, sid=[1])}, headers=bearer(tenant.api_key))  # type: ignore[arg-type]
    _problem(other, 422, "cursor")


@pytest.mark.parametrize("value", EDGE_DATES)
@pytest.mark.parametrize("name", ["since", "until"])
def test_audit_export_at_the_ends_of_time(client: Api, auditor_key: str, name: str, value: str) -> None:
    response = client.get("/v1/audit-events", params={name: value}, headers=bearer(auditor_key))
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        _problem(response, 422, name)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/audit-events", "after"),
        ("/fhir/r4/AuditEvent", "_after"),
        ("/fhir/r4/DocumentReference", "_offset"),
        ("/fhir/r4/DocumentReference", "_count"),
        ("/v1/submissions", "limit"),
    ],
)
@pytest.mark.parametrize("value", [HUGE, "-" + HUGE, "1e400", "0x10"])
def test_integers_past_64_bits(client: Api, tenant: Any, path: str, name: str, value: str) -> None:
    key = tenant.api_key if path.startswith(("/v1/submissions", "/fhir/r4/DocumentReference")) else ADMIN_TOKEN
    response = client.get(path, params={name: value}, headers=bearer(key))
    assert response.status_code in (400, 422), response.text
    body = response.json()
    if path.startswith("/fhir"):
        assert body["resourceType"] == "OperationOutcome"
        assert name in json.dumps(body)
    else:
        _problem(response, 422, name)


def _deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [990, 5000, 9000])
def test_deeply_nested_json_is_a_400(client: Api, tenant: Any, depth: int) -> None:
    body = '{"document_type": "test-note", "record": ' + _deep(depth) + "}"
    response = client.post(
        "/v1/submissions",
        data=body.encode(),
        headers={**bearer(tenant.api_key), "Content-Type": "application/json"},
    )
    problem = _problem(response, 400)
    assert problem["type"].endswith("invalid-json") and "nested" in problem["detail"]

    validate = client.post(
        "/fhir/r4/$validate",
        data=('{"resourceType": "Basic", "extension": ' + "[" * depth + "]" * depth + "}").encode(),
        headers={**bearer(tenant.api_key), "Content-Type": "application/fhir+json"},
    )
    assert validate.status_code == 400, validate.text
    assert validate.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"document_type": "test-note", "record": {"n": NaN}}', "NaN"),
        (b'{"document_type": "test-note", "record": {"n": 1e400}}', "too large"),
        (b'{"document_type": "test-note", "document_type": "dlu", "record": {}}', "same member name twice"),
        (b'{"document_type": "test-note", "record": {"n": ' + b"9" * 5000 + b"}}", "too many digits"),
        (b'{"document_type": "test-note", "record": {"n": "\xff\xfe"}}', "not UTF-8"),
    ],
)
def test_json_that_parsers_disagree_on_is_refused(client: Api, tenant: Any, raw: bytes, reason: str) -> None:
    for path, media_type in (("/v1/submissions", "application/json"), ("/fhir/r4/$validate", "application/fhir+json")):
        response = client.post(path, data=raw, headers={**bearer(tenant.api_key), "Content-Type": media_type})
        assert response.status_code == 400, response.text
        assert reason in response.text
