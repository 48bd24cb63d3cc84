"""Retry, replay and cancel through the API: state changes, audit events, problems on clashes."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway.security.crypto import KeyRing
from gateway.storage.models import Delivery, Submission
from tests.gateway.api.live import Api
from tests.gateway.api.support import add_outcome, audit_events, bearer, note, post_note


def _submit(client: Api, tenant: Any) -> str:
    response = post_note(client, tenant.api_key, note(tenant.finess))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_retry_puts_a_dead_delivery_back_in_the_queue(
    client: Api, tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    sid = _submit(client, tenant)
    _, did = add_outcome(session_factory, keyring, sid, delivery_status="dead", status="failed")

    response = client.post(f"/v1/deliveries/{did}/retry", headers=bearer(tenant.api_key))
    assert response.status_code == 202, response.text
    assert response.json()["id"] == did
    assert response.json()["status"] == "pending"
    assert len(response.json()["attempts"]) == 2  # history kept
    with session_factory() as session:
        row = session.get(Delivery, did)
        assert row is not None and row.status == "pending"
        sub = session.get(Submission, sid)
        assert sub is not None and sub.status == "routed"
    [event] = audit_events(session_factory, action="retried")
    assert (event.entity_id, event.actor) == (did, f"client:{tenant.client_id}")

    again = client.post(f"/v1/deliveries/{did}/retry", headers=bearer(tenant.api_key))
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["type"].endswith("/conflict")
    assert (
        client.post(
            "/v1/deliveries/00000000-0000-0000-0000-000000000000/retry", headers=bearer(tenant.api_key)
        ).status_code
        == 404
    )


def test_cancel_and_replay(client: Api, tenant: Any, session_factory: sessionmaker[Session], keyring: KeyRing) -> None:
    waiting = _submit(client, tenant)
    response = client.post(f"/v1/submissions/{waiting}/cancel", headers=bearer(tenant.api_key))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert client.post(f"/v1/submissions/{waiting}/cancel", headers=bearer(tenant.api_key)).status_code == 409
    [cancelled] = audit_events(session_factory, action="cancelled")
    assert cancelled.entity_id == waiting

    # a processed submission whose delivery died: replay makes a new delivery to the same destination
    done = _submit(client, tenant)
    add_outcome(session_factory, keyring, done, delivery_status="dead", status="failed")
    response = client.post(f"/v1/submissions/{done}/replay", headers=bearer(tenant.api_key))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "routed"
    assert [(d["destination"], d["status"]) for d in body["deliveries"]] == [("dmp", "dead"), ("dmp", "pending")]
    [replayed] = audit_events(session_factory, action="replayed")
    assert replayed.entity_id == done

    # still being delivered: replay is refused with a problem
    busy = client.post(f"/v1/submissions/{done}/replay", headers=bearer(tenant.api_key))
    assert busy.status_code == 409
    assert "pending" in busy.json()["detail"]


def test_operations_need_the_submit_scope(client: Api, tenant: Any, auditor_key: str) -> None:
    sid = _submit(client, tenant)
    response = client.post(f"/v1/submissions/{sid}/cancel", headers=bearer(auditor_key))
    assert response.status_code == 403
    assert response.json()["type"].endswith("/forbidden")
