"""Webhook connector: POSTs the envelope as JSON to an HTTPS endpoint, signed.

Body (``application/json``)::

    {"delivery_id", "submission_id", "idempotency_key", "tenant", "destination", "document_type",
     "facts": {"person_ref", "essms_finess", "ins_qualified"},
     "renditions": [{"kind", "media_type", "document_id", "set_id", "version", "replaces",
                     "sha256", "size", "metadata", "content_base64"}]}

Signing (Standard Webhooks layout, :mod:`connectors.webhook.signing`): ``webhook-id`` is
``envelope.idempotency_key`` (stable across resends), ``webhook-timestamp`` the unix time of this
attempt, ``webhook-signature`` one ``v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>`` per
configured secret, newest first. Secrets are ``whsec_<base64>`` values given by reference only
(``signing_secrets: ["env:NAME", "file:/path"]``, see :mod:`connectors._secrets`): to rotate,
put the new secret first and keep the old one until the receiver has switched. Signing is
required: a destination without secrets must say ``signing: false``.

The ``Idempotency-Key`` header also carries ``envelope.idempotency_key``. Outcomes:

- ``202`` whose JSON says ``"receipt": "later"`` → :class:`Receipt` ``status="sent"`` with
  ``ack_ref=envelope.idempotency_key``: the peer will POST a signed ``delivery.receipt`` to the
  gateway (:mod:`connectors.webhook.receipts`);
- any other 2xx → ``status="delivered"`` (``remote_id`` from the JSON ``receipt_id`` or ``id``,
  else the ``Location`` header);
- connection error, timeout, 408, 425, 429, 5xx → :class:`TransientError`; any other answer or
  a TLS certificate that fails verification → :class:`PermanentError` (:mod:`connectors._errors`).

Every network call is bounded by ``envelope.timeout(settings.timeout)``: the connect and each
socket read wait at most the time left before the envelope's deadline. The answer's body is read
only up to 64 KiB (a larger one is ignored, not loaded) and a 2xx whose body is still arriving
at the deadline is a :class:`TransientError`. Limit: requests has no total timeout, so a peer
dribbling its *headers* byte by byte can keep one send past the deadline by up to one read
timeout per byte; the engine's lease is the backstop.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import threading
from datetime import date, datetime
from typing import Any, ClassVar

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors._errors import http_status_error, map_errors
from connectors._secrets import SecretRef
from connectors.base import Envelope, Health, Receipt, TransientError
from connectors.webhook.signing import check_secret, sign_headers
from mappings.base import Rendition

__all__ = ["WebhookConnector", "WebhookSettings"]

# set by the connector itself: a destination's extra headers may not replace them
_RESERVED_HEADERS = frozenset(
    {"content-type", "idempotency-key", "webhook-id", "webhook-timestamp", "webhook-signature", "authorization"}
)


class WebhookSettings(BaseModel):
    """One webhook destination.

    ``signing_secrets``: references (``env:NAME`` / ``file:/path``) to ``whsec_`` secrets, newest
    first; required unless ``signing`` is false. ``token``: a reference too, sent as
    ``Authorization: Bearer <token>``. No secret value is ever written in the routing file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str = Field(pattern=r"^https?://")
    timeout: float = Field(default=10.0, gt=0, le=300)
    signing: bool = True
    signing_secrets: tuple[SecretRef, ...] = Field(default=(), max_length=5)
    token: SecretRef | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool = True
    health_url: str | None = Field(default=None, pattern=r"^https?://")

    @field_validator("signing_secrets")
    @classmethod
    def _whsec(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for secret in value:
            try:
                check_secret(secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"{secret}: {exc}") from None  # str(secret) is its reference
        return value

    @field_validator("headers")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        clash = sorted(k for k in value if k.lower() in _RESERVED_HEADERS)
        if clash:
            raise ValueError(f"headers set by the connector itself cannot be configured: {clash}")
        return value

    @model_validator(mode="after")
    def _signing_needs_secrets(self) -> WebhookSettings:
        if self.signing and not self.signing_secrets:
            raise ValueError(
                "signing_secrets is required (references env:NAME or file:/path to whsec_ secrets, "
                "newest first); set signing: false to send unsigned webhooks"
            )
        if not self.signing and self.signing_secrets:
            raise ValueError("signing is false but signing_secrets are given: remove one of them")
        return self


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, frozenset | set | tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _rendition(r: Rendition) -> dict[str, Any]:
    return {
        "kind": r.kind,
        "media_type": r.media_type,
        "document_id": r.document_id,
        "set_id": r.set_id,
        "version": r.version,
        "replaces": r.replaces,
        "sha256": hashlib.sha256(r.content).hexdigest(),
        "size": len(r.content),
        "metadata": _jsonable(dataclasses.asdict(r.metadata)) if r.metadata is not None else None,
        "content_base64": base64.b64encode(r.content).decode("ascii"),
    }


def envelope_json(envelope: Envelope) -> bytes:
    """The request body for ``envelope`` (stable for a given envelope)."""
    body = {
        "delivery_id": envelope.delivery_id,
        "submission_id": envelope.submission_id,
        "idempotency_key": envelope.idempotency_key,
        "tenant": envelope.tenant,
        "destination": envelope.destination,
        "document_type": envelope.document_type,
        "facts": {
            "person_ref": envelope.facts.person_ref,
            "essms_finess": envelope.facts.essms_finess,
            "ins_qualified": envelope.facts.ins_qualified,
        },
        "renditions": [_rendition(r) for r in envelope.renditions],
    }
    return json.dumps(body, separators=(",", ":")).encode()


class WebhookConnector:
    name: ClassVar[str] = "webhook"
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[BaseModel]] = WebhookSettings

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self._local = threading.local()  # one requests.Session per worker thread
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    @property
    def send_timeout(self) -> float:
        return self.settings.timeout

    @property
    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.verify = self.settings.verify_tls
            session.headers.update(self.settings.headers)
            if self.settings.token is not None:
                session.headers["Authorization"] = f"Bearer {self.settings.token.get_secret_value()}"
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def send(self, envelope: Envelope) -> Receipt:
        body = envelope_json(envelope)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": envelope.idempotency_key,
            "X-Dui-Delivery-Id": envelope.delivery_id,
            "X-Dui-Document-Type": envelope.document_type,
        }
        if self.settings.signing:
            headers.update(sign_headers(self.settings.signing_secrets, msg_id=envelope.idempotency_key, body=body))
        with map_errors("webhook"):
            resp = self._session.post(
                self.settings.url,
                data=body,
                headers=headers,
                timeout=envelope.timeout(self.settings.timeout),
                allow_redirects=False,
                stream=True,  # the answer is read below, bounded in size and time
            )
            try:
                status = resp.status_code
                if not 200 <= status < 300:
                    raise http_status_error("webhook", status)  # the answer's body is not echoed
                data = _small_json(_read_answer(resp, envelope))
            finally:
                resp.close()
        remote_id = _remote_id(data, resp)
        if status == 202 and data.get("receipt") == "later":
            return Receipt(
                status="sent",
                ack_ref=envelope.idempotency_key,
                remote_id=remote_id,
                detail={"status": status, "receipt": "later"},
            )
        return Receipt(remote_id=remote_id, detail={"status": status})

    def health(self) -> Health:
        """``health_url`` must answer 2xx; without one, any non-5xx answer to HEAD ``url`` is healthy."""
        target = self.settings.health_url or self.settings.url
        try:
            if self.settings.health_url:
                resp = self._session.get(target, timeout=min(self.settings.timeout, 5.0))
                ok = 200 <= resp.status_code < 300
            else:
                resp = self._session.head(target, timeout=min(self.settings.timeout, 5.0))
                ok = resp.status_code < 500
        except requests.RequestException as exc:
            return Health(ok=False, detail=f"unreachable: {type(exc).__name__}")
        return Health(ok=ok, detail=f"HTTP {resp.status_code}")


_MAX_ANSWER_BYTES = 64 * 1024


def _read_answer(resp: requests.Response, envelope: Envelope) -> bytes | None:
    """The answer's body, or None when it is larger than 64 KiB (not read further).

    A 2xx whose body cannot be read before the envelope's deadline is a TransientError: whether
    the peer said "delivered" or "receipt later" is unknown, and a resend is recognised.
    """
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(chunk_size=8192):
        size += len(chunk)
        if size > _MAX_ANSWER_BYTES:
            return None
        chunks.append(chunk)
        if envelope.seconds_left() <= 0:
            raise TransientError("webhook answer not read before the delivery's deadline")
    return b"".join(chunks)


def _small_json(content: bytes | None) -> dict[str, Any]:
    """The answer's JSON object when it is a small one, else ``{}`` (never raises)."""
    if not content:
        return {}
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _remote_id(data: dict[str, Any], resp: requests.Response) -> str | None:
    for key in ("receipt_id", "id"):
        value = data.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and len(str(value)) <= 256:
            return str(value)
    location = resp.headers.get("Location")
    return location[:512] if location else None
