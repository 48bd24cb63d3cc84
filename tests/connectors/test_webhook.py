"""The webhook connector against the real sandbox receiver (contract suite + webhook specifics)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from connectors.base import Envelope, PermanentError, TransientError
from connectors.sandbox import SandboxReceiver
from connectors.webhook import WebhookConnector, WebhookSettings
from tests.connectors.contract import ConnectorContract, make_envelope
from tests.peers import SandboxClient, free_port


class TestWebhook(ConnectorContract):
    @pytest.fixture
    def peer(self) -> Iterator[SandboxClient]:
        with SandboxReceiver() as receiver:
            yield SandboxClient(receiver.url)

    def connector(self, peer: SandboxClient) -> WebhookConnector:
        return WebhookConnector(
            WebhookSettings(url=f"{peer.url}/hooks/dui", health_url=f"{peer.url}/_health", timeout=5)
        )

    def down_connector(self) -> WebhookConnector:
        url = f"http://127.0.0.1:{free_port()}"
        return WebhookConnector(WebhookSettings(url=f"{url}/hooks/dui", health_url=f"{url}/_health", timeout=2))

    def reject_next(self, peer: SandboxClient) -> None:
        peer.control(reject_next=1, status=422)

    def fail_next(self, peer: SandboxClient) -> None:
        peer.control(fail_next=1, status=503)

    def accepted_count(self, peer: SandboxClient, envelope: Envelope) -> int:
        return sum(1 for r in peer.accepted() if r["idempotency_key"] == envelope.idempotency_key)


@pytest.fixture
def sandbox() -> Iterator[SandboxClient]:
    with SandboxReceiver() as receiver:
        yield SandboxClient(receiver.url)


def test_body_carries_renditions_and_headers(sandbox: SandboxClient) -> None:
    env = make_envelope()
    conn = WebhookConnector(WebhookSettings(url=f"{sandbox.url}/in", token="s3cret-token", headers={"X-Env": "t"}))
    receipt = conn.send(env)
    [rec] = sandbox.accepted()
    assert rec["receipt_id"] == receipt.remote_id
    assert rec["path"] == "/in"
    assert rec["headers"]["X-Env"] == "t"
    assert rec["headers"]["X-Dui-Delivery-Id"] == env.delivery_id
    assert "Authorization" not in rec["headers"], "the receiver never stores credentials"
    body = json.loads(sandbox.body(rec["n"]))
    assert rec["body_sha256"] == hashlib.sha256(sandbox.body(rec["n"])).hexdigest()
    [r] = body["renditions"]
    assert base64.b64decode(r["content_base64"]) == env.renditions[0].content
    assert r["sha256"] == hashlib.sha256(env.renditions[0].content).hexdigest()
    assert r["metadata"]["creation_time"] == "2026-01-02T03:04:05+00:00"
    assert r["metadata"]["type_code"]["code"] == "34133-9"
    assert body["idempotency_key"] == env.idempotency_key
    assert rec["documents"] == [
        {"kind": "note", "document_id": r["document_id"], "set_id": r["set_id"], "version": r["version"]}
    ]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 408])
def test_retryable_statuses_are_transient(sandbox: SandboxClient, status: int) -> None:
    sandbox.control(fail_next=1, status=status)
    with pytest.raises(TransientError, match=str(status)):
        WebhookConnector(WebhookSettings(url=f"{sandbox.url}/in")).send(make_envelope())


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_client_errors_are_permanent(sandbox: SandboxClient, status: int) -> None:
    sandbox.control(reject_next=1, status=status)
    with pytest.raises(PermanentError, match=str(status)):
        WebhookConnector(WebhookSettings(url=f"{sandbox.url}/in")).send(make_envelope())


def test_timeout_is_transient(sandbox: SandboxClient) -> None:
    sandbox.control(delay=1.0)
    with pytest.raises(TransientError, match="Timeout") as info:
        WebhookConnector(WebhookSettings(url=f"{sandbox.url}/in", timeout=0.2)).send(make_envelope())
    assert info.value.__cause__ is not None


def test_health_url_must_answer_2xx(sandbox: SandboxClient) -> None:
    conn = WebhookConnector(WebhookSettings(url=f"{sandbox.url}/in", health_url=f"{sandbox.url}/nope"))
    health = conn.health()
    assert not health.ok and "404" in health.detail
    # without a health URL, any non-5xx answer to HEAD on the endpoint proves it is reachable
    assert WebhookConnector(WebhookSettings(url=f"{sandbox.url}/in")).health().ok


def test_settings_are_checked() -> None:
    with pytest.raises(ValidationError):
        WebhookSettings(url="ftp://example.org/x")
    with pytest.raises(ValidationError):
        WebhookSettings.model_validate({"url": "https://example.org", "unknown": 1})
    s = WebhookSettings(url="https://example.org/hook", token="Zq9-secret")
    assert s.verify_tls is True
    assert "Zq9-secret" not in repr(s)
