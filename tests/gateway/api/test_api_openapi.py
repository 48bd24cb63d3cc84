"""The published OpenAPI document: up to date, with the record schema of each document type."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.app import openapi_document
from mappings import registry

ROOT = Path(__file__).resolve().parents[3]


def test_committed_openapi_document_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "export_openapi.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_request_body_is_a_union_of_the_registered_record_models() -> None:
    doc = openapi_document()  # the test-note type is registered by conftest
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/v1/submissions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SubmissionRequest"}
    mapping = schemas["SubmissionRequest"]["discriminator"]["mapping"]
    assert set(mapping) == set(registry.public_codes())
    note = schemas["TestNoteSubmission"]
    assert note["properties"]["document_type"]["const"] == "test-note"
    assert note["properties"]["record"] == {"$ref": "#/components/schemas/NoteRecord"}
    assert note["additionalProperties"] is False
    assert schemas["NoteRecord"]["additionalProperties"] is False
    assert set(schemas["NoteRecord"]["required"]) == {"person_ref", "essms_finess", "text"}
    if "dlu" in mapping:
        assert "DluRecord" in schemas


def test_operations_are_documented_and_errors_are_problem_documents() -> None:
    doc = openapi_document()  # the test-note type is registered by conftest
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert operation.get("description"), f"{method.upper()} {path} has no docstring"
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    expected = "application/fhir+json" if path.startswith("/fhir/") else "application/problem+json"
                    if path == "/oauth/token":  # RFC 6749 §5.2 errors: what OAuth client libraries read
                        expected = "application/json"
                    assert list(response["content"]) == [expected], (path, method, status)
    submissions = doc["paths"]["/v1/submissions"]
    assert {"202", "400", "401", "403", "409", "413", "415", "422"} <= set(submissions["post"]["responses"])
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
