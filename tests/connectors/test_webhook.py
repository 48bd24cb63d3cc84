"""The webhook connector against the real sandbox receiver (contract suite + webhook specifics).

The sandbox verifies signatures in every test here that configures secrets, so each delivery
the contract suite makes also proves the Standard Webhooks signature is valid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.base import Envelope, PermanentError, TransientError
from connectors.sandbox import SandboxReceiver
from connectors.webhook import WebhookConnector, WebhookSettings
from connectors.webhook.receipts import WebhookReceiptSettings, WebhookReceiptSource
from connectors.webhook.signing import new_secret
from tests.connectors.contract import ConnectorContract, make_envelope
from tests.peers import ReceiptCollector, SandboxClient, free_port


class SignedSandbox(SandboxClient):
    """A verifying sandbox and the reference to the secret its senders sign with."""

    def __init__(self, url: str, secret_ref: str) -> None:
        super().__init__(url)
        self.secret_ref = secret_ref


def _secret_file(folder: Path, name: str = "hook-secret") -> tuple[str, str]:
    """(whsec_ value, file: reference) of a fresh secret written to ``folder``."""
    value = new_secret()
    path = folder / name
    path.write_text(value + "\n", encoding="ascii")
    return value, f"file:{path}"


class TestWebhook(ConnectorContract):
    @pytest.fixture
    def peer(self, tmp_path: Path) -> Iterator[SignedSandbox]:
        value, ref = _secret_file(tmp_path)
        # receipts (acknowledge_later) go to a closed port and are due long after the test
        with SandboxReceiver(webhook_secrets=[value], receipt_url=f"http://127.0.0.1:{free_port()}/r") as receiver:
            yield SignedSandbox(receiver.url, ref)

    def connector(self, peer: SignedSandbox) -> WebhookConnector:
        return WebhookConnector(
            WebhookSettings(
                url=f"{peer.url}/hooks/dui",
                health_url=f"{peer.url}/_health",
                timeout=5,
                signing_secrets=[peer.secret_ref],
            )
        )

    def down_connector(self) -> WebhookConnector:
        url = f"http://127.0.0.1:{free_port()}"
        return WebhookConnector(
            WebhookSettings(url=f"{url}/hooks/dui", health_url=f"{url}/_health", timeout=2, signing=False)
        )

    def slow_next(self, peer: SignedSandbox, seconds: float) -> None:
        peer.control(delay=seconds)

    def acknowledge_later(self, peer: SignedSandbox) -> None:
        peer.control(receipt_later=1, receipt_delay=600)

    def reject_next(self, peer: SandboxClient) -> None:
        peer.control(reject_next=1, status=422)

    def fail_next(self, peer: SandboxClient) -> None:
        peer.control(fail_next=1, status=503)

    def accepted_count(self, peer: SandboxClient, envelope: Envelope) -> int:
        return sum(1 for r in peer.accepted() if r["idempotency_key"] == envelope.idempotency_key)


@pytest.fixture
def sandbox() -> Iterator[SandboxClient]:
    """A sandbox that does not verify signatures (for the connectors configured ``signing: false``)."""
    with SandboxReceiver() as receiver:
        yield SandboxClient(receiver.url)


def _unsigned(url: str, **kw: object) -> WebhookConnector:
    return WebhookConnector(WebhookSettings.model_validate({"url": url, "signing": False, **kw}))


def test_body_carries_renditions_and_headers(sandbox: SandboxClient, monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_envelope()
    monkeypatch.setenv("HOOK_TOKEN", "s3cret-token")
    conn = _unsigned(f"{sandbox.url}/in", token="env:HOOK_TOKEN", headers={"X-Env": "t"})
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
        _unsigned(f"{sandbox.url}/in").send(make_envelope())


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_client_errors_are_permanent(sandbox: SandboxClient, status: int) -> None:
    sandbox.control(reject_next=1, status=status)
    with pytest.raises(PermanentError, match=str(status)):
        _unsigned(f"{sandbox.url}/in").send(make_envelope())


def test_timeout_is_transient(sandbox: SandboxClient) -> None:
    sandbox.control(delay=1.0)
    with pytest.raises(TransientError, match="Timeout") as info:
        _unsigned(f"{sandbox.url}/in", timeout=0.2).send(make_envelope())
    assert info.value.__cause__ is not None


def test_health_url_must_answer_2xx(sandbox: SandboxClient) -> None:
    conn = _unsigned(f"{sandbox.url}/in", health_url=f"{sandbox.url}/nope")
    health = conn.health()
    assert not health.ok and "404" in health.detail
    # without a health URL, any non-5xx answer to HEAD on the endpoint proves it is reachable
    assert _unsigned(f"{sandbox.url}/in").health().ok


def test_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        WebhookSettings.model_validate({"url": "ftp://example.org/x", "signing": False})
    with pytest.raises(ValidationError):
        WebhookSettings.model_validate({"url": "https://example.org", "signing": False, "unknown": 1})
    monkeypatch.setenv("HOOK_TOKEN", "Zq9-secret")
    s = WebhookSettings.model_validate({"url": "https://example.org/hook", "signing": False, "token": "env:HOOK_TOKEN"})
    assert s.verify_tls is True
    assert "Zq9-secret" not in repr(s) and "Zq9-secret" not in s.model_dump_json()
    assert s.model_dump(mode="json")["token"] == "env:HOOK_TOKEN", "settings serialise back to references"


def test_signing_is_required_unless_disabled_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="signing_secrets is required"):
        WebhookSettings.model_validate({"url": "https://example.org/hook"})
    monkeypatch.setenv("HOOK_SECRET", new_secret())
    with pytest.raises(ValidationError, match="signing is false but signing_secrets"):
        WebhookSettings.model_validate(
            {"url": "https://x.org", "signing": False, "signing_secrets": ["env:HOOK_SECRET"]}
        )
    ok = WebhookSettings.model_validate({"url": "https://x.org", "signing_secrets": ["env:HOOK_SECRET"]})
    assert ok.signing and len(ok.signing_secrets) == 1


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("whsec_" + base64.b64encode(b"k" * 32).decode(), "never as its value"),  # a literal secret
        ("env:NO_SUCH_VARIABLE_HERE", "NO_SUCH_VARIABLE_HERE is not set"),
        ("file:/nonexistent/secret", "cannot read the secret file"),
        ("env:HOOK_NOT_WHSEC", "whsec_<base64>"),
        ("env:HOOK_SHORT", "24 to 64 random bytes"),
    ],
)
def test_secret_mistakes_are_clear_and_never_quote_a_value(
    monkeypatch: pytest.MonkeyPatch, given: str, message: str
) -> None:
    monkeypatch.setenv("HOOK_NOT_WHSEC", "plain-password-value")
    monkeypatch.setenv("HOOK_SHORT", "whsec_" + base64.b64encode(b"short").decode())
    monkeypatch.delenv("NO_SUCH_VARIABLE_HERE", raising=False)
    with pytest.raises(ValidationError) as info:
        WebhookSettings.model_validate({"url": "https://x.org", "signing_secrets": [given]})
    text = str(info.value)
    assert message in text
    for value in (given if given.startswith("whsec_") else "", "plain-password-value", "c2hvcnQ"):
        assert not value or value not in text


def _signed_at_sandbox(sandbox: SandboxClient, n: int) -> tuple[dict[str, str], bytes]:
    [rec] = [r for r in sandbox.received() if r["n"] == n]
    return {k.lower(): v for k, v in rec["headers"].items()}, sandbox.body(n)


def _expected(secret: str, msg_id: str, stamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def test_signature_present_and_valid_at_the_sandbox(tmp_path: Path) -> None:
    value, ref = _secret_file(tmp_path)
    env = make_envelope()
    with SandboxReceiver(webhook_secrets=[value]) as rx:
        sandbox = SandboxClient(rx.url)
        conn = WebhookConnector(WebhookSettings(url=f"{rx.url}/in", signing_secrets=[ref]))
        conn.send(env)
        conn.send(env)  # a resend: same webhook-id, fresh timestamp
        first, again = sandbox.received()
        assert (first["outcome"], again["outcome"]) == ("accepted", "duplicate")
        headers, body = _signed_at_sandbox(sandbox, first["n"])
    assert headers["webhook-id"] == env.idempotency_key == again["headers"]["webhook-id"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    # independent check with hmac/hashlib: HMAC-SHA256 over "{id}.{timestamp}.{body}"
    assert headers["webhook-signature"] == _expected(value, env.idempotency_key, headers["webhook-timestamp"], body)


def test_rotation_signs_with_every_secret_newest_first(tmp_path: Path) -> None:
    new, new_ref = _secret_file(tmp_path, "new")
    old, old_ref = _secret_file(tmp_path, "old")
    env = make_envelope()
    # a receiver that only knows the old secret still accepts during the rotation
    with SandboxReceiver(webhook_secrets=[old]) as rx:
        conn = WebhookConnector(WebhookSettings(url=f"{rx.url}/in", signing_secrets=[new_ref, old_ref]))
        conn.send(env)
        sandbox = SandboxClient(rx.url)
        [rec] = sandbox.accepted()
        headers, body = _signed_at_sandbox(sandbox, rec["n"])
    stamp = headers["webhook-timestamp"]
    assert headers["webhook-signature"].split(" ") == [
        _expected(new, env.idempotency_key, stamp, body),
        _expected(old, env.idempotency_key, stamp, body),
    ]


def test_wrong_secret_is_refused_by_the_sandbox_as_permanent(tmp_path: Path) -> None:
    _, ref = _secret_file(tmp_path)
    with SandboxReceiver(webhook_secrets=[new_secret()]) as rx:
        conn = WebhookConnector(WebhookSettings(url=f"{rx.url}/in", signing_secrets=[ref]))
        with pytest.raises(PermanentError, match="401"):
            conn.send(make_envelope())
        [rec] = SandboxClient(rx.url).received()
    assert (rec["outcome"], rec["status"], rec["note"]) == ("rejected", 401, "signature mismatch")


def test_accepted_receipt_later_gives_a_sent_receipt(tmp_path: Path) -> None:
    value, ref = _secret_file(tmp_path)
    env = make_envelope()
    with SandboxReceiver(webhook_secrets=[value], receipt_url=f"http://127.0.0.1:{free_port()}/r") as rx:
        sandbox = SandboxClient(rx.url)
        sandbox.control(receipt_later=1, receipt_delay=600)
        conn = WebhookConnector(WebhookSettings(url=f"{rx.url}/in", signing_secrets=[ref]))
        receipt = conn.send(env)
        resent = conn.send(env)  # a resend before the receipt: still "later", same receipt id
        after = conn.send(make_envelope())  # the fault was for one delivery only
        [scheduled] = sandbox.receipts()
    assert receipt.status == "sent" and receipt.ack_ref == env.idempotency_key
    assert receipt.remote_id == scheduled["receipt_id"] == resent.remote_id
    assert receipt.detail == {"status": 202, "receipt": "later"}
    assert resent.status == "sent"
    assert after.status == "delivered" and after.ack_ref is None
    assert scheduled["idempotency_key"] == env.idempotency_key and scheduled["delivery_id"] == env.delivery_id


class _HugeAnswer(BaseHTTPRequestHandler):
    """Accepts with a 10 MB body (a hostile or broken peer)."""

    protocol_version = "HTTP/1.1"
    size = 10 * 1024 * 1024

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(201)
        self.send_header("Location", "/documents/42")
        self.send_header("Content-Length", str(self.size))
        self.end_headers()
        try:
            for _ in range(self.size // 65536):
                self.wfile.write(b" " * 65536)
        except OSError:
            pass  # the connector stopped reading: expected

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_huge_answer_is_not_read_into_memory() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HugeAnswer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/in"
        receipt = _unsigned(url, timeout=5).send(make_envelope())
    finally:
        server.shutdown()
        server.server_close()
    assert receipt.status == "delivered" and receipt.remote_id == "/documents/42"


def test_sent_receipt_and_later_acknowledgement_meet_on_ack_ref(tmp_path: Path) -> None:
    """The whole seam: connector → 202 later → the sandbox's signed receipt → the receipt source."""
    value, ref = _secret_file(tmp_path)
    source = WebhookReceiptSource(WebhookReceiptSettings.model_validate({"signing_secrets": [ref]}))
    env = make_envelope()
    with ReceiptCollector(source) as gateway, SandboxReceiver(webhook_secrets=[value]) as rx:
        SandboxClient(rx.url).control(receipt_later=1, receipt_delay=0.1, receipt_url=gateway.url)
        receipt = WebhookConnector(WebhookSettings(url=f"{rx.url}/in", signing_secrets=[ref])).send(env)
        gateway.wait(1)
    [ack] = gateway.acknowledgements()
    assert receipt.status == "sent" and ack.ack_ref == receipt.ack_ref == env.idempotency_key
    assert (ack.outcome, ack.remote_id, ack.detail["delivery_id"]) == ("delivered", receipt.remote_id, env.delivery_id)
