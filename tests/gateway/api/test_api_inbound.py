"""``POST /inbound/{source}`` and the inbound seam end to end in one process: a relay's "sent"
receipt is acknowledged later through a signed message, stored before the 202, interpreted by a
worker, shown on the submission; refusals store nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.base import Envelope, Receipt
from connectors.webhook.receipts import WebhookReceiptSettings, WebhookReceiptSource
from connectors.webhook.signing import new_secret, sign_headers
from gateway import inbound, pipeline
from gateway.delivery import deliver_next
from gateway.routing import ConfiguredSource, RoutingTable, parse_config
from gateway.storage.models import Delivery, InboundMessage
from tests.gateway.api.support import bearer, post_note
from tests.gateway.engine.support import FakeConnector


class _Relay(FakeConnector):
    """A peer that accepts and promises a receipt later (like an MSSanté relay)."""

    def send(self, envelope: Envelope) -> Receipt:
        super().send(envelope)
        return Receipt(remote_id="relay-1", status="sent", ack_ref=envelope.idempotency_key)


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = new_secret()
    monkeypatch.setenv("TEST_RECEIPT_SECRET", value)
    return value


@pytest.fixture
def wired(runtime: Any, secret: str, tenant: Any) -> Any:
    source = WebhookReceiptSource(
        WebhookReceiptSettings.model_validate({"signing_secrets": ["env:TEST_RECEIPT_SECRET"]})
    )
    runtime.sources = {"receipts": ConfiguredSource("receipts", source, tenant.code, ("relay",))}
    runtime.destinations = {"relay": _Relay()}
    runtime.routing = RoutingTable(
        config=parse_config(
            {
                "destinations": {"relay": {"connector": "fake", "category": "webhook"}},
                "rules": [{"document_types": ["test-note"], "destinations": ["relay"]}],
            }
        )
    )
    runtime._bulkheads = None
    return runtime


def _receipt(secret: str, delivery_id: str, *, msg_id: str = "msg-1", outcome: str = "delivered") -> tuple[bytes, dict]:
    body = json.dumps(
        {
            "type": "delivery.receipt",
            "idempotency_key": delivery_id,
            "delivery_id": delivery_id,
            "receipt_id": "r-77",
            "outcome": outcome,
            "reason": None,
            "at": "2026-11-30T10:00:00Z",
        }
    ).encode()
    headers = sign_headers([secret], msg_id=msg_id, body=body)
    return body, {**headers, "Content-Type": "application/json"}


def _inbound_count(runtime: Any) -> int:
    with runtime.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(InboundMessage)) or 0)


def _sent_delivery(client: Any, wired: Any, tenant: Any) -> tuple[str, str]:
    response = post_note(client, tenant.api_key, {"document_type": "test-note", "record": _note(tenant)})
    assert response.status_code == 202, response.text
    sub_id = response.json()["id"]
    assert pipeline.process_next(wired, worker_id="w0")
    out = deliver_next(wired, worker_id="w1")
    assert out is not None and out.status == "sent"
    return sub_id, out.delivery_id


def _note(tenant: Any) -> dict[str, Any]:
    return {"person_ref": "P-1", "essms_finess": tenant.finess, "text": "Chute."}


def test_a_signed_receipt_moves_the_sent_delivery_to_delivered(client, wired, tenant, secret) -> None:
    sub_id, delivery_id = _sent_delivery(client, wired, tenant)
    body, headers = _receipt(secret, delivery_id)
    answer = client.post("/inbound/receipts", data=body, headers=headers)
    assert answer.status_code == 202 and answer.json()["duplicate"] is False
    again = client.post("/inbound/receipts", data=body, headers=headers)  # the peer resends it
    assert again.status_code == 202 and again.json() == {"id": answer.json()["id"], "duplicate": True}
    assert _inbound_count(wired) == 1
    assert inbound.process_next_inbound(wired, worker_id="w2")
    detail = client.get(f"/v1/submissions/{sub_id}", headers=bearer(tenant.api_key)).json()
    assert detail["status"] == "delivered"
    (delivery,) = detail["deliveries"]
    assert delivery["status"] == "delivered"
    (receipt,) = delivery["receipts"]
    assert receipt["kind"] == "webhook-receipt" and receipt["applied"] and receipt["remote_id"] == "r-77"


def test_a_negative_receipt_fails_the_delivery_and_it_can_be_retried(client, wired, tenant, secret) -> None:
    _, delivery_id = _sent_delivery(client, wired, tenant)
    body, headers = _receipt(secret, delivery_id, outcome="failed")
    assert client.post("/inbound/receipts", data=body, headers=headers).status_code == 202
    assert inbound.process_next_inbound(wired, worker_id="w2")
    with wired.session_factory() as session:
        assert session.get(Delivery, delivery_id).status == "failed"
    retried = client.post(f"/v1/deliveries/{delivery_id}/retry", headers=bearer(tenant.api_key))
    assert retried.status_code == 202 and retried.json()["status"] == "pending"


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda b, h: (b, {k: v for k, v in h.items() if not k.startswith("webhook-")}), 401),  # unsigned
        (lambda b, h: (b.replace(b"delivered", b"failed!!!"), h), 401),  # tampered
        (lambda b, h: (b, {**h, "Content-Type": "text/plain"}), 415),
        (lambda b, h: (b"{" * 70_000, h), 413),
    ],
)
def test_refused_messages_store_nothing(client, wired, tenant, secret, mutate, status) -> None:
    body, headers = mutate(*_receipt(secret, "d-1"))
    answer = client.post("/inbound/receipts", data=body, headers=headers)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert _inbound_count(wired) == 0


def test_unknown_source_and_hostile_but_signed_content(client, wired, tenant, secret) -> None:
    assert client.post("/inbound/nope", data=b"{}", headers={"Content-Type": "application/json"}).status_code == 404
    deep = b"[" * 3000 + b"]" * 3000
    headers = {**sign_headers([secret], msg_id="deep-1", body=deep), "Content-Type": "application/json"}
    assert client.post("/inbound/receipts", data=deep, headers=headers).status_code == 202  # stored as received
    assert inbound.process_next_inbound(wired, worker_id="w2")  # ... and kept with a note, never a crash
    with wired.session_factory() as session:
        (row,) = session.scalars(select(InboundMessage)).all()
    assert row.status == "ignored" and "nests deeper" in (row.note or "")
