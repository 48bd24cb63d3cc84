"""Tenant isolation, black-box over HTTP: tenant A's clients (static key and OAuth token) cannot
read, list, act on or infer tenant B's submissions, documents, receipts, deliveries and audit
events through /v1 and the FHIR facade.

"Exists in another tenant" and "does not exist" answer the same status (404) with bodies that
differ only by the id asked for; listings, totals and paging never count B's rows; the answer
time of the two cases is compared on medians (see test_timing_does_not_tell_existence)."""

from __future__ import annotations

import re
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway.security.clients import add_essms, create_api_client
from gateway.security.crypto import KeyRing
from gateway.services.queries import encode_cursor
from gateway.storage.db import session_scope
from gateway.storage.models import Receipt, Submission
from tests.gateway.api.live import Api
from tests.gateway.api.support import ADMIN_TOKEN, add_outcome, audit_events, bearer, note, post_note
from tests.gateway.security.conftest import make_oauth_client
from tests.gateway.security.test_oauth import token

FHIR = "/fhir/r4"


@dataclass(frozen=True)
class World:
    a_credentials: dict[str, str]  # kind -> bearer credential of tenant A
    a_submission: str
    b_submission: str
    b_rendition: str
    b_delivery: str
    b_person: str
    b_finess: str
    b_tenant: str
    b_key: str


def _submit(client: Api, key: str, finess: str, person: str) -> str:
    response = post_note(client, key, note(finess, person_ref=person))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.fixture
def world(
    client: Api, tenant: Any, other_tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing
) -> World:
    a_sub = _submit(client, tenant.api_key, tenant.finess, "A-PERSON-1")
    add_outcome(session_factory, keyring, a_sub)
    b_person = "B-PERSON-SECRET-7"
    b_sub = _submit(client, other_tenant.api_key, other_tenant.finess, b_person)
    for _ in range(3):  # B has more rows than A: a count that leaked would show
        _submit(client, other_tenant.api_key, other_tenant.finess, b_person)
    b_rendition, b_delivery = add_outcome(session_factory, keyring, b_sub)
    with session_scope(session_factory) as session:
        session.add(
            Receipt(
                id=str(uuid.uuid4()),
                delivery_id=b_delivery,
                kind="dsn",
                outcome="failed",
                remote_id="remote-b-1",
                reason="mailbox of B-PERSON-SECRET-7 unknown",
                received_at=datetime.now(UTC),
            )
        )
    oauth = make_oauth_client(session_factory, tenant.id, scopes="submit read")
    access = token(client, oauth).json()["access_token"]
    return World(
        a_credentials={"static key": tenant.api_key, "oauth token": access},
        a_submission=a_sub,
        b_submission=b_sub,
        b_rendition=b_rendition,
        b_delivery=b_delivery,
        b_person=b_person,
        b_finess=other_tenant.finess,
        b_tenant=other_tenant.id,
        b_key=other_tenant.api_key,
    )


def _probes(w: World, target_sub: str, target_rendition: str, target_delivery: str) -> list[tuple[str, str]]:
    return _probes_for(target_sub, target_rendition, target_delivery)


_VOLATILE = re.compile(
    r'"(instance|correlation_id)":"[^"]*"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
)


def _shape(text: str) -> str:
    """The body with the asked-for id, the instance path and the correlation id blanked."""
    return _VOLATILE.sub("<x>", text.replace(" ", ""))


