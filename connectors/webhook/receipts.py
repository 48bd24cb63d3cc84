"""Receipts that webhook peers POST later: the inbound half of "accepted, receipt later".

A peer that answered a delivery ``202 {"receipt": "later"}`` (the connector returned a ``sent``
:class:`~connectors.base.Receipt` whose ``ack_ref`` is the envelope's idempotency key) later
POSTs to the gateway's ``/inbound/webhook-receipts``, signed like our own webhooks (Standard
Webhooks headers, :mod:`connectors.webhook.signing`)::

    {"type": "delivery.receipt", "delivery_id": "...", "idempotency_key": "...",
     "receipt_id": "...", "outcome": "delivered" | "failed", "reason": "..." | null, "at": "..."}

:class:`WebhookReceiptSource` (entry point ``webhook-receipts`` in ``dui_gateway.sources``):

- ``accept`` refuses a body over ``max_body_bytes`` (413), a media type other than JSON (415),
  a missing/stale/wrong signature (401) or malformed headers (400), and returns an
  :class:`~connectors.base.InboundMessage` whose ``external_id`` is the ``webhook-id`` (a
  resent receipt is stored once);
- ``interpret`` turns a stored receipt into one :class:`~connectors.base.Acknowledgement`
  (``ack_ref`` = ``idempotency_key``, ``kind="webhook-receipt"``); anything else, however
  hostile (deep nesting, huge numbers, wrong types, not UTF-8), gives an
  :class:`~connectors.base.Interpretation` with a ``note`` and no acknowledgement, never an
  exception. Notes and messages never quote the content.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from connectors._json import JsonRefused, loads_bounded
from connectors._secrets import SecretRef
from connectors.base import (
    Acknowledgement,
    Health,
    InboundMessage,
    InboundRejected,
    InboundSink,
    Interpretation,
)
from connectors.webhook.signing import MAX_ID_LENGTH, SignatureError, check_secret, verify

__all__ = ["RECEIPT_TYPE", "WebhookReceiptSettings", "WebhookReceiptSource"]

RECEIPT_TYPE = "delivery.receipt"
_MAX_DEPTH = 8
_MAX_REASON = 500
_HARD_MAX_BODY = 1024 * 1024
_KEPT_HEADERS = ("webhook-id", "webhook-timestamp", "content-type", "user-agent")


class WebhookReceiptSettings(BaseModel):
    """The secrets peers sign receipts with (references, newest first) and the largest body."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    signing_secrets: tuple[SecretRef, ...] = Field(min_length=1, max_length=5)
    max_body_bytes: int = Field(default=64 * 1024, gt=0, le=_HARD_MAX_BODY)

    @field_validator("signing_secrets")
    @classmethod
    def _whsec(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for secret in value:
            try:
                check_secret(secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"{secret}: {exc}") from None
        return value


class _Unfit(ValueError):
    """The content is not a receipt (the message is a note, without content)."""


def _text(data: Mapping[str, Any], key: str, *, required: bool, limit: int = MAX_ID_LENGTH) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Unfit(f"'{key}' is {'missing or ' if required else ''}not a non-empty string")
    if len(value) > limit:
        raise _Unfit(f"'{key}' is longer than {limit} characters")
    return value


def _acknowledgement(content: bytes) -> Acknowledgement:
    if len(content) > _HARD_MAX_BODY:
        raise _Unfit("the receipt is larger than 1 MiB")
    try:
        data = loads_bounded(content, max_depth=_MAX_DEPTH, what="the receipt")
    except JsonRefused as exc:
        raise _Unfit(str(exc)) from None
    if not isinstance(data, dict):
        raise _Unfit("the receipt is not a JSON object")
    if data.get("type") != RECEIPT_TYPE:
        raise _Unfit(f"not a {RECEIPT_TYPE} message")
    ack_ref = cast(str, _text(data, "idempotency_key", required=True))
    outcome = data.get("outcome")
    if outcome not in ("delivered", "failed"):
        raise _Unfit("'outcome' is neither 'delivered' nor 'failed'")
    reason = _text(data, "reason", required=False, limit=10 * _MAX_REASON)
    if reason is not None:
        reason = "".join(ch if ch.isprintable() else " " for ch in reason[:_MAX_REASON])
    detail: dict[str, str] = {}
    for key in ("delivery_id", "at"):
        found = _text(data, key, required=False)
        if found is not None:
            detail[key] = found
    return Acknowledgement(
        ack_ref=ack_ref,
        outcome=cast(Literal["delivered", "failed"], outcome),
        kind="webhook-receipt",
        remote_id=_text(data, "receipt_id", required=False),
        reason=reason,
        detail=detail,
    )


class WebhookReceiptSource:
    """An :class:`~connectors.base.HttpSource` for signed ``delivery.receipt`` messages."""

    name: ClassVar[str] = "webhook-receipts"
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[BaseModel]] = WebhookReceiptSettings

    def __init__(self, settings: WebhookReceiptSettings) -> None:
        self.settings = settings

    def accept(self, headers: Mapping[str, str], body: bytes) -> InboundMessage:
        """Check size, media type and signature; the message to store, or :class:`InboundRejected`."""
        if len(body) > self.settings.max_body_bytes:
            raise InboundRejected(f"the body exceeds {self.settings.max_body_bytes} bytes", status=413)
        lowered = {k.lower(): v for k, v in headers.items()}
        media_type = lowered.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise InboundRejected("a receipt is application/json", status=415)
        try:
            msg_id = verify(self.settings.signing_secrets, lowered, body)
        except SignatureError as exc:
            raise InboundRejected(f"receipt refused: {exc}", status=exc.status) from None
        kept = {k: lowered[k][:MAX_ID_LENGTH] for k in _KEPT_HEADERS if k in lowered}
        return InboundMessage(
            external_id=msg_id,
            content=body,
            media_type="application/json",
            headers=kept,
            received_at=datetime.now(UTC),
        )

    def interpret(self, message: InboundMessage) -> Interpretation:
        """One acknowledgement for a well-formed receipt, else a note (never raises)."""
        try:
            return Interpretation(acknowledgements=(_acknowledgement(message.content),))
        except _Unfit as exc:
            return Interpretation(note=f"ignored: {exc}")
        except Exception as exc:  # hostile input must never break the worker
            return Interpretation(note=f"ignored: unreadable receipt ({type(exc).__name__})")

    def run(self, sink: InboundSink, stop: threading.Event) -> None:
        """Receipts arrive through ``POST /inbound/webhook-receipts``: nothing to run."""
        stop.wait()

    def health(self) -> Health:
        return Health(ok=True, detail="receipts arrive through POST /inbound/webhook-receipts")
