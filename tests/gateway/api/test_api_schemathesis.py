"""Schemathesis against the app's own OpenAPI document, over real HTTP (uvicorn on 127.0.0.1).

Every operation gets its documented examples (the demo DLU records, a FHIR resource for
``$validate``: the success paths) and a few generated requests, valid and invalid. Whatever comes
back must not be a 5xx and must match the document: status code, content type, headers, body
schema. Bounded: a handful of examples per operation, well under a minute in total."""

from __future__ import annotations

import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session, sessionmaker

from gateway.app import openapi_document
from gateway.security.clients import add_essms, create_api_client
from gateway.storage.db import session_scope
from tests.gateway.api.live import Api
from tests.gateway.api.support import ADMIN_TOKEN

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
GENERATED_PER_OPERATION = 6
DEMO_FINESS = "759900004"  # the ESSMS of the demo records used as the schema's examples


@pytest.fixture
def full_key(tenant: Any, session_factory: sessionmaker[Session]) -> str:
    """A client of the tenant with every scope, owning the demo records' ESSMS too."""
    with session_scope(session_factory) as session:
        add_essms(session, tenant_id=tenant.id, finess=DEMO_FINESS, name="EHPAD démo", category="500")
        _, key = create_api_client(session, tenant_id=tenant.id, name="all", scopes="submit read admin")
        return key


def _examples(operation: Any) -> list[dict[str, Any]]:
    body = operation.definition.raw.get("requestBody", {})
    out = []
    for media_type, content in body.get("content", {}).items():
        if "example" in content:
            out.append({"media_type": media_type, "body": content["example"]})
        for example in content.get("examples", {}).values():
            out.append({"media_type": media_type, "body": example["value"]})
    return out


@pytest.mark.timeout(120)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(client: Api, full_key: str) -> None:
    schema = schemathesis.openapi.from_dict(openapi_document())
    started = time.monotonic()
    exercised: dict[str, set[int]] = {}
    accepted: list[str] = []  # submission ids from 202 answers: later operations act on real rows
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        key = ADMIN_TOKEN if "audit" in operation.path.lower() else full_key
        headers = {"Authorization": f"Bearer {key}"}
        statuses = exercised.setdefault(label, set())
        # /readyz answers 503 by contract when a dependency is down (here: no CI-SIS kit)
        checks = CHECKS[1:] if operation.path == "/readyz" else CHECKS

        def run(case: Any) -> None:
            case.headers = {**(case.headers or {}), **headers}
            response = case.call(base_url=client.base_url, timeout=30)
            statuses.add(response.status_code)
            if response.status_code == 202 and operation.path == "/v1/submissions":
                accepted.append(response.json()["id"])
            case.validate_response(response, checks=checks)

        for example in _examples(operation):  # the documented, valid requests: success paths
            path_parameters = (
                {"resource_type": example["body"]["resourceType"]} if "{resource_type}" in operation.path else None
            )
            run(operation.Case(body=example["body"], media_type=example["media_type"], path_parameters=path_parameters))

        if "{submission_id}" in operation.path and accepted:  # stateful: the submissions just accepted
            for submission_id in accepted[:2]:
                params = {"submission_id": submission_id, "kind": "cda"}
                run(
                    operation.Case(path_parameters={k: v for k, v in params.items() if "{" + k + "}" in operation.path})
                )

        @settings(
            max_examples=GENERATED_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data())
        def generated(data: st.DataObject) -> None:
            mode = data.draw(
                st.sampled_from([schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
            )
            run(data.draw(operation.as_strategy(generation_mode=mode)))

        generated()
    elapsed = time.monotonic() - started
    assert elapsed < 60, f"the schemathesis run took {elapsed:.0f}s"
    assert 202 in exercised["POST /v1/submissions"], exercised  # a valid submission was accepted
    assert 200 in exercised["POST /fhir/r4/$validate"], exercised
    assert len(exercised) >= 15
    assert 200 in exercised["GET /v1/submissions/{submission_id}"], exercised
    assert 200 in exercised["GET /v1/submissions/{submission_id}/record"], exercised
