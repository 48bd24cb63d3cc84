"""check_rendition (the conformance gate), OperationOutcome, the CLI and the $validate endpoint."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from profiles import check_rendition, validate
from profiles.api import router
from tests.support.shared import SHARED

TDDUI = SHARED / "fhir-examples" / "tddui"
PDSM = SHARED / "fhir-examples" / "pdsm4dmp"
pytestmark = pytest.mark.skipif(not TDDUI.is_dir(), reason="shared FHIR examples not available")


def example(name: str) -> dict[str, Any]:
    folder = TDDUI if (TDDUI / name).exists() else PDSM
    return json.loads((folder / name).read_text(encoding="utf-8"))


def tddui_transaction() -> dict[str, Any]:
    """The TDDUI examples as one tddui-bundle transaction (every entry POSTed)."""
    entries = []
    for path in sorted(TDDUI.glob("*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        entries.append(
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{len(entries):012d}",
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
        )
    return {
        "resourceType": "Bundle",
        "meta": {"profile": ["https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-bundle"]},
        "type": "transaction",
        "entry": entries,
    }


def test_tddui_transaction_of_the_examples_passes_the_tddui_gate() -> None:
    report = check_rendition(json.dumps(tddui_transaction()).encode(), "fhir:tddui")
    assert report.ok, [i.message for i in report.errors]
    assert "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-bundle" in report.profiles


def test_tddui_gate_checks_each_entry_and_the_bundle_rules() -> None:
    bundle = tddui_transaction()
    bundle["entry"][0]["request"]["method"] = "PUT"
    del bundle["entry"][5]["resource"]["identifier"][0]["system"]  # the Patient INS
    bundle["entry"][6]["resource"]["meta"] = {"profile": ["http://example.org/other"]}
    report = check_rendition(json.dumps(bundle).encode(), "fhir:tddui")
    found = {(i.expression, i.code) for i in report.errors}
    assert ("Bundle.entry[0].request.method", "value") in found
    assert ("Bundle.entry[5].resource.identifier[0].system", "required") in found
    assert ("Bundle.entry[6].resource.meta.profile", "required") in found


def test_r4_gate_rejects_r4b_only_content_and_broken_documents() -> None:
    document = {
        "resourceType": "Bundle",
        "type": "document",
        "timestamp": "2026-01-01T10:00:00+01:00",
        "entry": [
            {"fullUrl": "urn:uuid:0e7f2e0e-0000-4000-8000-000000000001", "resource": {"resourceType": "Patient"}},
            {
                "fullUrl": "urn:uuid:0e7f2e0e-0000-4000-8000-000000000002",
                "resource": {"resourceType": "SubscriptionStatus", "status": "active", "type": "heartbeat"},
            },
            {
                "fullUrl": "urn:uuid:0e7f2e0e-0000-4000-8000-000000000003",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "poids"},
                    "subject": {"reference": "urn:uuid:0e7f2e0e-0000-4000-8000-00000000dead"},
                },
            },
        ],
    }
    report = check_rendition(json.dumps(document).encode(), "fhir:r4")
    found = {(i.expression, i.rule) for i in report.errors}
    assert ("Bundle", "bdl-9") in found  # no identifier
    assert ("Bundle", "bdl-11") in found  # first entry is not a Composition
    assert ("Bundle.entry[1].resource", "r4") in found  # SubscriptionStatus is R4B only
    assert ("Bundle.entry[2].resource.subject.reference", "reference") in found
    document["type"] = "subscription-notification"
    assert ("Bundle.type", "binding") in {(i.expression, i.rule) for i in validate(document).errors}


def test_unknown_tag_and_non_json_are_fatal() -> None:
    assert [i.severity for i in check_rendition(b"{}", "fhir:nope").issues] == ["fatal"]
    report = check_rendition(b"<ClinicalDocument/>", "fhir:r4")
    assert not report.ok and report.issues[0].severity == "fatal"


def test_operation_outcome_is_itself_valid_r4() -> None:
    broken = example("Patient-tddui-patient-ins-example.json")
    del broken["identifier"][0]["system"]
    outcome = validate(broken).to_operation_outcome()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(i["severity"] == "error" and i["code"] == "required" for i in outcome["issue"])
    assert "Patient.identifier[0].system" in {e for i in outcome["issue"] for e in i.get("expression", [])}
    assert validate(outcome).ok
    assert validate(validate(example("Consent-tddui-pp-pa-consent-accord-example.json")).to_operation_outcome()).ok


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("dui-gateway")
    return subprocess.run([str(exe), "fhir", *args], capture_output=True, text=True, timeout=120, env=os.environ)


def test_cli_validates_files_in_a_real_process(tmp_path: Path) -> None:
    ok = run_cli("validate", str(TDDUI / "Encounter-tddui-encounter-sejour-example.json"))
    assert ok.returncode == 0, ok.stderr
    assert "valid: 0 error(s)" in ok.stdout
    broken = example("Encounter-tddui-encounter-sejour-example.json")
    del broken["serviceProvider"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    bad = run_cli("validate", str(path), "--json")
    assert bad.returncode == 1
    outcome = json.loads(bad.stdout)
    assert ["Encounter.serviceProvider"] in [i.get("expression") for i in outcome["issue"]]
    profile = "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-encounter-evenement"
    other = run_cli("validate", str(TDDUI / "Encounter-tddui-encounter-sejour-example.json"), "--profile", profile)
    assert other.returncode == 1  # a séjour is not an évènement: period.end, identifier rules...
    assert "tddui-encounter-evenement" in other.stdout


class Client:
    """The router mounted in a FastAPI app, called over HTTP through httpx's ASGI transport."""

    def __init__(self) -> None:
        self.app = FastAPI()
        self.app.include_router(router, prefix="/fhir")

    def post(self, url: str, content: bytes | str, params: dict[str, str] | None = None) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
                return await http.post(url, content=content, params=params)

        return asyncio.run(call())


