"""The ``mllp`` source: an MLLP listener (TLS optional, client certificates) for HL7 v2 messages.

Each frame is handled in its connection's order:

1. the MSH is read (:func:`connectors.hl7v2.er7.read_header`): separators, MSH-10, version,
   MSH-18 character set (the whole message must decode in it), message type;
2. the raw message is handed to the sink, which commits it encrypted; **only then** is ``AA``
   written back. ``external_id`` is ``<MSH-3>|<MSH-4>|<MSH-10>``: a resend of the same control id
   by the same sender is stored once and acknowledged ``AA`` again (nothing is processed twice);
3. otherwise ``AR`` with an ERR (HL7 table 0357 code) and a reason that quotes no content: header
   unreadable, unsupported version, type or trigger, invalid character set, message larger than
   ``max_message_bytes``, or storage unavailable (the sender keeps the message and resends).

One thread runs an asyncio event loop for every connection (TLS included); the frames that
arrive in one turn of the loop, on any connection, are committed in one transaction (group
commit, ``store_many``) and answered after it (:class:`_Intake`).

Bytes outside a frame close the connection (nothing can be acknowledged); a frame left
incomplete at close or idle timeout is dropped (its sender got no ACK and resends). Memory per
connection is bounded by ``max_message_bytes``, connections by ``max_connections`` (the next
ones wait in the kernel backlog). Parsing happens later, in :meth:`MllpSource.interpret`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import Health, InboundMessage, InboundSink, Interpretation, StoredInbound
from connectors.hl7v2 import er7
from connectors.hl7v2.mllp import END, VT, Frame, FrameReader, FramingError

__all__ = ["ADT_TRIGGERS", "MEDIA_TYPE", "MllpSource", "MllpSourceSettings"]

_log = structlog.get_logger(__name__)

MEDIA_TYPE = "application/hl7-v2+er7"
# IHE PAM France 2.11 ADT trigger events this source accepts
ADT_TRIGGERS = frozenset(
    "A01 A02 A03 A04 A05 A06 A07 A08 A11 A12 A13 A21 A22 A28 A31 A38 A40 A47 A52 A53 A54 A55 "
    "Z80 Z81 Z82 Z83 Z84 Z85 Z99".split()
)
# acknowledgements of what the ``mllp`` connector sent (application ACKs, CI-SIS ZAM business ACKs)
ACK_CODES = frozenset({"ACK", "ZAM"})


class MllpSourceSettings(BaseModel):
    """Where to listen and for which ESSMS (events are about its residents)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    essms_finess: str = Field(pattern=r"^[0-9]{9}$")
    host: str = "127.0.0.1"
    port: int = Field(default=2575, ge=0, le=65535)  # 0: the system picks one (tests)
    certificate_file: str | None = None  # TLS when set (PEM chain), with private_key_file
    private_key_file: str | None = None
    client_ca_file: str | None = None  # client certificates required, verified against these CAs
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_connections: int = Field(default=64, ge=1, le=1024)
    idle_timeout_seconds: float = Field(default=300.0, gt=0, le=86400)
    allowed_senders: list[str] | None = None  # "<MSH-3>|<MSH-4>" values; None: any
    # assigning authorities (namespace or OID of PID-3.4) whose PI identifiers are the ESSMS's own
    # person references: a hospital that knows the resident's ESSMS number sends it with these
    local_authorities: list[str] = Field(default_factory=list)
    application: str = Field(default="DUI-GATEWAY", max_length=64)  # MSH-3 of the ACKs
    # messages arriving together on several connections are committed in one transaction (each
    # still acknowledged only after that commit) when the sink can (``store_many``)
    group_commit: bool = True
    # how long a batch may wait for the other busy connections' next message (0: commit at once)
    group_commit_window_ms: float = Field(default=2.0, ge=0, le=1000)
    # SO_REUSEPORT: several ``dui-gateway sources`` processes listen on the same port and the
    # kernel spreads the connections between them (Linux); each process commits its own batches
    reuse_port: bool = False

    @model_validator(mode="after")
    def _tls(self) -> MllpSourceSettings:
        if bool(self.certificate_file) != bool(self.private_key_file):
            raise ValueError("TLS needs both certificate_file and private_key_file")
        if self.client_ca_file and not self.certificate_file:
            raise ValueError("client_ca_file (client certificates) needs TLS (certificate_file, private_key_file)")
        return self


