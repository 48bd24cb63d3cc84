"""The connector seams: one protocol per direction, typed errors, and what crosses them.

Outbound (``dui_gateway.connectors`` entry points)::

    engine --Envelope--> Connector.send() --Receipt(status="delivered")--> delivered
                                          --Receipt(status="sent", ack_ref=...)--> sent
    later: an Acknowledgement for ack_ref (DSN/MDN, HL7 ACK, webhook receipt) --> delivered | failed

Inbound (``dui_gateway.sources`` entry points): a :class:`Source` (listener or poller) hands
each message to an :class:`InboundSink`, which stores it durably and only then returns; the
source acknowledges its peer after that (HL7 AA after commit, IMAP flag after commit). Workers
later call :meth:`Source.interpret` on the stored message: acknowledgements move deliveries,
events are routed like submissions.

Error tree::

    ConnectorError
     ├── TransientError   the peer may accept later (down, timeout, 5xx, 429): the engine retries
     └── PermanentError   the peer refused this content (4xx, schema rejection): dead-letter

Connectors never decide retries, never touch the database, and wrap library errors
(requests, smtplib, socket) with ``raise ... from``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from mappings.base import RecordFacts, Rendition

__all__ = [
    "Acknowledgement",
    "Connector",
    "ConnectorError",
    "Credentials",
    "Envelope",
    "Health",
    "HeldVersion",
    "HttpSource",
    "InboundEvent",
    "InboundMessage",
    "InboundRejected",
    "InboundSink",
    "Interpretation",
    "PermanentError",
    "Receipt",
    "Source",
    "StoredInbound",
    "TransientError",
]


class ConnectorError(Exception):
    """Base of connector failures."""


class TransientError(ConnectorError):
    """Delivery may succeed later; the engine retries with backoff."""


class PermanentError(ConnectorError):
    """Delivery will never succeed as is; the engine dead-letters it."""


class InboundRejected(ConnectorError):
    """An inbound HTTP message is refused (bad signature, stale timestamp, malformed): ``status``
    is the HTTP status the gateway answers (401, 400, 413, 415...). The message says why, without
    quoting the content."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HeldVersion:
    """A version of a document series that *this destination* acknowledged (status delivered).

    Connectors that express replacement (XDS.b RPLC, MHD ``relatesTo``, MSSanté) point at this,
    never at a version the destination did not receive. ``remote_id`` is the destination's own
    identifier of that document when it returned one (XDS entryUUID, resource id...).
    """

    kind: str
    set_id: str
    version: int
    document_id: str
    remote_id: str | None = None


@dataclass(frozen=True, repr=False)
class Credentials:
    """What a connector presents *as the ESSMS* (not as the destination).

    Handed out by the gateway's credentials provider, keyed by tenant, FINESS and purpose
    (``dmp``, ``mssante``, ``sdo``, ``webhook``...). Secret values are already decrypted; never
    log them (``repr`` shows only the owner and which fields are set).

    - ``certificate_pem``/``private_key_pem``: the organisation certificate chain and its key
      (mutual TLS, and by default also the signing key of VIHF/XAdES);
    - ``signing_certificate_pem``/``signing_key_pem``: a distinct signing key when there is one;
    - ``username``/``password``: mailbox or OAuth client credentials;
    - ``secrets``: other named secrets (e.g. webhook signing secrets, newest first);
    - ``attributes``: non-secret attributes (VIHF subject, mailbox address, OAuth client id...).
    """

    tenant: str
    essms_finess: str
    purpose: str
    certificate_pem: bytes | None = None
    private_key_pem: bytes | None = None
    signing_certificate_pem: bytes | None = None
    signing_key_pem: bytes | None = None
    username: str | None = None
    password: str | None = None
    secrets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        present = [
            name
            for name in ("certificate_pem", "private_key_pem", "signing_key_pem", "username", "password")
            if getattr(self, name)
        ]
        return (
            f"Credentials({self.tenant}/{self.essms_finess}/{self.purpose}, set={present}, "
            f"secrets={sorted(self.secrets)})"
        )


def _far_future() -> datetime:
    return datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Envelope:
    """One delivery to hand to a destination.

    ``idempotency_key`` is stable across retries and replays of the same delivery, so that
    a peer can recognise a resend after a crash. ``held`` maps a series' ``set_id`` to the last
    version of it this destination acknowledged. ``deadline`` (UTC) is when ``send`` must have
    returned: the engine's lease is kept alive until then, not after. ``credentials`` are the
    ESSMS's, for connectors that declare a ``credentials_purpose``.
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
    held: Mapping[str, HeldVersion] = field(default_factory=dict)
    deadline: datetime = field(default_factory=_far_future)
    credentials: Credentials | None = None
    attempt: int = 1

    def seconds_left(self, *, now: datetime | None = None) -> float:
        """Time left before the deadline (never negative)."""
        moment = now or datetime.now(UTC)
        return max(0.0, (self.deadline - moment).total_seconds())

    def timeout(self, configured: float) -> float:
        """The connector's configured timeout, cut to what is left before the deadline."""
        return max(0.001, min(configured, self.seconds_left()))


@dataclass(frozen=True)
class Receipt:
    """What the peer answered.

    ``status="delivered"``: the destination itself holds the document. ``status="sent"``: a
    relay accepted it (SMTP 250, HL7 commit ACK, XDS asynchronous answer); an
    :class:`Acknowledgement` carrying ``ack_ref`` will later say delivered or failed.
    ``remote_id`` is the peer's identifier, ``detail`` what operators may see (no personal data).
    """

    remote_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    status: Literal["delivered", "sent"] = "delivered"
    ack_ref: str | None = None

    def __post_init__(self) -> None:
        if self.status == "sent" and not self.ack_ref:
            raise ValueError("a 'sent' receipt needs the ack_ref its acknowledgement will carry")


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