@pytest.fixture()
def client() -> Client:
    return Client()


def test_validate_endpoint_accepts_resource_or_parameters(client: Client) -> None:
    consent = example("Consent-tddui-pp-pa-consent-accord-example.json")
    answer = client.post("/fhir/Consent/$validate", content=json.dumps(consent))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/fhir+json")
    assert [i["severity"] for i in answer.json()["issue"]] == ["information"]

    broken = copy.deepcopy(consent)
    del broken["dateTime"]
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": broken}]}
    answer = client.post("/fhir/$validate", content=json.dumps(parameters))
    assert answer.status_code == 200
    assert ["Consent.dateTime"] in [i.get("expression") for i in answer.json()["issue"]]

    profile = "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-careplan-projet-personnalise"
    answer = client.post("/fhir/$validate", params={"profile": profile}, content=json.dumps(consent))
    assert any(i["code"] == "structure" for i in answer.json()["issue"])  # a Consent is not a CarePlan

    assert client.post("/fhir/Patient/$validate", content=json.dumps(consent)).status_code == 400
    assert client.post("/fhir/$validate", content=b"not json").status_code == 400


def test_pdsm_gate_checks_the_provide_bundle_and_its_entries() -> None:
    bundle = example("Bundle-example-td2-iti65-lot-soumission.json")
    bundle["entry"][1]["resource"]["custodian"] = {"reference": "urn:uuid:aaaaaaaa-0000-0000-0000-000000000001"}
    report = check_rendition(json.dumps(bundle).encode(), "fhir:pdsm")
    # the custodian points at the SubmissionSet List: a reference of the wrong type (and the draft's
    # SubmissionSet source is a contained Practitioner, which PDSm does not allow)
    assert [(i.expression, i.rule) for i in report.errors] == [
        ("Bundle.entry[0].resource.source.reference", "reference"),
        ("Bundle.entry[1].resource.custodian.reference", "reference"),
    ]
    del bundle["entry"][1]["resource"]["meta"]
    del bundle["entry"][1]["resource"]["custodian"]
    report = check_rendition(json.dumps(bundle).encode(), "fhir:pdsm")
    assert ("Bundle.entry[1].resource.meta.profile", "required") in {(i.expression, i.code) for i in report.errors}
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "List"]
    report = check_rendition(json.dumps(bundle).encode(), "fhir:pdsm")
    # the SubmissionSet slice (IHE MHD ProvideBundle, 1..1) is missing
    assert ("Bundle.entry", "card") in {(i.expression, i.rule) for i in report.errors}
    assert any("slice SubmissionSet" in i.message for i in report.errors)


def test_validate_endpoint_reports_wrong_json_types_with_200(client: Client) -> None:
    """Shapes that raised out of ``validate`` (HTTP 500): an OperationOutcome with their locations."""
    patient = example("Patient-tddui-patient-ins-example.json")
    patient["meta"]["profile"] = 5
    patient["contained"] = True
    answer = client.post("/fhir/Patient/$validate", content=json.dumps(patient))
    assert answer.status_code == 200
    errors = [i.get("expression") for i in answer.json()["issue"] if i["severity"] == "error"]
    assert ["Patient.meta.profile"] in errors and ["Patient.contained"] in errors
    consent = example("Consent-tddui-pp-pa-consent-accord-example.json")
    consent["status"] = {"code": "active"}
    consent["category"] = [{"coding": False}]
    answer = client.post("/fhir/$validate", content=json.dumps(consent))
    assert answer.status_code == 200
    errors = [i.get("expression") for i in answer.json()["issue"] if i["severity"] == "error"]
    assert ["Consent.status"] in errors and ["Consent.category[0].coding"] in errors
    # a Parameters body whose parameters are not usable: 400, not 500
    parameters = {"resourceType": "Parameters", "parameter": 5}
    answer = client.post("/fhir/$validate", content=json.dumps(parameters))
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["expression"] == ["Parameters.parameter"]
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": consent}, {"name": "profile", "valueUri": {"url": "x"}}],
    }
    answer = client.post("/fhir/$validate", content=json.dumps(parameters))
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["expression"] == ["Parameters.parameter[1]"]
