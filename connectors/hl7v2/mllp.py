"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol): ``<VT> message <FS><CR>``.

:class:`FrameReader` cuts a byte stream into frames with bounded memory: a frame longer than
``max_bytes`` is not kept whole; only its first :data:`HEAD_BYTES` are (enough to read the MSH
and answer AR), the rest is skipped up to its end. Bytes outside a frame other than whitespace
are a framing error: the caller closes the connection (there is nothing to acknowledge).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

__all__ = ["CR", "FS", "HEAD_BYTES", "VT", "Frame", "FrameReader", "FramingError", "frame", "read_frame"]

VT = b"\x0b"
FS = b"\x1c"
CR = b"\x0d"
END = FS + CR
HEAD_BYTES = 4096


class FramingError(ValueError):
    """The stream is not MLLP (bytes outside a frame, a frame start inside a frame)."""


@dataclass(frozen=True)
class Frame:
    """One received frame: ``content`` whole, or only its head when ``oversized``."""

    content: bytes
    oversized: bool = False
    size: int = 0


def frame(payload: bytes) -> bytes:
    """``payload`` wrapped in an MLLP frame."""
    return VT + payload + END


class FrameReader:
    """Feed bytes, take complete frames; memory stays below ``max_bytes`` + one read."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._buf = bytearray()
        self._inside = False
        self._skipping = False  # inside an oversized frame: its head is kept, the rest dropped
        self._head = b""
        self._size = 0

    @property
    def pending(self) -> bool:
        """True when a frame has started and is not complete (a close now truncates it)."""
        return self._inside

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        view = memoryview(data)
        while len(view):
            if not self._inside:
                start = bytes(view).find(VT)
                garbage = bytes(view) if start < 0 else bytes(view[:start])
                if garbage.strip(b" \t\r\n"):
                    raise FramingError("bytes outside an MLLP frame")
                if start < 0:
                    return frames
                view = view[start + 1 :]
                self._inside = True
                self._skipping = False
                self._buf.clear()
                self._size = 0
                continue
            chunk = bytes(view)
            end = chunk.find(FS)
            body = chunk if end < 0 else chunk[:end]
            if VT in body:
                raise FramingError("a frame started inside another frame")
            self._size += len(body)
            if self._skipping:
                pass
            elif len(self._buf) + len(body) > self._max:
                self._head = bytes((self._buf + body)[:HEAD_BYTES])
                self._buf.clear()
                self._skipping = True
            else:
                self._buf += body
            if end < 0:
                return frames
            if self._skipping:
                frames.append(Frame(content=self._head, oversized=True, size=self._size))
            else:
                frames.append(Frame(content=bytes(self._buf), size=self._size))
            self._buf.clear()
            self._inside = False
            view = view[end + 1 :]  # a CR after FS is whitespace outside a frame
        return frames


def read_frame(sock: socket.socket, *, max_bytes: int = 16 * 1024 * 1024) -> bytes:
    """Read one whole frame from ``sock`` (a client waiting for its ACK); raises on close or timeout."""
    reader = FrameReader(max_bytes)
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the peer closed the connection before a complete frame")
        frames = reader.feed(data)
        if frames:
            if frames[0].oversized:
                raise FramingError("the answer is larger than allowed")
            return frames[0].content
