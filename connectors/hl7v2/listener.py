"""The ``mllp`` source: an MLLP listener (TLS optional, client certificates) for HL7 v2 messages.

Each frame is handled in turn on its connection:

1. the MSH is read (:func:`connectors.hl7v2.er7.read_header`): separators, MSH-10, version,
   MSH-18 character set (the whole message must decode in it), message type;
2. the raw message is handed to the sink, which commits it encrypted; **only then** is ``AA``
   written back. ``external_id`` is ``<MSH-3>|<MSH-4>|<MSH-10>``: a resend of the same control id
   by the same sender is stored once and acknowledged ``AA`` again (nothing is processed twice);
3. otherwise ``AR`` with an ERR (HL7 table 0357 code) and a reason that quotes no content: header
   unreadable, unsupported version, type or trigger, invalid character set, message larger than
   ``max_message_bytes``, or storage unavailable (the sender keeps the message and resends).

Bytes outside a frame close the connection (nothing can be acknowledged); a frame left
incomplete at close or idle timeout is dropped (its sender got no ACK and resends). Memory per
connection is bounded by ``max_message_bytes``, connections by ``max_connections`` (the next
ones wait in the kernel backlog). Parsing happens later, in :meth:`MllpSource.interpret`.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import threading
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, ClassVar

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.base import Health, InboundMessage, InboundSink, Interpretation, StoredInbound
from connectors.hl7v2 import er7
from connectors.hl7v2.mllp import Frame, FrameReader, FramingError, frame

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

    @model_validator(mode="after")
    def _tls(self) -> MllpSourceSettings:
        if bool(self.certificate_file) != bool(self.private_key_file):
            raise ValueError("TLS needs both certificate_file and private_key_file")
        if self.client_ca_file and not self.certificate_file:
            raise ValueError("client_ca_file (client certificates) needs TLS (certificate_file, private_key_file)")
        return self


class _GroupCommit:
    """Messages waiting to be stored, committed together by one thread (group commit).

    Each connection has at most one message waiting (it waits for its ACK), so a batch holds at
    most one message per connection; every message's answer is the batch's commit (or failure).
    """

    _MAX_BATCH = 256

    def __init__(self, sink: InboundSink, stop: threading.Event) -> None:
        self._store_many = sink.store_many  # type: ignore[attr-defined]
        self._queue: queue.Queue[tuple[InboundMessage, Future[StoredInbound]]] = queue.Queue()
        self._stop = stop
        self._thread = threading.Thread(target=self._loop, daemon=True, name="mllp-commit")
        self._thread.start()

    def store(self, message: InboundMessage) -> StoredInbound:
        future: Future[StoredInbound] = Future()
        self._queue.put((message, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < self._MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                answers = self._store_many([m for m, _ in batch])
            except Exception as exc:  # nothing of the batch is stored: every message gets AR
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    def join(self) -> None:
        self._thread.join(5)


class MllpSource:
    """An MLLP listener (see the module docstring)."""

    name: ClassVar[str] = "mllp"
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[BaseModel]] = MllpSourceSettings

    def __init__(self, settings: MllpSourceSettings | dict[str, Any]) -> None:
        self.settings = settings if isinstance(settings, MllpSourceSettings) else MllpSourceSettings(**settings)
        self._bound = threading.Event()
        self._address: tuple[str, int] | None = None
        self._slots = threading.BoundedSemaphore(self.settings.max_connections)
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._context = self._tls_context()

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
        server = socket.create_server((self.settings.host, self.settings.port), backlog=128, reuse_port=False)
        server.settimeout(0.2)
        self._address = server.getsockname()[:2]
        self._bound.set()
        _log.info("mllp_listening", port=self._address[1], tls=self._context is not None)
        threads: list[threading.Thread] = []
        if self.settings.group_commit and hasattr(sink, "store_many"):
            committer = _GroupCommit(sink, stop)
            sink = committer
        try:
            while not stop.is_set():
                if not self._slots.acquire(timeout=0.2):
                    continue
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    self._slots.release()
                    continue
                except OSError:
                    self._slots.release()
                    if stop.is_set():
                        break
                    raise
                thread = threading.Thread(target=self._serve, args=(conn, sink, stop), daemon=True, name="mllp-conn")
                thread.start()
                threads = [t for t in threads if t.is_alive()]
                threads.append(thread)
        finally:
            server.close()
            self._bound.clear()
            with self._lock:  # wake connections blocked in recv: they close and end
                for conn in list(self._live):
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
            for thread in threads:
                thread.join(2.0)

    def _serve(self, conn: socket.socket, sink: InboundSink, stop: threading.Event) -> None:
        with self._lock:
            self._live.add(conn)
        raw = conn
        try:
            conn.settimeout(self.settings.idle_timeout_seconds)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._context is not None:
                conn = self._context.wrap_socket(conn, server_side=True)
            reader = FrameReader(self.settings.max_message_bytes)
            while not stop.is_set():
                data = conn.recv(65536)
                if not data:
                    return
                for received in reader.feed(data):
                    conn.sendall(frame(self.handle(received, sink)))
        except FramingError as exc:
            _log.warning("mllp_framing_error", reason=str(exc))
        except (OSError, ssl.SSLError) as exc:  # timeouts, resets, TLS handshake failures
            _log.info("mllp_connection_closed", error_type=type(exc).__name__)
        except Exception as exc:  # a bug must never take the listener down
            _log.error("mllp_connection_crashed", error_type=type(exc).__name__)
        finally:
            with self._lock:
                self._live.discard(raw)
            with contextlib.suppress(OSError):
                conn.close()
            self._slots.release()

    def handle(self, received: Frame, sink: InboundSink) -> bytes:
        """The ACK for one frame; the message is committed through ``sink`` before an AA."""
        now = datetime.now(UTC)
        control = f"ACK{now.strftime('%Y%m%d%H%M%S%f')}"
        header: er7.Header | None = None

        def reject(code: str, reason: str, error: str) -> bytes:
            _log.info("mllp_rejected", ack=code, error_code=error, reason=reason)
            return er7.ack(
                header, code, control_id=control, text=reason, error_code=error, application=self.settings.application
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
        try:
            stored = sink.store(message)
        except Exception as exc:  # not stored: never AA; the sender keeps it and resends
            _log.error("mllp_store_failed", error_type=type(exc).__name__)
            return reject("AR", "message not stored, send it again later", "207")
        text = "duplicate, already received" if stored.duplicate else ""
        return er7.ack(header, "AA", control_id=control, text=text, application=self.settings.application)

    # -- interpreting -----------------------------------------------------------------------
    def interpret(self, message: InboundMessage) -> Interpretation:
        from connectors.hl7v2.adt import interpret

        return interpret(message, self.settings)

    def health(self) -> Health:
        if self._address is None:
            return Health(ok=False, detail="not listening")
        return Health(ok=True, detail=f"listening on port {self._address[1]}")
