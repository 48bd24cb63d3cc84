"""Webhook connector: POSTs the envelope as JSON to an HTTPS endpoint.

Body (``application/json``)::

    {"delivery_id", "submission_id", "idempotency_key", "tenant", "destination", "document_type",
     "facts": {"person_ref", "essms_finess", "ins_qualified"},
     "renditions": [{"kind", "media_type", "document_id", "set_id", "version", "replaces",
                     "sha256", "size", "metadata", "content_base64"}]}

The ``Idempotency-Key`` header carries ``envelope.idempotency_key`` so a resend after a crash
is recognisable. Outcomes: 2xx → :class:`Receipt` (``remote_id`` from the JSON ``receipt_id``
or ``id``, else the ``Location`` header); connection error, timeout, 408, 425, 429, 5xx →
:class:`TransientError`; any other answer → :class:`PermanentError`.
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
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import Envelope, Health, PermanentError, Receipt, TransientError
from mappings.base import Rendition

__all__ = ["WebhookConnector", "WebhookSettings"]

_TRANSIENT_STATUSES = frozenset({408, 425, 429})


class WebhookSettings(BaseModel):
    """One webhook destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://")
    timeout: float = Field(default=10.0, gt=0, le=300)
    token: SecretStr | None = None  # sent as "Authorization: Bearer <token>"
    headers: dict[str, str] = Field(default_factory=dict)
    verify_tls: bool = True
    health_url: str | None = Field(default=None, pattern=r"^https?://")


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
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": envelope.idempotency_key,
            "X-Dui-Delivery-Id": envelope.delivery_id,
            "X-Dui-Document-Type": envelope.document_type,
        }
        try:
            resp = self._session.post(
                self.settings.url,
                data=envelope_json(envelope),
                headers=headers,
                timeout=envelope.timeout(self.settings.timeout),
                allow_redirects=False,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"webhook unreachable: {type(exc).__name__}") from exc
        except requests.RequestException as exc:
            raise PermanentError(f"webhook request failed: {type(exc).__name__}") from exc
        status = resp.status_code
        if 200 <= status < 300:
            return Receipt(remote_id=self._remote_id(resp), detail={"status": status})
        # the peer's answer body is not echoed: it may quote what we sent
        if status >= 500 or status in _TRANSIENT_STATUSES:
            raise TransientError(f"webhook answered HTTP {status}")
        raise PermanentError(f"webhook refused the delivery: HTTP {status}")

    @staticmethod
    def _remote_id(resp: requests.Response) -> str | None:
        try:
            data = resp.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key in ("receipt_id", "id"):
                if isinstance(data.get(key), str | int):
                    return str(data[key])
        location = resp.headers.get("Location")
        return location or None

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
