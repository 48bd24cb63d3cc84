"""The connector seam: one protocol, typed errors, and what crosses it.

Error tree::

    ConnectorError
     ├── TransientError   the peer may accept later (down, timeout, 5xx, 429): the engine retries
     └── PermanentError   the peer refused this content (4xx, schema rejection): dead-letter

Connectors never decide retries, never touch the database, and wrap library errors
(requests, smtplib, socket) with ``raise ... from``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

from mappings.base import RecordFacts, Rendition

__all__ = [
    "Connector",
    "ConnectorError",
    "Envelope",
    "Health",
    "PermanentError",
    "Receipt",
    "TransientError",
]


class ConnectorError(Exception):
    """Base of connector failures."""


class TransientError(ConnectorError):
    """Delivery may succeed later; the engine retries with backoff."""


class PermanentError(ConnectorError):
    """Delivery will never succeed as is; the engine dead-letters it."""


@dataclass(frozen=True)
class Envelope:
    """One delivery to hand to a destination.

    ``idempotency_key`` is stable across retries and replays of the same delivery, so that
    a peer can recognise a resend after a crash.
    """

    delivery_id: str
    submission_id: str
    idempotency_key: str
    tenant: str
    destination: str
    document_type: str
    renditions: tuple[Rendition, ...]
    facts: RecordFacts
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Receipt:
    """What the peer answered: its identifier for what it received, and details."""

    remote_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


class Connector(Protocol):
    """A destination.

    Contract:
    - constructed once per destination with its validated ``Settings`` instance;
    - ``send`` delivers every rendition it needs from the envelope or raises
      :class:`TransientError` / :class:`PermanentError`; it must be safe to call twice with
      the same envelope (the peer sees the same stable identifiers);
    - ``health`` makes one cheap call to the real peer and never raises.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    Settings: ClassVar[type[BaseModel]]

    def send(self, envelope: Envelope) -> Receipt: ...

    def health(self) -> Health: ...
