"""The sandbox receiver itself: durable record, dedup by Idempotency-Key, fault injection,
signature verification, and receipts sent later (to a real HTTP server running the receipt source)."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from pydantic import SecretStr

from connectors.sandbox import SandboxReceiver, sandbox_secrets
from connectors.sandbox.receiver import SECRETS_ENV
from connectors.webhook.receipts import WebhookReceiptSettings, WebhookReceiptSource
from connectors.webhook.signing import new_secret, sign_headers
from tests.peers import ReceiptCollector, SandboxClient, free_port, sandbox_process


def _post(url: str, body: bytes, key: str | None) -> requests.Response:
    headers = {"Content-Type": "application/octet-stream"}
    if key:
        headers["Idempotency-Key"] = key
    return requests.post(f"{url}/any/path", data=body, headers=headers, timeout=10)


def test_records_and_deduplicates_durably(tmp_path: Path) -> None:
    db = tmp_path / "sandbox.db"
    with SandboxReceiver(db_path=db) as rx:
        first = _post(rx.url, b"one", "k1")
        again = _post(rx.url, b"one", "k1")
        other = _post(rx.url, b"two", "k2")
        nokey = _post(rx.url, b"three", None)
    assert (first.status_code, again.status_code, other.status_code, nokey.status_code) == (201, 200, 201, 201)
    assert again.json() == {"receipt_id": first.json()["receipt_id"], "duplicate": True}
    assert other.json()["receipt_id"] != first.json()["receipt_id"]
    # a restarted receiver on the same file still knows k1
    with SandboxReceiver(db_path=db) as rx:
        resend = _post(rx.url, b"one", "k1")
        assert resend.status_code == 200 and resend.json()["receipt_id"] == first.json()["receipt_id"]
        client = SandboxClient(rx.url)
        everything = client.received()
        accepted = client.accepted()
    assert [r["outcome"] for r in everything] == ["accepted", "duplicate", "accepted", "accepted", "duplicate"]
    assert [r["idempotency_key"] for r in accepted] == ["k1", "k2", None]
    assert accepted[0]["body_sha256"] == hashlib.sha256(b"one").hexdigest()
    assert accepted[0]["path"] == "/any/path" and accepted[0]["body_size"] == 3


def test_fault_injection_and_reset() -> None:
    with SandboxReceiver() as rx:
        client = SandboxClient(rx.url)
        client.control(fail_next=2, status=503)
        assert [_post(rx.url, b"x", "k").status_code for _ in range(3)] == [503, 503, 201]
        client.control(reject_next=1, status=422)
        assert _post(rx.url, b"y", "k-y").status_code == 422
        # a rejected key was never accepted: the next try is a first acceptance
        assert _post(rx.url, b"y", "k-y").status_code == 201
        state = client.control(delay=0.3, fail_next=5)
        assert state["delay"] == 0.3 and state["fail_next"] == 5
        assert client.control(reset=True)["fail_next"] == 0
        outcomes = [r["outcome"] for r in client.received()]
        assert outcomes == ["failed", "failed", "accepted", "rejected", "accepted"]
        assert len(client.accepted()) == 2
        client.control(clear=True)
        assert client.received() == []
        assert requests.post(f"{rx.url}/_control", data=b"[1]", timeout=5).status_code == 400
        assert requests.get(f"{rx.url}/_health", timeout=5).json() == {"ok": True}


# -- signature verification -------------------------------------------------------------------
def _signed_post(
    url: str, body: bytes, key: str, secrets: list[str], *, at: datetime | None = None, signature: str | None = None
) -> requests.Response:
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    headers.update(sign_headers(secrets, msg_id=key, body=body, now=at))
    if signature is not None:
        headers["webhook-signature"] = signature
    return requests.post(f"{url}/hooks", data=body, headers=headers, timeout=10)


def test_verifies_signatures_when_configured() -> None:
    secret = new_secret()
    now = datetime.now(UTC)
    with SandboxReceiver(webhook_secrets=[secret]) as rx:
        client = SandboxClient(rx.url)
        answers = {
            "valid": _signed_post(rx.url, b"{}", "k-ok", [secret]),
            "unsigned": _post(rx.url, b"{}", "k-unsigned"),
            "wrong secret": _signed_post(rx.url, b"{}", "k-wrong", [new_secret()]),
            "tampered": _signed_post(rx.url, b"{}", "k-tamper", [secret], signature="v1,AAAA"),
            "stale": _signed_post(rx.url, b"{}", "k-stale", [secret], at=now - timedelta(minutes=6)),
            "future": _signed_post(rx.url, b"{}", "k-future", [secret], at=now + timedelta(minutes=6)),
            "garbage": _signed_post(rx.url, b"{}", "k-garbage", [secret], signature="v1 ,, v2,x v1,@@@"),
        }
        received = client.received()
    assert {name: r.status_code for name, r in answers.items()} == {
        "valid": 201,
        "unsigned": 401,
        "wrong secret": 401,
        "tampered": 401,
        "stale": 401,
        "future": 401,
        "garbage": 401,
    }
    assert [(r["outcome"], r["note"]) for r in received] == [
        ("accepted", None),
        ("rejected", "signature missing"),
        ("rejected", "signature mismatch"),
        ("rejected", "signature mismatch"),
        ("rejected", "signature stale"),
        ("rejected", "signature stale"),
        ("rejected", "signature mismatch"),
    ]
    assert [r["idempotency_key"] for r in received if r["outcome"] == "accepted"] == ["k-ok"]


def test_rotation_accepts_old_and_new_while_both_are_configured(tmp_path: Path) -> None:
    old, new = new_secret(), new_secret()
    db = tmp_path / "sandbox.db"
    with SandboxReceiver(db_path=db, webhook_secrets=[new, old]) as rx:
        assert _signed_post(rx.url, b"{}", "k-old", [old]).status_code == 201
        assert _signed_post(rx.url, b"{}", "k-new", [new]).status_code == 201
        assert _signed_post(rx.url, b"{}", "k-both", [new, old]).status_code == 201
    with SandboxReceiver(db_path=db, webhook_secrets=[new]) as rx:  # the old secret is retired
        assert _signed_post(rx.url, b"{}", "k-old-2", [old]).status_code == 401
        assert _signed_post(rx.url, b"{}", "k-new-2", [new, old]).status_code == 201


def test_secrets_from_references_and_environment(tmp_path: Path) -> None:
    one, two = new_secret(), new_secret()
    path = tmp_path / "s"
    path.write_text(two + "\n", encoding="ascii")
    env = {"SBX_ONE": one, SECRETS_ENV: f"env:SBX_ONE, {two}"}
    got = sandbox_secrets(["env:SBX_ONE", f"file:{path}"], environ=env)
    assert [s.get_secret_value() for s in got] == [one, two]
    assert [s.get_secret_value() for s in sandbox_secrets(environ=env)] == [one, two]
    assert sandbox_secrets(environ={}) == []
    with pytest.raises(ValueError, match="SBX_NONE is not set"):
        sandbox_secrets(["env:SBX_NONE"], environ=env)
    with pytest.raises(ValueError, match=f"{SECRETS_ENV} item 1: a signing secret has the form") as info:
        sandbox_secrets(environ={SECRETS_ENV: "whsec_not-base64!"})
    assert "not-base64" not in str(info.value)


def test_cli_process_verifies_with_secret_reference(tmp_path: Path) -> None:
    secret = new_secret()
    with sandbox_process(tmp_path, secret_refs=["env:SBX_HOOK_SECRET"], env={"SBX_HOOK_SECRET": secret}) as (_, client):
        assert _post(client.url, b"{}", "k1").status_code == 401
        assert _signed_post(client.url, b"{}", "k2", [secret]).status_code == 201


# -- "accepted, receipt later" ------------------------------------------------------------------
def _deliver(url: str, secret: str, key: str, delivery_id: str) -> requests.Response:
    body = json.dumps({"delivery_id": delivery_id, "idempotency_key": key, "renditions": []}).encode()
    return _signed_post(url, body, key, [secret])


def _wait_state(client: SandboxClient, state: str, *, count: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [r for r in client.receipts() if r["state"] == state]
        if len(rows) >= count:
            return rows
        time.sleep(0.05)
    raise TimeoutError(f"no {count} receipt(s) {state}: {client.receipts()}")


def test_receipt_later_is_posted_signed_and_understood() -> None:
    secret = new_secret()
    source = WebhookReceiptSource(WebhookReceiptSettings(signing_secrets=(SecretStr(secret),)))
    with ReceiptCollector(source) as gateway, SandboxReceiver(webhook_secrets=[secret]) as rx:
        client = SandboxClient(rx.url)
        client.control(
            receipt_later=2,
            receipt_delay=0.2,
            receipt_outcome="failed",
            receipt_reason="box full",
            receipt_url=gateway.url,
        )
        first = _deliver(rx.url, secret, "key-1", "d-1")
        second = _deliver(rx.url, secret, "key-2", "d-2")
        third = _deliver(rx.url, secret, "key-3", "d-3")
        gateway.wait(2)
        sent = _wait_state(client, "sent", count=2)
    assert (first.status_code, second.status_code, third.status_code) == (202, 202, 201)
    assert first.json() == {
        "receipt_id": first.json()["receipt_id"],
        "status": "accepted",
        "receipt": "later",
        "duplicate": False,
    }
    acks = sorted(gateway.acknowledgements(), key=lambda a: a.ack_ref)
    assert [(a.ack_ref, a.outcome, a.kind, a.reason) for a in acks] == [
        ("key-1", "failed", "webhook-receipt", "box full"),
        ("key-2", "failed", "webhook-receipt", "box full"),
    ]
    assert acks[0].remote_id == first.json()["receipt_id"] and acks[0].detail["delivery_id"] == "d-1"
    assert {m.external_id for m in gateway.messages} == {r["message_id"] for r in sent}
    assert [r["attempts"] for r in sent] == [1, 1]


def test_duplicate_and_unknown_receipts_on_demand() -> None:
    secret = new_secret()
    source = WebhookReceiptSource(WebhookReceiptSettings(signing_secrets=(SecretStr(secret),)))
    with ReceiptCollector(source) as gateway, SandboxReceiver(webhook_secrets=[secret]) as rx:
        client = SandboxClient(rx.url)
        client.control(receipt_later=1, receipt_delay=0, receipt_url=gateway.url)
        receipt_id = _deliver(rx.url, secret, "key-1", "d-1").json()["receipt_id"]
        gateway.wait(1)
        client.control(receipt_duplicate=receipt_id)
        gateway.wait(2)
        client.control(receipt_unknown=True)
        gateway.wait(3)
        with pytest.raises(requests.HTTPError):
            client.control(receipt_duplicate="rcpt-nobody")
    first, duplicate, unknown = gateway.messages
    assert unknown.external_id != first.external_id
    assert duplicate.external_id == first.external_id and duplicate.content == first.content
    acks = gateway.acknowledgements()
    assert acks[0] == acks[1] and acks[0].outcome == "delivered"
    assert acks[2].ack_ref.startswith("unknown-") and acks[2].ack_ref != "key-1"


def test_receipt_retried_with_backoff_then_undelivered() -> None:
    secret = new_secret()
    port = free_port()
    source = WebhookReceiptSource(WebhookReceiptSettings(signing_secrets=(SecretStr(secret),)))
    with SandboxReceiver(webhook_secrets=[secret]) as rx:
        client = SandboxClient(rx.url)
        url = f"http://127.0.0.1:{port}/inbound/webhook-receipts"
        client.control(receipt_later=2, receipt_delay=0, receipt_retries=2, receipt_backoff=0.1, receipt_url=url)
        _deliver(rx.url, secret, "key-down", "d-1")
        [gave_up] = _wait_state(client, "undelivered")
        assert gave_up["attempts"] == 3 and gave_up["last_error"] == "ConnectionError"
        # the gateway comes back between two tries: the receipt arrives
        client.control(receipt_retries=10, receipt_backoff=0.3)
        _deliver(rx.url, secret, "key-later", "d-2")
        time.sleep(0.4)
        with ReceiptCollector(source, port=port) as gateway:
            gateway.wait(1)
            [sent] = _wait_state(client, "sent")
    assert sent["attempts"] >= 2 and sent["idempotency_key"] == "key-later"
    # a refusal that is not a fault of the moment (401: the gateway does not know the secret) is not retried
    with ReceiptCollector(source) as gateway, SandboxReceiver(webhook_secrets=[new_secret()]) as rx:
        client = SandboxClient(rx.url)
        client.control(receipt_unknown=True, receipt_url=gateway.url)
        [refused] = _wait_state(client, "undelivered")
    assert (refused["attempts"], refused["last_status"]) == (1, 401)
    assert gateway.rejections and gateway.rejections[0][0] == 401


def test_scheduled_receipt_survives_a_restart(tmp_path: Path) -> None:
    secret = new_secret()
    db = tmp_path / "sandbox.db"
    source = WebhookReceiptSource(WebhookReceiptSettings(signing_secrets=(SecretStr(secret),)))
    with ReceiptCollector(source) as gateway:
        with SandboxReceiver(db_path=db, webhook_secrets=[secret]) as rx:
            SandboxClient(rx.url).control(receipt_later=1, receipt_delay=1.5, receipt_url=gateway.url)
            assert _deliver(rx.url, secret, "key-restart", "d-1").status_code == 202
        assert gateway.messages == []  # stopped before the receipt was due
        with SandboxReceiver(db_path=db, webhook_secrets=[secret]) as rx:
            gateway.wait(1)
            [sent] = _wait_state(SandboxClient(rx.url), "sent")
            # the restarted sandbox still answers a resend "later" with the same receipt id
            again = _deliver(rx.url, secret, "key-restart", "d-1")
    assert [a.ack_ref for a in gateway.acknowledgements()] == ["key-restart"]
    assert again.status_code == 202 and again.json()["receipt_id"] == sent["receipt_id"]
    assert again.json()["duplicate"] is True


def test_receipt_controls_need_a_secret_and_a_url() -> None:
    with SandboxReceiver() as rx:
        resp = requests.post(f"{rx.url}/_control", json={"receipt_later": 1}, timeout=5)
        assert resp.status_code == 400 and "--webhook-secret" in resp.json()["error"]
    with SandboxReceiver(webhook_secrets=[new_secret()]) as rx:
        resp = requests.post(f"{rx.url}/_control", json={"receipt_later": 1}, timeout=5)
        assert resp.status_code == 400 and "receipt URL" in resp.json()["error"]
        resp = requests.post(f"{rx.url}/_control", json={"receipt_outcome": "maybe"}, timeout=5)
        assert resp.status_code == 400
