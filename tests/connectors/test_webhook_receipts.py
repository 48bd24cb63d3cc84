"""WebhookReceiptSource: signed receipts accepted, everything else refused or noted, never a crash."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from connectors.base import HttpSource, InboundMessage, InboundRejected
from connectors.webhook.receipts import WebhookReceiptSettings, WebhookReceiptSource
from connectors.webhook.signing import new_secret, sign_headers

SECRET = new_secret()


def _source(*secrets: str, max_body_bytes: int = 64 * 1024) -> WebhookReceiptSource:
    return WebhookReceiptSource(
        WebhookReceiptSettings(
            signing_secrets=tuple(SecretStr(s) for s in (secrets or (SECRET,))), max_body_bytes=max_body_bytes
        )
    )


def _receipt(**override: Any) -> bytes:
    body = {
        "type": "delivery.receipt",
        "delivery_id": "d-1",
        "idempotency_key": "delivery-key-1",
        "receipt_id": "rcpt-1",
        "outcome": "delivered",
        "reason": None,
        "at": "2026-11-30T10:00:00+00:00",
    }
    body.update(override)
    return json.dumps(body).encode()


def _signed(body: bytes, *, msg_id: str = "msg_1", secrets: tuple[str, ...] = (SECRET,), **kw: Any) -> dict[str, str]:
    return {"Content-Type": "application/json", **sign_headers(list(secrets), msg_id=msg_id, body=body, **kw)}


def _message(content: bytes) -> InboundMessage:
    return InboundMessage(external_id="msg_x", content=content, media_type="application/json")


def test_is_an_http_source_registered_by_entry_point() -> None:
    source = _source()
    assert isinstance(source, HttpSource)
    assert source.health().ok
    [ep] = [ep for ep in entry_points(group="dui_gateway.sources") if ep.name == "webhook-receipts"]
    assert ep.load() is WebhookReceiptSource
    stop = threading.Event()
    stop.set()
    source.run(sink=None, stop=stop)  # type: ignore[arg-type]  # returns at once once stopped


def test_signed_receipt_is_accepted_and_interpreted() -> None:
    body = _receipt(outcome="failed", reason="boîte pleine\n\x00")
    message = _source().accept(_signed(body, msg_id="msg_abc") | {"X-Forwarded-For": "10.0.0.1"}, body)
    assert message.external_id == "msg_abc" and message.content == body
    assert message.media_type == "application/json"
    assert set(message.headers) <= {"webhook-id", "webhook-timestamp", "content-type", "user-agent"}
    [ack] = _source().interpret(message).acknowledgements
    assert (ack.ack_ref, ack.outcome, ack.kind, ack.remote_id) == (
        "delivery-key-1",
        "failed",
        "webhook-receipt",
        "rcpt-1",
    )
    assert ack.reason == "boîte pleine  "  # control characters neutralised
    assert ack.detail == {"delivery_id": "d-1", "at": "2026-11-30T10:00:00+00:00"}


def test_rotation_either_configured_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    body = _receipt()
    source = _source(new, old)
    assert source.accept(_signed(body, secrets=(old,)), body).external_id == "msg_1"
    assert source.accept(_signed(body, secrets=(new,)), body).external_id == "msg_1"
    with pytest.raises(InboundRejected) as info:
        _source(new).accept(_signed(body, secrets=(old,)), body)
    assert info.value.status == 401


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("unsigned", 401),
        ("wrong secret", 401),
        ("stale", 401),
        ("future", 401),
        ("body changed", 401),
        ("not json", 415),
        ("no content type", 415),
        ("too big", 413),
        ("10 KB id", 400),
        ("bad timestamp", 400),
        ("not utf-8", 400),
    ],
)
def test_refusals(case: str, status: int) -> None:
    body = _receipt()
    headers = _signed(body)
    now = datetime.now(UTC)
    if case == "unsigned":
        headers = {"Content-Type": "application/json"}
    elif case == "wrong secret":
        headers = _signed(body, secrets=(new_secret(),))
    elif case == "stale":
        headers = _signed(body, now=now - timedelta(minutes=6))
    elif case == "future":
        headers = _signed(body, now=now + timedelta(minutes=6))
    elif case == "body changed":
        body = _receipt(outcome="failed")
    elif case == "not json":
        headers["Content-Type"] = "text/plain"
    elif case == "no content type":
        del headers["Content-Type"]
    elif case == "too big":
        body = b" " * (10 * 1024 * 1024) + body  # 10 MB
    elif case == "10 KB id":
        headers = _signed(body, msg_id="x" * 10_240)
    elif case == "bad timestamp":
        headers["webhook-timestamp"] = "yesterday"
    elif case == "not utf-8":
        body = b'{"type": "\xff\xfe"}'
        headers["webhook-signature"] = "v1,AAAA"
    with pytest.raises(InboundRejected) as info:
        _source().accept(headers, body)
    assert info.value.status == status
    assert "delivery-key-1" not in str(info.value) and "rcpt-1" not in str(info.value), "the body is never quoted"


def _deep(depth: int) -> bytes:
    return b'{"type": "delivery.receipt", "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("content", "note"),
    [
        (_deep(2000), "nests deeper"),
        (b"[" * 100_000, "nests deeper"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"not json at all", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'"delivery.receipt"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (_receipt(type="something.else"), "not a delivery.receipt"),
        (_receipt(idempotency_key=None), "'idempotency_key' is missing"),
        (_receipt(idempotency_key=12345678901234), "'idempotency_key' is missing"),
        (_receipt(idempotency_key=["a"]), "'idempotency_key' is missing"),
        (_receipt(idempotency_key="k" * 10_240), "longer than"),
        (_receipt(receipt_id="r" * 10_240), "longer than"),
        (_receipt(outcome="maybe"), "'outcome' is neither"),
        (_receipt(outcome={"$gt": ""}), "'outcome' is neither"),
        (_receipt(reason=42), "'reason' is not"),
        (b'{"type": "delivery.receipt", "n": ' + b"9" * 5000 + b"}", "too large"),
        (b'{"type": "delivery.receipt", "n": NaN}', "NaN"),
        (b'{"type": "delivery.receipt", "n": 1e999999}', "idempotency_key"),  # inf parses; no key
        (b" " * (10 * 1024 * 1024), "larger than 1 MiB"),
    ],
)
def test_hostile_content_gives_a_note_never_an_exception(content: bytes, note: str) -> None:
    interpretation = _source().interpret(_message(content))
    assert interpretation.acknowledgements == ()
    assert note in interpretation.note
    assert len(interpretation.note) < 200


def test_settings_need_secret_references() -> None:
    with pytest.raises(ValidationError, match="at least 1"):
        WebhookReceiptSettings.model_validate({"signing_secrets": []})
    with pytest.raises(ValidationError, match="never as its value") as info:
        WebhookReceiptSettings.model_validate({"signing_secrets": [SECRET]})
    assert SECRET not in str(info.value)
    with pytest.raises(ValidationError):
        WebhookReceiptSettings.model_validate({"signing_secrets": [SECRET], "max_body_bytes": 10**9})