@runtime_checkable
class Connector(Protocol):
    """A destination.

    Contract:
    - constructed once per destination with its validated ``Settings`` instance, and shared by
      every worker thread of the process: keep per-thread state (HTTP sessions) thread-local;
    - ``send`` delivers every rendition it needs from the envelope or raises
      :class:`TransientError` / :class:`PermanentError`; it must be safe to call twice with
      the same envelope (the peer sees the same stable identifiers), and must return before
      ``envelope.deadline`` (use ``envelope.timeout(configured)`` for network calls);
    - ``send_timeout`` is the longest a send may take with its settings (the engine refuses at
      start-up a connector whose ``send_timeout`` exceeds ``Settings.max_send_seconds``);
    - ``credentials_purpose`` (optional ClassVar): when set, the engine resolves the ESSMS's
      credentials for that purpose into ``envelope.credentials`` (missing → the delivery waits);
    - ``health`` makes one cheap call to the real peer and never raises.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    Settings: ClassVar[type[BaseModel]]

    @property
    def send_timeout(self) -> float: ...

    def send(self, envelope: Envelope) -> Receipt: ...

    def health(self) -> Health: ...


# -- inbound ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Acknowledgement:
    """A later answer about something sent: DSN/MDN, HL7 application ACK, webhook receipt...

    ``ack_ref`` is the :attr:`Receipt.ack_ref` of the delivery it is about. ``outcome``:
    ``delivered`` and ``failed`` end the delivery; ``info`` is stored and shown only (e.g. an MDN
    "displayed" after the DSN "delivered"). ``detail`` must hold no personal data.
    """

    ack_ref: str
    outcome: Literal["delivered", "failed", "info"]
    kind: str
    remote_id: str | None = None
    reason: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InboundEvent:
    """Something the DUI vendor must hear about (a DAC's message, an ADT movement, an SDO decision).

    It is routed like a submission of document type ``event_type`` (routing rules name it), with
    ``payload`` (JSON-able) as its content. ``person_ref``: the DUI's person reference when the
    source could match one, else None (kept for an operator). ``series`` orders versions of the
    same thing (a decision updated, a movement cancelled).
    """

    event_type: str
    payload: Mapping[str, Any]
    essms_finess: str
    person_ref: str | None = None
    series: str | None = None
    # When ``person_ref`` is None: the person's identifiers as the peer knows them, as
    # ``<system>|<value>`` (system: an OID ``urn:oid:...`` or an assigning authority's name), for
    # the gateway to match against the identifiers it knows (INS first). ``former_identifiers``:
    # identifiers the peer merged into these (an HL7 A40): they now designate the same person.
    identifiers: tuple[str, ...] = ()
    former_identifiers: tuple[str, ...] = ()
    # Sharing choices the peer collected (consent family value -> refused), applied to the
    # matched person's stored choices (audited) and so to routing from then on.
    sharing_refusals: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Interpretation:
    """What a stored inbound message means: acknowledgements, events, or nothing of use."""

    acknowledgements: tuple[Acknowledgement, ...] = ()
    events: tuple[InboundEvent, ...] = ()
    note: str = ""  # why it was ignored, when it was (no personal data)


@dataclass(frozen=True)
class InboundMessage:
    """One message received by a source, as it arrived.

    ``external_id`` deduplicates (MSH-10 + sender, Message-ID, notification id...): storing the
    same (source, external_id) twice keeps the first. ``content`` is stored encrypted;
    ``headers`` must hold no personal data (they are stored in clear).
    """

    external_id: str
    content: bytes
    media_type: str
    headers: Mapping[str, str] = field(default_factory=dict)
    received_at: datetime | None = None


@dataclass(frozen=True)
class StoredInbound:
    """The sink's answer: the message is committed (``duplicate``: it was already)."""

    id: str
    duplicate: bool


class InboundSink(Protocol):
    """Durable storage for a source's messages (implemented by the gateway)."""

    def store(self, message: InboundMessage) -> StoredInbound:
        """Commit ``message`` (encrypted) and return; raises if it could not be stored."""
        ...


@runtime_checkable
class Source(Protocol):
    """An inbound flow: a listener (MLLP, HTTP callback) or a poller (IMAP, SI-SdO).

    Contract:
    - constructed once with its validated ``Settings``;
    - ``run(sink, stop)`` loops until ``stop`` is set; it acknowledges its peer only after
      ``sink.store`` returned (never before), and it never raises for one bad message;
    - ``interpret(message)`` is pure (no I/O): it says what a stored message means;
    - ``credentials_purpose`` (optional ClassVar) with a ``credentials`` attribute: before ``run``
      the gateway sets ``credentials`` to the ESSMS's credentials for that purpose (the ESSMS is
      the settings' ``essms_finess`` when there is one, else any of the source's tenant);
    - ``health`` never raises.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    Settings: ClassVar[type[BaseModel]]

    def run(self, sink: InboundSink, stop: threading.Event) -> None: ...

    def interpret(self, message: InboundMessage) -> Interpretation: ...

    def health(self) -> Health: ...


@runtime_checkable
class HttpSource(Source, Protocol):
    """A source whose peer pushes messages to the gateway: ``POST /inbound/{source name}``.

    ``accept`` checks the request (signature, timestamp, size, media type) and turns it into an
    :class:`InboundMessage`, or raises :class:`InboundRejected`. The gateway stores the message
    through its sink and only then answers 202. ``run`` of such a source just waits for ``stop``.
    """

    def accept(self, headers: Mapping[str, str], body: bytes) -> InboundMessage: ...