@pytest.mark.parametrize("credential", ["static key", "oauth token"])
def test_another_tenants_rows_are_indistinguishable_from_missing_ones(
    client: Api, world: World, credential: str, session_factory: sessionmaker[Session]
) -> None:
    me = bearer(world.a_credentials[credential])
    missing = str(uuid.uuid4())
    existing = _probes(world, world.b_submission, world.b_rendition, world.b_delivery)
    absent = _probes(world, missing, missing, missing)
    for (method, path), (_, ghost) in zip(existing, absent, strict=True):
        theirs = client.request(method, path, headers=me)
        nothing = client.request(method, ghost, headers=me)
        assert theirs.status_code == nothing.status_code == 404, (path, theirs.text)
        assert theirs.headers["content-type"] == nothing.headers["content-type"], path
        assert _shape(theirs.text) == _shape(nothing.text), path
        assert world.b_person not in theirs.text and "remote-b-1" not in theirs.text
    # nothing of B was read, replayed, cancelled or retried
    assert [e for e in audit_events(session_factory, tenant_id=world.b_tenant) if e.actor.startswith("client:")
            and e.action in ("read", "replayed", "cancelled", "retried")] == []  # fmt: skip
    with session_factory() as session:
        row = session.get(Submission, world.b_submission)
        assert row is not None and row.status == "failed"
    # B still sees its own (the probes above were not 404 for lack of data)
    b = bearer(world.b_key)
    assert client.get(f"/v1/submissions/{world.b_submission}", headers=b).status_code == 200
    assert client.get(f"{FHIR}/Binary/{world.b_rendition}", headers=b).status_code == 200


@pytest.mark.parametrize("credential", ["static key", "oauth token"])
def test_listings_counts_and_paging_never_include_another_tenant(client: Api, world: World, credential: str) -> None:
    me = bearer(world.a_credentials[credential])
    for query in (
        "",
        f"?essms={world.b_finess}",
        f"?person_ref={world.b_person}",
        "?status=failed",
        "?limit=1",
        f"?cursor={encode_cursor(datetime(2100, 1, 1, tzinfo=UTC), world.b_submission)}",
    ):
        page = client.get(f"/v1/submissions{query}", headers=me)
        assert page.status_code == 200, (query, page.text)
        ids = [item["id"] for item in page.json()["items"]]
        assert world.b_submission not in ids and set(ids) <= {world.a_submission}, query
        assert page.json()["next_cursor"] is None, query
        assert world.b_person not in str(page.json()["items"])  # (the self link echoes the query)
    # FHIR: totals count A's documents only, even when searching by B's person or ESSMS
    mine = client.get(f"{FHIR}/DocumentReference", headers=me).json()
    assert mine.get("total") == 1, mine
    for params in ({"patient": world.b_person}, {"_id": world.b_rendition}, {"_count": "1"}):
        found = client.get(f"{FHIR}/DocumentReference", headers=me, params=params)
        assert found.status_code in (200, 400), found.text
        if found.status_code == 200:
            body = found.json()
            entries = str(body.get("entry", []))  # (the self link echoes the query)
            assert world.b_rendition not in entries and world.b_person not in entries
            assert body.get("total", 0) <= 1


