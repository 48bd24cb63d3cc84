"""An MLLP peer on loopback (a PFI or hospital system receiving MDM documents) for demos and tests.

It answers each frame with an ACK whose MSA-2 is the message's MSH-10, records what it accepted
(once per MSH-10: a resend is acknowledged again, not stored twice) and can be told how to answer
the next messages: ``AE`` (refuse), ``AR`` (not now), ``slow`` (wait before answering), ``CA``
(accepted, application ACK later: sent over MLLP to ``ack_to``, the gateway's ``mllp`` source).

``dui-gateway sandbox mllp --port N [--ack-to HOST:PORT]`` runs one until interrupted.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from connectors.hl7v2 import er7
from connectors.hl7v2.mllp import FrameReader, FramingError, frame, read_frame

__all__ = ["MllpPeer", "Received"]


@dataclass(frozen=True)
class Received:
    control_id: str
    message_type: str
    content: bytes


@dataclass
class MllpPeer:
    """Start with :meth:`start` (or ``with``); ``port`` 0 picks a free one."""

    port: int = 0
    host: str = "127.0.0.1"
    ack_to: tuple[str, int] | None = None
    default_answer: str = "AA"  # when nothing was planned with answer_next
    received: dict[str, Received] = field(default_factory=dict)
    _plan: deque[tuple[str, float]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _server: socket.socket | None = None
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> MllpPeer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._server = socket.create_server((self.host, self.port))
        self._server.settimeout(0.2)
        thread = threading.Thread(target=self._accept, daemon=True, name="mllp-peer")
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()
        for thread in self._threads:
            thread.join(2)

    def answer_next(self, code: str, *, delay: float = 0.0) -> None:
        """The next message is answered ``code`` (AA, AE, AR, CA) after ``delay`` seconds."""
        with self._lock:
            self._plan.append((code, delay))

    def count(self, control_id: str) -> int:
        with self._lock:
            return 1 if control_id in self.received else 0

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        reader = FrameReader(64 * 1024 * 1024)
        with conn:
            conn.settimeout(30)
            try:
                while not self._stop.is_set():
                    data = conn.recv(65536)
                    if not data:
                        return
                    for received in reader.feed(data):
                        conn.sendall(frame(self._answer(received.content)))
            except (OSError, FramingError):
                return

    def _answer(self, content: bytes) -> bytes:
        try:
            header, _ = er7.read_header(content)
        except er7.HeaderError as exc:
            return er7.ack(exc.header, "AR", control_id="PEER", text=str(exc), error_code=exc.code)
        with self._lock:
            code, delay = self._plan.popleft() if self._plan else (self.default_answer, 0.0)
        if delay:
            time.sleep(delay)
        control = f"PEER{datetime.now(UTC).strftime('%H%M%S%f')}"
        if code in ("AE", "AR"):
            return er7.ack(header, code, control_id=control, text="refused by the sandbox", error_code="207")
        with self._lock:
            self.received.setdefault(header.control_id, Received(header.control_id, header.message_type, content))
        if code == "CA" and self.ack_to is not None:
            threading.Thread(target=self._application_ack, args=(header,), daemon=True).start()
        return er7.ack(header, code, control_id=control)

    def _application_ack(self, header: er7.Header) -> None:
        time.sleep(0.2)
        assert self.ack_to is not None
        ack = er7.ack(header, "AA", control_id=f"APP{header.control_id}"[:20], application="SANDBOX-PFI")
        with contextlib.suppress(OSError, FramingError), socket.create_connection(self.ack_to, timeout=10) as sock:
            sock.sendall(frame(ack))
            read_frame(sock)
