"""The DLU document type through the API: a real record is accepted; errors deep in the record
get deep JSON pointers and never quote identity traits."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway.security.clients import add_essms
from gateway.storage.db import session_scope
from mappings import registry
from tests.gateway.api.live import Api
from tests.gateway.api.support import bearer, count_rows, post_note

DEMO = Path(__file__).resolve().parents[3] / "gateway" / "demo_data" / "01-dlu-qualified-ins.json"


@pytest.fixture
def dlu_record(tenant: Any, session_factory: sessionmaker[Session]) -> dict[str, Any]:
    if registry.get("dlu") is None or not DEMO.exists():
        pytest.skip("the DLU document type or its demo record is not available")
    record: dict[str, Any] = json.loads(DEMO.read_text(encoding="utf-8"))
    with session_scope(session_factory) as session:
        add_essms(session, tenant_id=tenant.id, finess=record["essms"]["finess"], name="EHPAD démo", category="500")
    return record


def test_a_dlu_record_is_accepted_and_read_back(client: Api, tenant: Any, dlu_record: dict[str, Any]) -> None:
    response = post_note(client, tenant.api_key, {"document_type": "dlu", "record": dlu_record})
    assert response.status_code == 202, response.text
    sid = response.json()["id"]
    detail = client.get(f"/v1/submissions/{sid}", headers=bearer(tenant.api_key)).json()
    assert detail["person_ref"] == dlu_record["person"]["local_id"]
    assert detail["essms_finess"] == dlu_record["essms"]["finess"]
    # the detail view carries references, never identity traits
    assert dlu_record["person"]["traits"]["birth_family_name"] not in json.dumps(detail, ensure_ascii=False)
    record = client.get(f"/v1/submissions/{sid}/record", headers=bearer(tenant.api_key))
    assert record.json() == dlu_record


def test_dlu_errors_point_into_the_record_without_quoting_it(
    client: Api, tenant: Any, dlu_record: dict[str, Any], session_factory: sessionmaker[Session]
) -> None:
    bad = copy.deepcopy(dlu_record)
    bad["person"]["traits"]["birth_date"] = "1938-13-45"
    bad["person"]["traits"]["sex"] = "DÉMO-LÉVÊQUE"
    del bad["essms"]["finess"]
    bad["dlu"]["unexpected"] = True
    response = post_note(client, tenant.api_key, {"document_type": "dlu", "record": bad})
    assert response.status_code == 422, response.text
    pointers = {e["pointer"] for e in response.json()["errors"]}
    assert {
        "/record/person/traits/birth_date",
        "/record/person/traits/sex",
        "/record/essms/finess",
        "/record/dlu/unexpected",
    } <= pointers
    text = response.content.decode("utf-8")
    for secret in ("1938", "DÉMO-LÉVÊQUE", "LÉVÊQUE", "238037505612378"):
        assert secret not in text
    assert count_rows(session_factory) == (0, 0)


def _details(response: Any) -> str:
    assert response.status_code == 422, response.text
    return json.dumps([e["detail"] for e in response.json()["errors"]] + [response.json()["detail"]])


def test_identity_inconsistencies_are_named_without_the_values(
    client: Api, tenant: Any, dlu_record: dict[str, Any]
) -> None:
    # sex digit of the INS against traits.sex: say what disagrees, never which values
    bad = copy.deepcopy(dlu_record)
    bad["person"]["traits"]["sex"] = "M"
    details = _details(post_note(client, tenant.api_key, {"document_type": "dlu", "record": bad}))
    assert "traits.sex" in details and "sex" in details
    assert "starts with 2" not in details and "is M" not in details and "'M'" not in details

    # a wrong INS key: neither the key expected nor the characters it is computed from
    bad = copy.deepcopy(dlu_record)
    matricule = bad["person"]["ins"]["matricule"]
    bad["person"]["ins"]["matricule"] = matricule[:13] + ("00" if matricule[13:] != "00" else "01")
    details = _details(post_note(client, tenant.api_key, {"document_type": "dlu", "record": bad}))
    assert "key" in details
    assert matricule[13:] not in details and matricule[:13] not in details

    # a code outside its value set: the value set is named, the value is not
    bad = copy.deepcopy(dlu_record)
    bad["essms"]["facility_type_code"] = "Jeanne Dupont"
    details = _details(post_note(client, tenant.api_key, {"document_type": "dlu", "record": bad}))
    assert "JDV_J02" in details and "Dupont" not in details
