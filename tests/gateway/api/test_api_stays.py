"""Stay events and indicators over real HTTP: idempotent versioned events stored encrypted,
configuration, JSON/CSV datasets, daily occupancy, tenant isolation and audited reads."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.storage.models import StayEventRow
from tests.gateway.api.live import Api
from tests.gateway.api.support import audit_events, bearer


def _event(finess: str, **kw: Any) -> dict[str, Any]:
    body = {
        "event_id": "adm-1",
        "kind": "admission",
        "person_ref": "P-0001",
        "essms_finess": finess,
        "occurred_at": "2026-01-10T14:00:00+01:00",
        "accommodation": "temporary",
        "sex": "F",
        "birth_date": "1938-04-02",
        "gir": 2,
    }
    body.update(kw)
    return body


def _post(client: Api, key: str, body: dict[str, Any]) -> Any:
    return client.post("/v1/stay-events", json=body, headers=bearer(key))


def test_events_config_and_indicators_end_to_end(
    client: Api, tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    key = tenant.api_key
    config = {
        "capacities": [{"accommodation": "permanent", "places": 10}, {"accommodation": "temporary", "places": 2}],
        "rules": {"billing_stop_days": {"hospitalisation": 21}},
    }
    r = client.request("PUT", f"/v1/essms/{tenant.finess}/reporting-config", json=config, headers=bearer(key))
    assert r.status_code == 200, r.text
    assert r.json()["rules"]["billing_stop_days"] == {"hospitalisation": 21}

    first = _post(client, key, _event(tenant.finess))
    assert first.status_code == 201, first.text
    assert first.json()["current"] is True
    replay = _post(client, key, _event(tenant.finess))
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    move = _event(
        tenant.finess, event_id="chg-1", kind="accommodation_change", accommodation="permanent",
        occurred_at="2026-01-20T09:00:00+01:00", sex=None, birth_date=None, gir=None,
    )  # fmt: skip
    assert _post(client, key, move).status_code == 201

    r = client.get(f"/v1/essms/{tenant.finess}/indicators/2026-01", headers=bearer(key))
    assert r.status_code == 200, r.text
    ds = r.json()["datasets"][0]
    assert ds["layout_version"] == "1.0" and ds["period"]["code"] == "2026-01"
    assert ds["totals"]["days_realised"] == 22
    assert ds["by_accommodation"]["temporary"]["days_realised"] == 10
    assert ds["by_accommodation"]["permanent"]["days_realised"] == 12
    assert ds["totals"]["people_accompanied"] == 1
    assert ds["totals"]["theoretical_days"] == 12 * 31
    assert "P-0001" not in r.text and "1938" not in r.text  # counts and bands only

    r = client.get(f"/v1/essms/{tenant.finess}/indicators/2026-01?format=csv", headers=bearer(key))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    realised = {row["accommodation"]: row["value"] for row in rows if row["indicator"] == "days_realised"}
    assert realised == {"all": "22", "permanent": "12", "temporary": "10"}

    r = client.get(
        f"/v1/essms/{tenant.finess}/occupancy", params={"from": "2026-01-09", "to": "2026-01-12"}, headers=bearer(key)
    )
    assert r.status_code == 200, r.text
    assert [(d["date"], d["in_stay"], d["places"]) for d in r.json()["days"]] == [
        ("2026-01-09", 0, 12), ("2026-01-10", 1, 12), ("2026-01-11", 1, 12),
    ]  # fmt: skip

    # stored encrypted: neither the person's reference in the payload nor the birth date in clear
    with session_factory() as session:
        rows_db = list(session.scalars(select(StayEventRow)))
    assert len(rows_db) == 2
    assert all(b"1938" not in row.payload_ct and b"temporary" not in row.payload_ct for row in rows_db)
    # every read of the events is audited, naming the persons read
    reads = [e for e in audit_events(session_factory, action="read") if e.entity_type == "indicators"]
    assert len(reads) == 3 and all(e.detail and e.detail["person_refs"] == ["P-0001"] for e in reads)
    received = [e for e in audit_events(session_factory, action="received") if e.entity_type == "stay_event"]
    assert [e.person_ref for e in received] == ["P-0001", "P-0001"]


def test_correction_recomputes_and_flags_nothing_unreported(client: Api, tenant: Any) -> None:
    key = tenant.api_key
    assert _post(client, key, _event(tenant.finess, accommodation="permanent")).status_code == 201
    exit_ = _event(tenant.finess, event_id="exit-1", kind="exit", exit_reason="home",
                   occurred_at="2026-02-10T10:00:00+01:00", accommodation=None)  # fmt: skip
    assert _post(client, key, exit_).status_code == 201
    corrected = _post(client, key, _event(tenant.finess, version=2, accommodation="permanent",
                                          occurred_at="2026-01-05T14:00:00+01:00"))  # fmt: skip
    assert corrected.status_code == 201, corrected.text
    body = corrected.json()
    assert body["current"] is True
    assert datetime.fromisoformat(body["affected_from"]) == datetime(2026, 1, 5, 13, tzinfo=UTC)
    assert datetime.fromisoformat(body["affected_to"]) == datetime(2026, 2, 10, 9, tzinfo=UTC)
    assert body["reported_periods_affected"] == []
    ds = client.get(f"/v1/essms/{tenant.finess}/indicators/2026-01", headers=bearer(key)).json()["datasets"][0]
    assert ds["totals"]["days_realised"] == 27
    # the same id and version with other content is a conflict
    clash = _post(client, key, _event(tenant.finess, version=2, accommodation="temporary"))
    assert clash.status_code == 409
    assert clash.headers["content-type"].startswith("application/problem+json")
    assert clash.json()["errors"] == [
        {"pointer": "/version", "detail": "already used with other content", "code": "conflict"}
    ]
    # an older version arriving late is kept but does not win
    late = _post(client, key, _event(tenant.finess, event_id="exit-1", kind="exit", version=1, exit_reason="death",
                                     occurred_at="2026-02-11T10:00:00+01:00", accommodation=None))  # fmt: skip
    assert late.status_code == 409  # version 1 of exit-1 exists with other content


def test_invalid_events_answer_problems_with_pointers(client: Api, tenant: Any) -> None:
    key = tenant.api_key
    r = _post(client, key, _event(tenant.finess, kind="transfer", unit=None))
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["pointer"] for e in r.json()["errors"]] == ["/unit"]
    r = _post(client, key, _event(tenant.finess, occurred_at="2026-01-10T14:00:00"))
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/occurred_at"
    r = _post(client, key, {**_event(tenant.finess), "colour": "blue"})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/colour"
    r = client.get(f"/v1/essms/{tenant.finess}/indicators/2026-13", headers=bearer(key))
    assert r.status_code == 422


def test_other_tenants_essms_is_forbidden(client: Api, tenant: Any, other_tenant: Any) -> None:
    r = _post(client, tenant.api_key, _event(other_tenant.finess))
    assert r.status_code == 403
    r = client.get(f"/v1/essms/{other_tenant.finess}/indicators/2026", headers=bearer(tenant.api_key))
    assert r.status_code == 403
    r = client.get(f"/v1/essms/{tenant.finess}/indicators/2026", headers=bearer(other_tenant.api_key))
    assert r.status_code == 403


def test_inbound_seam_records_a_matched_residents_hospitalisation(
    tenant: Any, session_factory: sessionmaker[Session], keyring: Any
) -> None:
    from connectors.base import InboundEvent
    from gateway.services import stays

    adt = InboundEvent(
        event_type="adt.hospitalised",
        payload={"occurred_at": "2026-03-10T09:00:00+01:00"},
        essms_finess=tenant.finess,
        person_ref="P-0001",
        series="A21-1",
    )
    with session_factory() as session:
        rec = stays.record_inbound(session, tenant_id=tenant.id, event=adt, keyring=keyring, source="mllp")
        assert rec is not None and rec.created and rec.row.source == "mllp"
        again = stays.record_inbound(session, tenant_id=tenant.id, event=adt, keyring=keyring, source="mllp")
        assert again is not None and not again.created
        other = InboundEvent("adt.hospitalised", adt.payload, "750000028", "P-0001", "A21-2")
        assert stays.record_inbound(session, tenant_id=tenant.id, event=other, keyring=keyring, source="mllp") is None
        unrelated = InboundEvent("mssante.message", {}, tenant.finess, "P-0001", "m")
        assert stays.record_inbound(session, tenant_id=tenant.id, event=unrelated, keyring=keyring, source="x") is None
        session.commit()


def test_report_endpoint_queues_the_dataset_once(client: Api, tenant: Any) -> None:
    key = tenant.api_key
    assert _post(client, key, _event(tenant.finess)).status_code == 201
    first = client.post(f"/v1/essms/{tenant.finess}/indicators/2026-01/report", headers=bearer(key))
    assert first.status_code == 202, first.text
    again = client.post(f"/v1/essms/{tenant.finess}/indicators/2026-01/report", headers=bearer(key))
    assert again.json()["submission_id"] == first.json()["submission_id"] and again.json()["created"] is False
    detail = client.get(f"/v1/submissions/{first.json()['submission_id']}", headers=bearer(key)).json()
    assert detail["document_type"] == "indicator-dataset"
    # a correction to a reported period says so
    fixed = _post(client, key, _event(tenant.finess, version=2, occurred_at="2026-01-03T10:00:00+01:00"))
    assert fixed.json()["reported_periods_affected"] == ["2026-01"]


def test_batch_is_all_or_nothing(client: Api, tenant: Any, session_factory: sessionmaker[Session]) -> None:
    key = tenant.api_key
    good = [_event(tenant.finess, event_id=f"adm-{i}", person_ref=f"P-{i}") for i in range(3)]
    bad = [*good, _event(tenant.finess, event_id="t-1", kind="transfer", unit=None)]
    r = client.post("/v1/stay-events/batch", json={"events": bad}, headers=bearer(key))
    assert r.status_code == 422 and [e["pointer"] for e in r.json()["errors"]] == ["/events/3/unit"]
    with session_factory() as session:
        assert list(session.scalars(select(StayEventRow))) == []
    r = client.post("/v1/stay-events/batch", json={"events": good}, headers=bearer(key))
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 3 and len(r.json()["items"]) == 3
    clash = [_event(tenant.finess, event_id="adm-9", person_ref="P-9"), {**good[0], "accommodation": "permanent"}]
    r = client.post("/v1/stay-events/batch", json={"events": clash}, headers=bearer(key))
    assert r.status_code == 409
    with session_factory() as session:
        assert len(list(session.scalars(select(StayEventRow)))) == 3  # adm-9 rolled back with the batch
    ds = client.get(f"/v1/essms/{tenant.finess}/indicators/2026-01", headers=bearer(key)).json()["datasets"][0]
    assert ds["totals"]["people_accompanied"] == 3
