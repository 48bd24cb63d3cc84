"""Read side: detail, listing with filters and cursor pagination, documents, tenant isolation,
and the audit events every read of a person's data leaves."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway.security.crypto import KeyRing
from gateway.services import intake
from gateway.storage.models import ApiClient
from tests.gateway.api.live import Api
from tests.gateway.api.support import add_outcome, audit_events, bearer, note, post_note

NOTE_XML = b'<note xmlns="urn:test" setId="s" version="1">Chute</note>'


def _submit(client: Api, tenant: Any, **kwargs: Any) -> str:
    response = post_note(client, tenant.api_key, note(tenant.finess, **kwargs))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_detail_shows_status_renditions_and_deliveries_with_attempts(
    client: Api, tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    sid = _submit(client, tenant)
    _, did = add_outcome(session_factory, keyring, sid, content=NOTE_XML)

    response = client.get(f"/v1/submissions/{sid}", headers=bearer(tenant.api_key))
    assert response.status_code == 200
    detail = response.json()
    assert detail["status"] == "failed"
    assert detail["document_type"] == "test-note"
    assert detail["facts"]["essms_finess"] == tenant.finess
    assert "payload_ct" not in response.text and "Chute" not in response.text
    [rendition] = detail["renditions"]
    assert rendition["kind"] == "note"
    assert rendition["media_type"] == "application/xml"
    assert rendition["sha256"] == hashlib.sha256(NOTE_XML).hexdigest()
    assert rendition["size"] == len(NOTE_XML)
    assert rendition["links"]["content"] == f"/v1/submissions/{sid}/renditions/note"
    [delivery] = detail["deliveries"]
    assert delivery["id"] == did
    assert (delivery["destination"], delivery["connector"], delivery["status"]) == ("dmp", "webhook", "dead")
    assert delivery["attempt_count"] == 2
    assert delivery["last_error"] == "HTTP 503 from peer"
    assert [a["outcome"] for a in delivery["attempts"]] == ["transient", "permanent"]
    assert [a["number"] for a in delivery["attempts"]] == [1, 2]


def test_rendition_and_record_are_returned_decrypted_and_every_read_is_audited(
    client: Api, tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    sid = _submit(client, tenant, person_ref="P-42")
    rid, _ = add_outcome(session_factory, keyring, sid, content=NOTE_XML)

    doc = client.get(f"/v1/submissions/{sid}/renditions/note", headers=bearer(tenant.api_key))
    assert doc.status_code == 200
    assert doc.content == NOTE_XML
    assert doc.headers["content-type"].startswith("application/xml")
    assert doc.headers["Cache-Control"] == "no-store"
    missing = client.get(f"/v1/submissions/{sid}/renditions/fhir", headers=bearer(tenant.api_key))
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"

    record = client.get(f"/v1/submissions/{sid}/record", headers=bearer(tenant.api_key))
    assert record.json()["person_ref"] == "P-42"
    client.get(f"/v1/submissions/{sid}", headers=bearer(tenant.api_key))

    reads = [e for e in audit_events(session_factory, action="read")]
    actor = f"client:{tenant.client_id}"
    assert [(e.entity_type, e.entity_id, e.actor, e.person_ref, (e.detail or {}).get("view")) for e in reads] == [
        ("rendition", rid, actor, "P-42", "rendition"),
        ("submission", sid, actor, "P-42", "record"),
        ("submission", sid, actor, "P-42", "status"),
    ]
    assert reads[0].detail is not None and reads[0].detail["submission_id"] == sid


def _seed(tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing, n: int) -> list[tuple[datetime, str]]:
    """n submissions whose created_at collide in groups of three (ties broken by id)."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    out: list[tuple[datetime, str]] = []
    with session_factory() as session:
        client = session.get(ApiClient, tenant.client_id)
        assert client is not None
        for i in range(n):
            at = base + timedelta(minutes=i // 3)
            sub, _ = intake.submit(
                session,
                client=client,
                document_type="test-note",
                record_json=note(tenant.finess, person_ref=f"P-{i % 4}")["record"],
                idempotency_key=None,
                keyring=keyring,
                correlation_id=f"seed-{i}",
                now=at,
            )
            out.append((at, sub.id))
        session.commit()
    return out


def test_cursor_pagination_walks_every_row_exactly_once_newest_first(
    client: Api, tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    seeded = _seed(tenant, session_factory, keyring, 23)
    expected = [sid for _, sid in sorted(seeded, key=lambda p: (p[0], p[1]), reverse=True)]
    seen: list[str] = []
    url = "/v1/submissions?limit=5"
    pages = 0
    while url:
        response = client.get(url, headers=bearer(tenant.api_key))
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(item["id"] for item in page["items"])
        url = page["links"].get("next", "")
        assert (page["next_cursor"] is None) == (url == "")
        pages += 1
    assert pages == 5
    assert seen == expected


def test_filters(client: Api, tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing) -> None:
    seeded = _seed(tenant, session_factory, keyring, 12)
    failed_sid = seeded[0][1]
    add_outcome(session_factory, keyring, failed_sid)

    def ids(query: str) -> set[str]:
        response = client.get(f"/v1/submissions?limit=200&{query}", headers=bearer(tenant.api_key))
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    everything = {sid for _, sid in seeded}
    assert ids("") == everything
    assert ids("status=failed") == {failed_sid}
    assert ids("status=failed&status=received") == everything
    assert ids("status=delivered") == set()
    assert ids("document_type=test-note") == everything
    assert ids("document_type=dlu") == set()
    assert ids(f"essms={tenant.finess}") == everything
    assert ids("essms=750000028") == set()
    assert ids("person_ref=P-1") == {sid for i, (_, sid) in enumerate(seeded) if i % 4 == 1}
    # created_at: minute 0 holds rows 0-2, minute 1 rows 3-5...; from inclusive, to exclusive
    assert ids("created_from=2026-01-01T00:01:00Z&created_to=2026-01-01T00:03:00Z") == {sid for _, sid in seeded[3:9]}
    assert ids("created_from=2026-01-01T01:01:00%2B01:00") == {sid for _, sid in seeded[3:]}


def test_list_reads_are_audited_with_the_ids_returned(
    client: Api, tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    seeded = _seed(tenant, session_factory, keyring, 3)
    response = client.get("/v1/submissions?person_ref=P-1", headers=bearer(tenant.api_key))
    assert response.status_code == 200
    [event] = audit_events(session_factory, action="searched")
    assert event.actor == f"client:{tenant.client_id}"
    assert event.person_ref == "P-1"
    assert event.detail is not None
    assert event.detail["submission_ids"] == [seeded[1][1]]
    assert event.detail["filters"] == {}  # the person is in person_ref, not repeated in the detail


def test_bad_query_parameters_are_problems(client: Api, tenant: Any) -> None:
    for query, parameter in (("limit=201", "limit"), ("limit=0", "limit"), ("created_from=yesterday", "created_from")):
        response = client.get(f"/v1/submissions?{query}", headers=bearer(tenant.api_key))
        assert response.status_code == 422, query
        assert response.headers["content-type"] == "application/problem+json"
        assert [e["parameter"] for e in response.json()["errors"]] == [parameter]
    response = client.get("/v1/submissions?cursor=not-a-cursor", headers=bearer(tenant.api_key))
    assert response.status_code == 422
    assert response.json()["errors"][0]["parameter"] == "cursor"


def test_a_tenant_never_sees_another_tenants_rows(
    client: Api, tenant: Any, other_tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    mine = _submit(client, tenant)
    theirs = post_note(client, other_tenant.api_key, note(other_tenant.finess)).json()["id"]
    _, their_delivery = add_outcome(session_factory, keyring, theirs)
    me = bearer(tenant.api_key)

    listed = client.get("/v1/submissions", headers=me).json()
    assert [item["id"] for item in listed["items"]] == [mine]
    for path in (
        f"/v1/submissions/{theirs}",
        f"/v1/submissions/{theirs}/record",
        f"/v1/submissions/{theirs}/renditions/note",
    ):
        response = client.get(path, headers=me)
        assert response.status_code == 404, path
        assert response.json()["type"].endswith("/not-found")
    for path in (
        f"/v1/deliveries/{their_delivery}/retry",
        f"/v1/submissions/{theirs}/cancel",
        f"/v1/submissions/{theirs}/replay",
    ):
        response = client.post(path, headers=me)
        assert response.status_code == 404, path
    # a 404 reads nothing: no read event names the other tenant's submission
    assert audit_events(session_factory, entity_id=theirs, action="read") == []
    # the other tenant still sees its own
    assert client.get(f"/v1/submissions/{theirs}", headers=bearer(other_tenant.api_key)).status_code == 200


def test_reads_need_credentials(client: Api, tenant: Any) -> None:
    sid = _submit(client, tenant)
    for path in ("/v1/submissions", f"/v1/submissions/{sid}", f"/v1/submissions/{sid}/record"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert client.get(path, headers=bearer("dgw_0badc0de_" + "x" * 43)).status_code == 401