def test_audit_trail_is_walled_by_tenant(
    client: Api, world: World, tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        _, auditor = create_api_client(session, tenant_id=tenant.id, name="DPO A", scopes="audit")
    me = bearer(auditor)
    trail = client.get("/v1/audit-events", headers=me, params={"limit": "1000"})
    assert trail.status_code == 200, trail.text
    assert world.b_submission not in trail.text and world.b_tenant not in trail.text
    assert world.b_person not in trail.text
    by_entity = client.get("/v1/audit-events", headers=me, params={"entity_id": world.b_submission})
    assert by_entity.status_code == 200 and "entry" not in by_entity.json()
    fhir = client.get(f"{FHIR}/AuditEvent", headers=me, params={"_count": "100"})
    assert fhir.status_code == 200 and world.b_submission not in fhir.text
    # the auditor reads no clinical content
    assert client.get(f"/v1/submissions/{world.a_submission}/record", headers=me).status_code == 403


def test_admin_and_platform_operator_read_no_clinical_content(
    client: Api, world: World, tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        _, admin_key = create_api_client(session, tenant_id=tenant.id, name="admin A", scopes="admin")
    for credential in (admin_key, ADMIN_TOKEN):
        me = bearer(credential)
        probes = _probes(world, world.a_submission, world.b_rendition, world.b_delivery)
        for method, path in [*probes, ("GET", "/v1/submissions"), ("GET", f"{FHIR}/DocumentReference")]:
            response = client.request(method, path, headers=me)
            assert response.status_code == 403, (credential[:5], path, response.text)
            assert world.b_person not in response.text and "A-PERSON-1" not in response.text
    # the platform operator sees metadata across tenants: the audit trail (references only)
    trail = client.get("/v1/audit-events", headers=bearer(ADMIN_TOKEN), params={"limit": "1000"})
    assert trail.status_code == 200
    assert world.b_submission in trail.text and world.a_submission in trail.text
    assert "Chute le 3 mars" not in trail.text  # references, never the content


def _median_ms(client: Api, headers: dict[str, str], paths: list[str], rounds: int) -> list[float]:
    samples: list[list[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for i, path in enumerate(paths):  # interleaved, so drift hits every path alike
            start = time.perf_counter()
            response = client.get(path, headers=headers)
            samples[i].append((time.perf_counter() - start) * 1000)
            assert response.status_code == 404
    return [statistics.median(s) for s in samples]


def test_timing_does_not_tell_existence(client: Api, world: World) -> None:
    """Medians of interleaved requests: another tenant's id vs a random one. The bound is generous
    (this runs on a shared 2-core machine): a gap of 5 ms plus half the median would mean a code
    path that does real work (decrypting, loading children) only when the row exists elsewhere."""
    me = bearer(world.a_credentials["static key"])
    missing = str(uuid.uuid4())
    for existing, absent in (
        (f"/v1/submissions/{world.b_submission}", f"/v1/submissions/{missing}"),
        (f"/v1/submissions/{world.b_submission}/record", f"/v1/submissions/{missing}/record"),
        (f"{FHIR}/Binary/{world.b_rendition}", f"{FHIR}/Binary/{missing}"),
    ):
        _median_ms(client, me, [existing, absent], 5)  # warm-up
        theirs, nothing = _median_ms(client, me, [existing, absent], 40)
        bound = 5.0 + 0.5 * min(theirs, nothing)
        print(f"\n{existing.rsplit('/', 2)[-2:]}: other tenant {theirs:.2f} ms, missing {nothing:.2f} ms")
        assert abs(theirs - nothing) < bound, (existing, theirs, nothing)


def test_a_client_restricted_to_one_essms_sees_and_acts_on_that_essms_only(
    client: Api, tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    other_essms = "750000036"
    with session_scope(session_factory) as session:
        add_essms(session, tenant_id=tenant.id, finess=other_essms, name="SSIAD du même organisme")
        restricted = create_api_client(
            session, tenant_id=tenant.id, name="DUI EHPAD", scopes="submit read", essms=[tenant.finess]
        )[1]
    mine = _submit(client, tenant.api_key, tenant.finess, "P-EHPAD")
    sibling = _submit(client, tenant.api_key, other_essms, "P-SSIAD")
    sibling_rendition, sibling_delivery = add_outcome(session_factory, keyring, sibling)
    me = bearer(restricted)
    listed = client.get("/v1/submissions", headers=me).json()["items"]
    assert [i["id"] for i in listed] == [mine]
    missing = str(uuid.uuid4())
    for (method, path), (_, ghost) in zip(
        _probes_for(sibling, sibling_rendition, sibling_delivery), _probes_for(missing, missing, missing), strict=True
    ):
        theirs, nothing = client.request(method, path, headers=me), client.request(method, ghost, headers=me)
        assert theirs.status_code == nothing.status_code == 404, (path, theirs.text)
        assert _shape(theirs.text) == _shape(nothing.text), path
    assert client.get(f"/v1/submissions/{mine}", headers=me).status_code == 200
    refused = post_note(client, restricted, note(other_essms, person_ref="P-X"))
    assert refused.status_code == 403, refused.text
    assert post_note(client, restricted, note(tenant.finess, person_ref="P-Y")).status_code == 202
    # the unrestricted client of the same tenant still sees both
    assert client.get(f"/v1/submissions/{sibling}", headers=bearer(tenant.api_key)).status_code == 200


def _probes_for(sub: str, rendition: str, delivery: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/v1/submissions/{sub}"),
        ("GET", f"/v1/submissions/{sub}/record"),
        ("GET", f"/v1/submissions/{sub}/renditions/note"),
        ("POST", f"/v1/submissions/{sub}/replay"),
        ("POST", f"/v1/submissions/{sub}/cancel"),
        ("POST", f"/v1/deliveries/{delivery}/retry"),
        ("GET", f"{FHIR}/DocumentReference/{rendition}"),
        ("GET", f"{FHIR}/Binary/{rendition}"),
    ]


def test_searching_for_a_person_is_audited_even_when_nothing_is_found(
    client: Api, tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    me = bearer(tenant.api_key)
    assert client.get("/v1/submissions", headers=me, params={"person_ref": "P-NOBODY"}).json()["items"] == []
    assert client.get(f"{FHIR}/DocumentReference", headers=me, params={"patient": "P-NOBODY"}).status_code == 200
    searched = [e for e in audit_events(session_factory, action="searched") if e.person_ref == "P-NOBODY"]
    assert len(searched) == 2 and all(e.actor == f"client:{tenant.client_id}" for e in searched)


def test_metadata_counts_platform_wide_for_the_operator_own_tenant_for_its_admin(
    client: Api, world: World, tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        _, admin_key = create_api_client(session, tenant_id=tenant.id, name="admin A", scopes="admin")
    everything = client.get("/v1/admin/flows", headers=bearer(ADMIN_TOKEN))
    assert everything.status_code == 200, everything.text
    per_tenant: dict[str, int] = {}
    for row in everything.json()["submissions"]:
        per_tenant[row["tenant_id"]] = per_tenant.get(row["tenant_id"], 0) + row["count"]
    assert per_tenant == {tenant.id: 1, world.b_tenant: 4}
    assert world.b_person not in everything.text and "A-PERSON-1" not in everything.text
    own = client.get("/v1/admin/flows", headers=bearer(admin_key)).json()
    assert {r["tenant_id"] for r in own["submissions"] + own["deliveries"]} == {tenant.id}
    assert sum(r["count"] for r in own["submissions"]) == 1
    theirs = client.get("/v1/admin/flows", headers=bearer(admin_key), params={"tenant_id": world.b_tenant})
    nowhere = client.get("/v1/admin/flows", headers=bearer(admin_key), params={"tenant_id": str(uuid.uuid4())})
    assert theirs.status_code == nowhere.status_code == 404
    assert client.get("/v1/admin/flows", headers=bearer(world.a_credentials["static key"])).status_code == 403


def test_a_search_by_an_ins_shaped_reference_is_audited_without_the_ins(
    client: Api, tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    ins = "283127512312345"
    me = bearer(tenant.api_key)
    assert client.get("/v1/submissions", headers=me, params={"person_ref": ins}).status_code == 200
    assert client.get(f"{FHIR}/DocumentReference", headers=me, params={"patient": ins}).status_code == 200
    searched = audit_events(session_factory, action="searched")
    assert len(searched) == 2
    assert all(e.person_ref == "<nir-shaped reference withheld>" for e in searched)
    assert all(ins not in str(e.detail) for e in searched)


def test_unmatched_persons_are_walled_and_their_listing_audited(
    client: Api, tenant: Any, other_tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    from tests.gateway.api.test_api_persons import _keep

    theirs = _keep(session_factory, keyring, other_tenant, "IPP-B-SECRET")
    mine = _keep(session_factory, keyring, tenant, "IPP-A-1")
    listed = client.get("/v1/unmatched-persons", headers=bearer(tenant.api_key))
    assert [u["id"] for u in listed.json()] == [mine] and "IPP-B-SECRET" not in listed.text
    ghost = str(uuid.uuid4())
    for target in (theirs, ghost):  # another tenant's entry looks like none
        response = client.post(f"/v1/unmatched-persons/{target}/link", json={"person_ref": "X"},
                               headers=bearer(tenant.api_key))  # fmt: skip
        assert response.status_code == 404
    [event] = [e for e in audit_events(session_factory, action="searched") if e.detail.get("resource")]
    assert event.detail["unmatched_ids"] == [mine] and "IPP-A-1" not in str(event.detail)
