"""The FHIR facade is walled by tenant exactly like /v1: the administrator token administers
(audit trail, validation), it never reads clinical content."""

from __future__ import annotations

from typing import Any

from tests.gateway.fhir.conftest import ADMIN_TOKEN, Facade

FHIR_JSON = "application/fhir+json"


def _forbidden(response: Any) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "forbidden"


def test_the_admin_token_reads_no_clinical_content(facade: Facade, ppa_record: dict[str, Any]) -> None:
    facade.submit_ppa(ppa_record)
    mine = facade.get("/DocumentReference").json()
    assert mine["total"] == 2
    rendition_id = mine["entry"][0]["resource"]["id"]
    person = ppa_record["person"]["local_id"]
    birth = ppa_record["person"]["traits"]["birth_date"]

    for path, params in (
        ("/DocumentReference", {}),
        ("/DocumentReference", {"patient": person}),
        (f"/DocumentReference/{rendition_id}", {}),
        (f"/Binary/{rendition_id}", {}),
    ):
        response = facade.get(path, key=ADMIN_TOKEN, params=params)
        _forbidden(response)
        assert birth not in response.text and person not in response.text
    binary = facade.get(f"/Binary/{rendition_id}", key=ADMIN_TOKEN, headers={"Accept": FHIR_JSON})
    _forbidden(binary)

    # administration stays open to it: the audit trail (references only) and $validate
    trail = facade.get("/AuditEvent", key=ADMIN_TOKEN)
    assert trail.status_code == 200, trail.text
    assert birth not in trail.text
    outcome = facade.post("/$validate", {"resourceType": "Basic", "code": {"text": "x"}}, key=ADMIN_TOKEN)
    assert outcome.status_code == 200, outcome.text


def test_another_organisation_sees_nothing(facade: Facade, ppa_record: dict[str, Any], other_key: str) -> None:
    facade.submit_ppa(ppa_record)
    rendition_id = facade.get("/DocumentReference").json()["entry"][0]["resource"]["id"]
    theirs = facade.get("/DocumentReference", key=other_key).json()
    assert theirs["total"] == 0 and "entry" not in theirs
    assert facade.get(f"/DocumentReference/{rendition_id}", key=other_key).status_code == 404
    assert facade.get(f"/Binary/{rendition_id}", key=other_key).status_code == 404