_MAX_BATCH = 256  # messages per transaction
_BUSY_SECONDS = 1.0  # a connection that sent within this time is expected to send again soon


class _Connection(asyncio.Protocol):
    """One MLLP connection: frames are cut as bytes arrive and handed, in order, to the intake."""

    def __init__(self, intake: _Intake) -> None:
        self._intake = intake
        self.reader = FrameReader(intake.source.settings.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.last_active = intake.loop.time()
        self.released = False  # its connection slot was given back

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._intake.live.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = self._intake.loop.time()
        try:
            frames = self.reader.feed(data)
        except FramingError as exc:  # nothing can be acknowledged on this stream: close it
            _log.warning("mllp_framing_error", reason=str(exc))
            self.close()
            return
        for received in frames:
            self._intake.submit(self, received)

    def eof_received(self) -> bool:
        return False  # close; a frame left incomplete is dropped (its sender got no ACK and resends)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:  # resets, TLS errors
            _log.info("mllp_connection_closed", error_type=type(exc).__name__)
        self._intake.closed(self)

    # a peer that does not read its ACKs is not read either (bounded memory)
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def answer(self, ack: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(VT + ack + END)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Intake:
    """Every connection of one listener, served by one event-loop thread (no thread per
    connection, no hand-off between threads on the hot path).

    Group commit: the frames that arrived during one turn of the loop (on any connection) are
    checked, stored in **one** transaction (``store_many``), and only after that commit are their
    answers written, in each connection's order. While a transaction runs the loop reads nothing:
    what arrives meanwhile waits in the kernel and forms the next batch.
    """

    def __init__(self, source: MllpSource, sink: InboundSink, loop: asyncio.AbstractEventLoop, server: socket.socket):
        self.source = source
        self.loop = loop
        self.live: set[_Connection] = set()
        self._sink = sink
        store_many = getattr(sink, "store_many", None) if source.settings.group_commit else None
        self._store_many: Callable[[Sequence[InboundMessage]], Sequence[StoredInbound | Exception]] | None = store_many
        self._server = server
        self._pending: list[tuple[_Connection, Frame]] = []
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None  # a batch waiting for its window to end
        self._first_at = 0.0  # loop time of the batch's first frame
        self._waiting: set[_Connection] = set()  # connections in the batch
        self._expected = 0  # busy connections when the window was opened
        self._count = 0  # accepted sockets not closed yet (handshaking or live)
        self._accepting = False
        self._closing = False
        self._starting: set[asyncio.Task[None]] = set()

    # -- connections ------------------------------------------------------------------------
    def start_accepting(self) -> None:
        if not self._accepting and not self._closing:
            self.loop.add_reader(self._server.fileno(), self._accept)
            self._accepting = True

    def _stop_accepting(self) -> None:
        if self._accepting:
            self.loop.remove_reader(self._server.fileno())
            self._accepting = False

    def _accept(self) -> None:
        limit = self.source.settings.max_connections
        while self._count < limit:
            try:
                sock, _ = self._server.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors...: wait a little, do not spin
                _log.error("mllp_accept_failed", error_type=type(exc).__name__)
                self._stop_accepting()
                self.loop.call_later(0.5, self.start_accepting)
                return
            self._count += 1
            task = self.loop.create_task(self._start(sock))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)
        self._stop_accepting()  # at the limit: the next ones wait in the kernel backlog

    async def _start(self, sock: socket.socket) -> None:
        protocol = _Connection(self)
        context = self.source.tls_context
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self.loop.connect_accepted_socket(
                lambda: protocol,
                sock,
                ssl=context,
                ssl_handshake_timeout=min(self.source.settings.idle_timeout_seconds, 60.0) if context else None,
            )
        except Exception as exc:  # TLS handshake refused (no or unknown client certificate), reset...
            _log.info("mllp_connection_closed", error_type=type(exc).__name__)
            sock.close()
            self.closed(protocol)
        except asyncio.CancelledError:
            sock.close()
            self.closed(protocol)
            raise

    def closed(self, connection: _Connection) -> None:
        if connection.released:
            return
        connection.released = True
        self.live.discard(connection)
        self._count -= 1
        if self._count < self.source.settings.max_connections:
            self.start_accepting()

    def drop_idle(self) -> None:
        """Close connections silent for ``idle_timeout_seconds`` (a frame left incomplete is dropped)."""
        deadline = self.loop.time() - self.source.settings.idle_timeout_seconds
        for connection in [c for c in self.live if c.last_active < deadline]:
            _log.info("mllp_connection_closed", error_type="IdleTimeout")
            connection.close()

    async def shutdown(self) -> None:
        self._closing = True
        self._stop_accepting()
        for task in list(self._starting):
            task.cancel()
        for connection in list(self.live):
            connection.close()
        await asyncio.gather(*self._starting, return_exceptions=True)
        await asyncio.sleep(0.05)  # the closed transports send their FIN

    # -- frames -----------------------------------------------------------------------------
    def submit(self, connection: _Connection, received: Frame) -> None:
        if not self._pending:
            self._first_at = self.loop.time()
        self._pending.append((connection, received))
        self._waiting.add(connection)
        if self._timer is not None and len(self._waiting) >= self._expected:
            self._timer.cancel()  # every busy connection is in: commit now
            self._timer = None
        if not self._scheduled and self._timer is None:  # after every connection ready in this turn
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        self._timer = None
        window = self.source.settings.group_commit_window_ms / 1000
        if window and self._pending:
            # like PostgreSQL's commit_delay/commit_siblings: wait a little for the connections
            # that sent something in the last second and are not in the batch yet (each sends its
            # next message as soon as it has its ACK), so one commit serves all of them
            now = self.loop.time()
            self._expected = sum(1 for c in self.live if c.last_active >= now - _BUSY_SECONDS)
            remaining = self._first_at + window - now
            if len(self._waiting) < self._expected and remaining > 0:
                self._timer = self.loop.call_later(remaining, self._flush)
                return
        self._waiting.clear()
        while self._pending:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            try:
                self._answer(batch)
            except Exception as exc:  # a bug must never take the listener down; no answer: they resend
                _log.error("mllp_batch_crashed", error_type=type(exc).__name__)
                for connection, _ in batch:
                    connection.close()

    def _answer(self, batch: list[tuple[_Connection, Frame]]) -> None:
        now = datetime.now(UTC)
        checked = [(connection, self.source.check(received, now)) for connection, received in batch]
        messages = [c[1] for _, c in checked if isinstance(c, tuple)]
        results = iter(self._store(messages))
        stamp = now.strftime("%Y%m%d%H%M%S")
        for connection, outcome in checked:
            if isinstance(outcome, bytes):  # refused before storage
                connection.answer(outcome)
            else:
                connection.answer(self.source.acknowledge(outcome[0], next(results), stamp=stamp, now=now))

    def _store(self, messages: list[InboundMessage]) -> list[StoredInbound | Exception]:
        """One answer per message: stored (committed, or a duplicate), or why not."""
        if not messages:
            return []
        if self._store_many is not None:
            try:
                return list(self._store_many(messages))
            except Exception as exc:  # nothing of the batch is stored: every message gets AR
                _log.error("mllp_store_failed", error_type=type(exc).__name__, count=len(messages))
                return [exc] * len(messages)
        answers: list[StoredInbound | Exception] = []
        for message in messages:
            try:
                answers.append(self._sink.store(message))
            except Exception as exc:
                _log.error("mllp_store_failed", error_type=type(exc).__name__, count=1)
                answers.append(exc)
        return answers


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    _log.error("mllp_loop_error", error_type=type(exc).__name__ if exc else None)


class MllpSource:
    """An MLLP listener (see the module docstring)."""

    name: ClassVar[str] = "mllp"
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[BaseModel]] = MllpSourceSettings

    def __init__(self, settings: MllpSourceSettings | dict[str, Any]) -> None:
        self.settings = settings if isinstance(settings, MllpSourceSettings) else MllpSourceSettings(**settings)
        self._bound = threading.Event()
        self._address: tuple[str, int] | None = None
        self._acks = 0  # ACKs written (their MSH-10 counter)
        self.tls_context = self._tls_context()

    # -- listening --------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port), once :meth:`run` listens (waits up to 10 s)."""
        if not self._bound.wait(10) or self._address is None:
            raise RuntimeError("the MLLP listener is not listening")
        return self._address

    def _tls_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if not s.certificate_file:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(s.certificate_file, s.private_key_file)
        if s.client_ca_file:
            context.load_verify_locations(s.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def run(self, sink: InboundSink, stop: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._listen(sink, stop))
        finally:
            loop.close()

    async def _listen(self, sink: InboundSink, stop: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_loop_error)
        s = self.settings
        server = socket.create_server((s.host, s.port), backlog=128, reuse_port=s.reuse_port)
        server.setblocking(False)
        intake = _Intake(self, sink, loop, server)
        self._address = server.getsockname()[:2]
        self._bound.set()
        _log.info("mllp_listening", port=self._address[1], tls=self.tls_context is not None)
        try:
            intake.start_accepting()
            while not stop.is_set():
                await asyncio.sleep(0.1)
                intake.drop_idle()
        finally:
            await intake.shutdown()
            server.close()
            self._bound.clear()

    def check(self, received: Frame, now: datetime) -> tuple[er7.Header, InboundMessage] | bytes:
        """What to store for one frame (its MSH and the message), or the AR refusing it."""
        header: er7.Header | None = None

        def reject(code: str, reason: str, error: str) -> bytes:
            _log.info("mllp_rejected", ack=code, error_code=error, reason=reason)
            return er7.ack(
                header,
                code,
                control_id=self._control_id(now.strftime("%Y%m%d%H%M%S")),
                text=reason,
                error_code=error,
                now=now,
                application=self.settings.application,
            )

        try:
            header, _text = er7.read_header(received.content)
        except er7.HeaderError as exc:
            header = exc.header
            if received.oversized and header is not None:
                return reject("AR", "message larger than allowed", "207")
            return reject("AR", str(exc), exc.code)
        if received.oversized:
            return reject("AR", "message larger than allowed", "207")
        allowed = self.settings.allowed_senders
        if allowed is not None and header.sender not in allowed:
            return reject("AR", "sender not allowed", "207")
        if header.code == "ADT":
            if header.trigger not in ADT_TRIGGERS:
                return reject("AR", "trigger event not supported", "201")
        elif header.code not in ACK_CODES:
            return reject("AR", "message type not supported", "200")
        message = InboundMessage(
            external_id=f"{header.sender}|{header.control_id}",
            content=received.content,
            media_type=MEDIA_TYPE,
            headers={
                "message_type": header.message_type,
                "control_id": header.control_id,
                "sender": header.sender,
                "version": header.version,
            },
            received_at=now,
        )
        return header, message

    def acknowledge(self, header: er7.Header, stored: StoredInbound | Exception, *, stamp: str, now: datetime) -> bytes:
        """The ACK of a message handed to the sink: AA when committed (or already), AR otherwise."""
        application = self.settings.application
        control_id = self._control_id(stamp)
        if isinstance(stored, Exception):  # not stored: never AA; the sender keeps it and resends
            _log.info("mllp_rejected", ack="AR", error_code="207", reason="not stored")
            return er7.ack(
                header,
                "AR",
                control_id=control_id,
                text="message not stored, send it again later",
                error_code="207",
                now=now,
                application=application,
            )
        text = "duplicate, already received" if stored.duplicate else ""
        return er7.ack(header, "AA", control_id=control_id, text=text, now=now, application=application)

    def _control_id(self, stamp: str) -> str:
        """MSH-10 of an ACK: ``ACK`` + the time to the second + a counter (unique per listener)."""
        self._acks = (self._acks + 1) % 1_000_000
        return f"ACK{stamp}{self._acks:06d}"

    # -- interpreting -----------------------------------------------------------------------
    def interpret(self, message: InboundMessage) -> Interpretation:
        from connectors.hl7v2.adt import interpret

        return interpret(message, self.settings)

    def health(self) -> Health:
        if self._address is None:
            return Health(ok=False, detail="not listening")
        return Health(ok=True, detail=f"listening on port {self._address[1]}")
