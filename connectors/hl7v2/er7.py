"""Just enough of HL7 v2 ER7 for the listener: read the MSH, check the message decodes, build ACKs.

The listener stores raw and parses later; at receipt it only needs the header (who sent it, its
control id MSH-10, its type, version and character set) to deduplicate and to acknowledge.
:func:`read_header` never raises anything but :class:`HeaderError` (whose ``code`` is the HL7
table 0357 error code the ACK's ERR carries, and whose message quotes no content).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "CHARSETS",
    "Header",
    "HeaderError",
    "ack",
    "decode",
    "escape",
    "read_header",
    "unescape",
]

# MSH-18 values (HL7 table 0211) and the Python codec of each; absent MSH-18 means ASCII (HL7) but
# French senders commonly omit it while sending 8859/1: latin-1 is read then, which never fails.
CHARSETS = {
    "": "latin-1",
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
}
_SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")
_CONTROL_ID = re.compile(r"^[\x21-\x7e]{1,64}$")
_SAFE = re.compile(r"[^A-Za-z0-9_.\-^ ]")


class HeaderError(ValueError):
    """The message cannot be accepted; ``code`` is an HL7 table 0357 code for ERR-3."""

    def __init__(self, message: str, *, code: str = "207", header: Header | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.header = header


@dataclass(frozen=True)
class Header:
    """What the listener reads of the MSH (no personal data)."""

    field_sep: str
    encoding: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str  # e.g. ADT^A01^ADT_A01
    control_id: str
    processing_id: str
    version: str
    charset: str  # MSH-18 as sent
    ack_types: tuple[str, str]  # MSH-15 accept, MSH-16 application

    @property
    def sender(self) -> str:
        return f"{self.sending_application}|{self.sending_facility}"

    @property
    def trigger(self) -> str:
        parts = self.message_type.split(self.encoding[0] if self.encoding else "^")
        return parts[1] if len(parts) > 1 else ""

    @property
    def code(self) -> str:
        return self.message_type.split(self.encoding[0] if self.encoding else "^")[0]


def _fields(segment: str, sep: str) -> list[str]:
    # MSH-1 is the separator itself: index i of this list is MSH-i
    return [segment[:3], sep, *segment[4:].split(sep)]


def read_header(raw: bytes) -> tuple[Header, str]:
    """The MSH of ``raw`` and the whole message decoded with its MSH-18 character set."""
    if not raw.startswith(b"MSH") or len(raw) < 9:
        raise HeaderError("the message does not start with an MSH segment", code="100")
    sep = chr(raw[3])
    end = raw.find(sep.encode(), 4)
    encoding = raw[4:end].decode("latin-1") if end > 0 else ""
    if (
        sep.isalnum()
        or sep in "\r\n "
        or len(encoding) not in (4, 5)
        or len(set(encoding + sep)) != len(encoding) + 1
        or any(c.isalnum() or c in "\r\n " for c in encoding)
    ):
        raise HeaderError("the MSH separator and encoding characters are invalid", code="102")
    first = raw.split(b"\r", 1)[0].split(b"\n", 1)[0]
    fields = _fields(first.decode("latin-1"), sep)

    def field(i: int) -> str:
        return fields[i] if i < len(fields) else ""

    charset = field(18).split(encoding[1])[0].strip().upper()
    codec = CHARSETS.get(charset)
    header = Header(
        field_sep=sep,
        encoding=encoding,
        sending_application=field(3)[:180],
        sending_facility=field(4)[:180],
        receiving_application=field(5)[:180],
        receiving_facility=field(6)[:180],
        message_type=field(9)[:64],
        control_id=field(10).strip(),
        processing_id=field(11)[:8],
        version=field(12).split(encoding[0])[0].strip(),
        charset=charset,
        ack_types=(field(15).strip(), field(16).strip()),
    )
    if not _CONTROL_ID.match(header.control_id):
        raise HeaderError("MSH-10 (message control id) is missing or invalid", code="101", header=header)
    if header.version not in _SUPPORTED_VERSIONS:
        raise HeaderError("MSH-12 version is not supported", code="203", header=header)
    if codec is None:
        raise HeaderError("MSH-18 character set is not supported", code="103", header=header)
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        raise HeaderError("the message is not valid in its MSH-18 character set", code="102", header=header) from None
    if "\x00" in text:
        raise HeaderError("the message holds NUL characters", code="102", header=header)
    return header, text


def decode(raw: bytes) -> str:
    """``raw`` decoded with its MSH-18 character set (no check beyond that)."""
    return read_header(raw)[1]


_ESCAPES = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}


def escape(value: str, *, field_sep: str = "|", encoding: str = "^~\\&") -> str:
    """``value`` with the delimiters escaped (``\\F\\``, ``\\S\\``...) and line breaks as ``\\X0D\\``."""
    comp, rep, esc, sub = encoding[0], encoding[1], encoding[2], encoding[3]
    out = value.replace(esc, f"{esc}E{esc}")
    for char, code in ((field_sep, "F"), (comp, "S"), (sub, "T"), (rep, "R")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return out.replace("\r", f"{esc}X0D{esc}").replace("\n", f"{esc}X0A{esc}")


def unescape(value: str, *, field_sep: str = "|", encoding: str = "^~\\&") -> str:
    """The inverse of :func:`escape` (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\``; other sequences dropped)."""
    esc = encoding[2]
    if esc not in value:
        return value
    table = {"F": field_sep, "S": encoding[0], "T": encoding[3], "R": encoding[1], "E": esc}
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        close = value.find(esc, i + 1) if char == esc else -1
        if close < 0:
            out.append(char)
            i += 1
            continue
        code = value[i + 1 : close]
        if code in table:
            out.append(table[code])
        elif code.startswith("X") and len(code) > 1:
            try:
                out.append(bytes.fromhex(code[1:]).decode("latin-1"))
            except ValueError:
                pass
        i = close + 1
    return "".join(out)


def _ts(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def ack(
    header: Header | None,
    code: str,
    *,
    control_id: str,
    text: str = "",
    error_code: str = "",
    now: datetime | None = None,
    application: str = "DUI-GATEWAY",
    facility: str = "",
) -> bytes:
    """An ACK (``MSA|<code>|<MSH-10>``, plus an ERR when ``error_code`` is given), UTF-8 encoded.

    ``header`` is the received MSH (None when it could not be read: the ACK then refers to
    nothing). ``text`` says why, and must quote no content of the message.
    """
    moment = now or datetime.now(UTC)
    sep, enc = (header.field_sep, header.encoding) if header else ("|", "^~\\&")
    if len(enc) > 4:
        enc = enc[:4]
    comp = enc[0]
    trigger = header.trigger if header else ""
    version = header.version if header and header.version else "2.5"
    safe = _SAFE.sub(" ", text)[:80]
    msh = sep.join(
        [
            "MSH",
            enc,
            application,
            facility,
            header.sending_application if header else "",
            header.sending_facility if header else "",
            _ts(moment),
            "",
            f"ACK{comp}{trigger}{comp}ACK" if trigger else "ACK",
            control_id,
            header.processing_id if header and header.processing_id else "P",
            version,
            "",
            "",
            "",
            "",
            "",
            "UNICODE UTF-8",
        ]
    )
    msa = sep.join(["MSA", code, header.control_id if header else "", escape(safe, field_sep=sep, encoding=enc)])
    segments = [msh, msa]
    if error_code:
        severity = "E"
        segments.append(
            sep.join(
                [
                    "ERR",
                    "",
                    "",
                    f"{error_code}{comp}{comp}HL70357",
                    severity,
                    "",
                    "",
                    "",
                    escape(safe, field_sep=sep, encoding=enc),
                ]
            )
        )
    return ("\r".join(segments) + "\r").encode("utf-8")
