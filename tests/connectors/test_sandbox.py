"""The sandbox receiver itself: durable record, dedup by Idempotency-Key, fault injection."""

from __future__ import annotations

import hashlib
from pathlib import Path

import requests

from connectors.sandbox import SandboxReceiver
from tests.peers import SandboxClient


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
