"""The read-only FHIR facade, over real HTTP, with documents produced by the real intake + pipeline."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fhirclient import client as fhir_client
from fhirclient.models.binary import Binary
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.documentreference import DocumentReference
from lxml import etree

import profiles
from mappings import Code, registry
from tests.gateway.fhir.conftest import Facade
from tests.support.doctype import NoteDocumentType

FHIR_JSON = "application/fhir+json"
NS = {"h": "urn:hl7-org:v3"}


def _outcome(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code
    return body


def _entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])]


def _updated(record: dict[str, Any]) -> dict[str, Any]:
    update = copy.deepcopy(record)
    update["ppa"]["goals"][1]["state"] = "active"
    update["ppa"]["goals"][1]["achievement"] = "in-progress"
    return update


def test_capability_statement_lists_exactly_what_is_supported(facade: Facade) -> None:
    response = facade.get("/metadata", key="")  # readable without credentials
    assert response.status_code == 200 and response.headers["content-type"].startswith(FHIR_JSON)
    statement = response.json()
    assert statement["fhirVersion"] == "4.0.1"
    rest = statement["rest"][0]
    assert {r["type"]: [i["code"] for i in r["interaction"]] for r in rest["resource"]} == {
        "DocumentReference": ["read", "search-type"],
        "Binary": ["read"],
        "AuditEvent": ["search-type"],
    }
    params = {p["name"] for p in rest["resource"][0]["searchParam"]}
    assert params == {"patient", "type", "status", "_count"}
    assert [op["name"] for op in rest["operation"]] == ["validate"]
    assert profiles.validate(statement).ok


def test_errors_are_operation_outcomes(facade: Facade, other_key: str) -> None:
    _outcome(facade.get("/DocumentReference", key=""), 401, "login")
    _outcome(facade.get("/DocumentReference/nope"), 404, "not-found")
    _outcome(facade.get("/Binary/nope"), 404, "not-found")
    _outcome(facade.get("/DocumentReference", params={"subject:Patient.name": "x"}), 400, "invalid")
    _outcome(facade.get("/DocumentReference", params={"status": "entered-in-error"}), 400, "invalid")
    _outcome(facade.get("/AuditEvent"), 403, "forbidden")  # scope 'read' is not enough for the trail
    _outcome(facade.get("/Patient"), 404, "not-found")
    del other_key


def test_documents_versions_and_binary(facade: Facade, ppa_record: dict[str, Any]) -> None:
    facade.submit_ppa(ppa_record)
    facade.submit_ppa(_updated(ppa_record))
    person = ppa_record["person"]["local_id"]

    everything = facade.get("/DocumentReference", params={"patient": person}).json()
    assert everything["resourceType"] == "Bundle" and everything["type"] == "searchset"
    assert everything["total"] == 4  # cda + fhir, two versions
    cda = [d for d in _entries(everything) if d["content"][0]["attachment"]["contentType"] == "application/xml"]
    assert len(cda) == 2
    newest, oldest = cda  # newest first
    assert (newest["status"], oldest["status"]) == ("current", "superseded")
    assert newest["type"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "80788-3",
        "display": "Projet personnalisé d'accompagnement",
    }
    assert newest["content"][0]["format"]["code"] == "urn:ihe:iti:xds-sd:pdf:2008"
    assert newest["context"]["facilityType"]["coding"][0]["code"] == "SA17"
    assert newest["subject"]["identifier"]["value"] == person
    assert newest["relatesTo"] == [{"code": "replaces", "target": {"reference": f"DocumentReference/{oldest['id']}"}}]
    for doc in _entries(everything):
        assert profiles.validate(doc).ok, doc

    current = facade.get("/DocumentReference", params={"patient": person, "status": "current"}).json()
    assert sorted(d["id"] for d in _entries(current)) == sorted(
        d["id"] for d in _entries(everything) if d["status"] == "current"
    )
    assert current["total"] == 2
    superseded = facade.get("/DocumentReference", params={"status": "superseded", "type": "http://loinc.org|80788-3"})
    assert superseded.json()["total"] == 2
    assert facade.get("/DocumentReference", params={"type": "http://loinc.org|74207-2"}).json()["total"] == 0
    assert facade.get("/DocumentReference", params={"patient": "someone-else"}).json()["total"] == 0

    # the attachment URL gives the document itself, exactly what the pipeline stored
    url = newest["content"][0]["attachment"]["url"]
    raw = facade.http.get(url, headers={"Authorization": f"Bearer {facade.api_key}", "Accept": "application/xml"})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/xml")
    assert len(raw.content) == newest["content"][0]["attachment"]["size"]
    doc = etree.fromstring(raw.content)
    assert doc.find("h:versionNumber", NS).get("value") == "2"  # type: ignore[union-attr]
    assert doc.find("h:code", NS).get("code") == "80788-3"  # type: ignore[union-attr]
    as_resource = facade.get(f"/Binary/{newest['id']}", headers={"Accept": FHIR_JSON}).json()
    assert as_resource["resourceType"] == "Binary" and as_resource["contentType"] == "application/xml"
    assert base64.b64decode(as_resource["data"]) == raw.content


def test_paging(facade: Facade, ppa_record: dict[str, Any]) -> None:
    facade.submit_ppa(ppa_record)
    facade.submit_ppa(_updated(ppa_record))
    seen: list[str] = []
    page = facade.get("/DocumentReference", params={"_count": 3}).json()
    while True:
        seen += [d["id"] for d in _entries(page)]
        links = {link["relation"]: link["url"] for link in page["link"]}
        if "next" not in links:
            break
        page = facade.http.get(links["next"], headers={"Authorization": f"Bearer {facade.api_key}"}).json()
    assert len(seen) == len(set(seen)) == 4
    assert "previous" not in links  # keyset paging: forward 'next' links only


def test_reading_a_document_is_audited(facade: Facade, ppa_record: dict[str, Any], auditor_key: str) -> None:
    facade.submit_ppa(ppa_record)
    docs = _entries(facade.get("/DocumentReference").json())
    assert facade.get(f"/Binary/{docs[0]['id']}", headers={"Accept": "application/xml"}).status_code == 200
    trail = facade.get("/AuditEvent", key=auditor_key, params={"_count": 100}).json()
    events = _entries(trail)
    assert events and all(e["resourceType"] == "AuditEvent" for e in events)
    reads = [e for e in events if e["action"] == "R" and docs[0]["id"] in str(e)]
    assert reads, "the Binary read is in the trail"
    assert profiles.validate(events[-1]).ok


def test_other_tenants_see_nothing(facade: Facade, ppa_record: dict[str, Any], other_key: str) -> None:
    facade.submit_ppa(ppa_record)
    docs = _entries(facade.get("/DocumentReference").json())
    assert facade.get("/DocumentReference", key=other_key).json()["total"] == 0
    _outcome(facade.get(f"/Binary/{docs[0]['id']}", key=other_key), 404, "not-found")
    _outcome(facade.get(f"/DocumentReference/{docs[0]['id']}", key=other_key), 404, "not-found")


def test_validate_operation(facade: Facade, ppa_record: dict[str, Any]) -> None:
    facade.submit_ppa(ppa_record)
    docs = _entries(facade.get("/DocumentReference").json())
    fhir_doc = next(d for d in docs if d["content"][0]["attachment"]["contentType"] == FHIR_JSON)
    bundle = facade.get(f"/Binary/{fhir_doc['id']}").json()  # a FHIR rendition is served as itself
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    ok = facade.post("/$validate", bundle)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith(FHIR_JSON)
    assert not [i for i in ok.json()["issue"] if i["severity"] in ("error", "fatal")]
    broken = {"resourceType": "Patient", "gender": "robot"}
    issues = facade.post("/Patient/$validate", broken).json()["issue"]
    assert any(i["severity"] == "error" for i in issues)
    _outcome(facade.post("/$validate", bundle, key="dgw_wrong"), 401, "login")


def test_validate_operation_reports_wrong_json_types(facade: Facade) -> None:
    """JSON of the wrong type where the profile checks iterate or look codes up (once an HTTP 500):
    200 and an OperationOutcome locating each; an unusable Parameters body is a 400."""
    patient = {"resourceType": "Patient", "meta": {"profile": 5}, "contained": True, "gender": {"code": "female"}}
    answer = facade.post("/Patient/$validate", patient)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(FHIR_JSON)
    errors = [i.get("expression") for i in answer.json()["issue"] if i["severity"] == "error"]
    assert ["Patient.meta.profile"] in errors and ["Patient.contained"] in errors and ["Patient.gender"] in errors
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/1"},
        "clinicalStatus": {"coding": [{"system": ["x"], "code": {"code": "active"}}]},
        "verificationStatus": {"coding": False},
    }
    answer = facade.post("/$validate", condition)
    assert answer.status_code == 200
    errors = [i.get("expression") for i in answer.json()["issue"] if i["severity"] == "error"]
    assert ["Condition.clinicalStatus.coding[0].code"] in errors and ["Condition.verificationStatus.coding"] in errors
    _outcome(facade.post("/$validate", {"resourceType": "Parameters", "parameter": 5}), 400, "structure")


def test_a_stock_fhir_client_browses_documents_to_binary(facade: Facade, ppa_record: dict[str, Any]) -> None:
    facade.submit_ppa(ppa_record)
    facade.submit_ppa(_updated(ppa_record))
    smart = fhir_client.FHIRClient(settings={"app_id": "dui-vendor", "api_base": facade.fhir_base + "/"})
    smart.server.session.headers["Authorization"] = f"Bearer {facade.api_key}"
    statement = CapabilityStatement.read_from("metadata", smart.server)
    assert statement.fhirVersion == "4.0.1"
    search = DocumentReference.where(struct={"patient": ppa_record["person"]["local_id"], "_count": "1"})
    found = list(search.perform_resources_iter(smart.server))  # follows the 'next' links
    assert len(found) == 4
    assert sorted(d.status for d in found) == ["current", "current", "superseded", "superseded"]
    for doc in found:
        assert isinstance(doc, DocumentReference)
        binary_id = doc.content[0].attachment.url.rsplit("/", 1)[1]
        if doc.content[0].attachment.contentType == FHIR_JSON:
            continue  # a FHIR Bundle is served as itself, not wrapped in Binary
        binary = Binary.read(binary_id, smart.server)
        data = base64.b64decode(binary.data)
        assert len(data) == doc.content[0].attachment.size
        assert hashlib.sha256(data).hexdigest()
        assert b"80788-3" in data


def test_searching_and_reading_document_references_is_audited(
    facade: Facade, ppa_record: dict[str, Any], auditor_key: str
) -> None:
    """Like the REST listing (``searched``) and status view (``read``): who looked at which person's documents."""
    facade.submit_ppa(ppa_record)
    docs = _entries(facade.get("/DocumentReference").json())
    assert docs
    assert facade.get(f"/DocumentReference/{docs[0]['id']}").status_code == 200
    events = _entries(facade.get("/AuditEvent", key=auditor_key, params={"_count": 100}).json())
    actions = [(s["code"], e) for e in events for s in e.get("subtype", [])]
    searched = [e for code, e in actions if code == "searched"]
    read = [e for code, e in actions if code == "read" and docs[0]["id"] in str(e)]
    assert searched, "the DocumentReference search is in the trail"
    assert read, "the DocumentReference read is in the trail"


# --------------------------------------------------------------------------------------------
# Document types carry their own type codes: the facade reads them, it has no table of its own
# --------------------------------------------------------------------------------------------
DLU_RECORD = Path(__file__).parents[2] / "resources" / "records" / "minimal.json"
CONSULT_TYPE = Code("11488-4", "2.16.840.1.113883.6.1", "Note de consultation")
CONSULT_CLASS = Code("10", "1.2.250.1.213.1.1.4.1", "Compte rendu")


class _ConsultNoteType(NoteDocumentType):
    """A document type that exists only here: fhir.py knows nothing about it."""

    code: ClassVar[str] = "test-consult-note"
    type_code: ClassVar[Code | None] = CONSULT_TYPE
    class_code: ClassVar[Code | None] = CONSULT_CLASS


@pytest.fixture
def consult_note() -> Iterator[str]:
    doc_type = registry.register(_ConsultNoteType())
    yield doc_type.code
    registry.unregister(doc_type.code)


def test_dlu_documents_have_the_dlu_type(facade: Facade, tenant: Any) -> None:
    record = json.loads(DLU_RECORD.read_text(encoding="utf-8"))
    record["essms"]["finess"] = tenant.finess
    facade.submit("dlu", record)
    found = facade.get("/DocumentReference", params={"type": "http://loinc.org|74207-2"}).json()
    assert found["total"] >= 1
    for doc in _entries(found):
        assert doc["type"]["coding"] == [
            {"system": "http://loinc.org", "code": "74207-2", "display": "Dossier de liaison d'urgence"}
        ]
    assert facade.get("/DocumentReference", params={"type": "http://loinc.org|80788-3"}).json()["total"] == 0


def test_a_document_type_registered_elsewhere_gets_its_own_type_and_category(
    consult_note: str, facade: Facade, tenant: Any
) -> None:
    facade.submit(consult_note, {"person_ref": "p-consult", "essms_finess": tenant.finess, "text": "RAS"})
    found = facade.get("/DocumentReference", params={"type": "http://loinc.org|11488-4"}).json()
    assert found["total"] == 1
    (doc,) = _entries(found)
    assert doc["type"] == {
        "coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Note de consultation"}],
        "text": "Note de consultation",
    }
    # the rendition has no exchange metadata: the category is the document type's XDS classCode
    assert doc["category"] == [
        {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.1", "code": "10", "display": "Compte rendu"}]}
    ]
    assert facade.get("/DocumentReference", params={"type": "11488-4"}).json()["total"] == 1
