"""The ESSMS's MSSanté mailbox, polled over IMAP (TLS): receipts and incoming messages.

``run(sink, stop)`` polls ``mailbox`` every ``poll_seconds``: each message not yet stored is
fetched whole (``BODY.PEEK[]``, so it stays unseen until stored), handed to ``sink.store`` as an
:class:`InboundMessage` (``external_id`` = its Message-ID, ``content`` = the raw RFC 5322 bytes),
and only once ``store`` returned is it flagged ``\\Seen $DuiStored`` and, with
``processed_mailbox``, moved there. A crash between the two stores it again on the next poll:
the sink keeps the first copy (same external_id). A message the sink cannot store stays in the
box, untouched, for the next poll; one bad message never stops the loop.

``interpret`` is pure (:func:`connectors.mssante.receipts.interpret_mail`): DSN/MDN become
acknowledgements, other mail becomes an ``mssante.message`` event for the DUI vendor.

Authentication: TLS with the ESSMS's client certificate (files, or :class:`Credentials` passed
at construction) and a LOGIN with ``username``/``password`` when set, else SASL EXTERNAL (the
certificate alone, when the operator supports it).
"""

from __future__ import annotations

import hashlib
import imaplib
import re
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from typing import ClassVar, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from connectors._secrets import SecretRef
from connectors.base import (
    Credentials,
    Health,
    InboundMessage,
    InboundSink,
    Interpretation,
    PermanentError,
    TransientError,
)
from connectors.mssante._errors import map_mail_errors
from connectors.mssante.message import normalise_message_id
from connectors.mssante.receipts import Limits, classify, interpret_mail
from connectors.mssante.tls import client_context

__all__ = ["ImapReceiptSource", "ImapSettings"]

_log = structlog.get_logger(__name__)

STORED_KEYWORD = "$DuiStored"
MEDIA_TYPE = "message/rfc822"
_UID = re.compile(rb"UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


@contextmanager
def _map_imap_errors() -> Iterator[None]:
    try:
        yield
    except imaplib.IMAP4.abort as exc:
        raise TransientError("IMAP connection aborted") from exc
    except imaplib.IMAP4.error as exc:
        # LOGIN/AUTHENTICATE refused, or a command refused: the server's text may quote us
        raise TransientError(f"IMAP server refused a command ({type(exc).__name__})") from exc


class ImapSettings(BaseModel):
    """One ESSMS mailbox at its MSSanté operator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    port: int = Field(default=993, gt=0, lt=65536)
    tls: Literal["implicit", "starttls"] = "implicit"
    ca_bundle: str | None = None
    verify_tls: bool = True
    timeout: float = Field(default=30.0, gt=0, le=300)
    essms_finess: str = Field(pattern=r"^[0-9AB]{9}$")
    username: str | None = None
    password: SecretRef | None = None  # env:NAME or file:/path, never the value in the routing file
    client_certificate_file: str | None = None
    client_key_file: str | None = None
    mailbox: str = "INBOX"
    processed_mailbox: str | None = None  # move stored messages there (created when missing)
    poll_seconds: float = Field(default=60.0, gt=0)
    batch: int = Field(default=50, gt=0, le=1000)
    max_message_bytes: int = Field(default=Limits.max_message, gt=0)


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapReceiptSource:
    name: ClassVar[str] = "mssante-imap"
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[BaseModel]] = ImapSettings
    credentials_purpose: ClassVar[str] = "mssante"  # the ESSMS's certificate/login, set by the gateway

    def __init__(self, settings: ImapSettings, *, credentials: Credentials | None = None) -> None:
        self.settings = settings
        self.credentials = credentials

    # -- connection -----------------------------------------------------------------------
    def _context(self) -> ssl.SSLContext:
        return client_context(
            ca_bundle=self.settings.ca_bundle,
            verify=self.settings.verify_tls,
            credentials=self.credentials,
            certificate_file=self.settings.client_certificate_file,
            key_file=self.settings.client_key_file,
        )

    def _connect(self) -> imaplib.IMAP4:
        s = self.settings
        ctx = self._context()
        imap: imaplib.IMAP4
        if s.tls == "implicit":
            imap = imaplib.IMAP4_SSL(s.host, s.port, ssl_context=ctx, timeout=s.timeout)
        else:
            imap = imaplib.IMAP4(s.host, s.port, timeout=s.timeout)
            try:
                imap.starttls(ssl_context=ctx)
            except BaseException:
                imap.shutdown()
                raise
        try:
            username = s.username or (self.credentials.username if self.credentials else None)
            password = s.password.get_secret_value() if s.password else None
            if password is None and self.credentials is not None:
                password = self.credentials.password
            if username and password:
                imap.login(username, password)
            else:
                imap.authenticate("EXTERNAL", lambda _challenge: b"")
            # capabilities change once authenticated (MOVE, UIDPLUS...): imaplib keeps the first ones
            status, data = imap.capability()
            if status == "OK" and data and isinstance(data[-1], bytes):
                imap.capabilities = tuple(data[-1].decode("ascii", "replace").upper().split())
        except BaseException:
            imap.shutdown()
            raise
        return imap

    @staticmethod
    def _ok(result: tuple[str, Sequence[object]], what: str) -> Sequence[object]:
        status, data = result
        if status != "OK":
            raise TransientError(f"IMAP {what} answered {status}")
        return data

    # -- polling --------------------------------------------------------------------------
    def poll_once(self, sink: InboundSink) -> int:
        """Store what is new in the mailbox; returns how many messages were stored (or found stored)."""
        with map_mail_errors("IMAP server"), _map_imap_errors():
            imap = self._connect()
            try:
                return self._poll(imap, sink)
            finally:
                try:
                    imap.logout()
                except (imaplib.IMAP4.error, OSError):
                    imap.shutdown()

    def _poll(self, imap: imaplib.IMAP4, sink: InboundSink) -> int:
        s = self.settings
        self._ok(imap.select(_quote(s.mailbox)), "SELECT")
        if s.processed_mailbox:
            imap.create(_quote(s.processed_mailbox))  # NO when it exists: fine
        uidvalidity = ""
        untagged = imap.response("UIDVALIDITY")[1]
        if untagged and isinstance(untagged[0], bytes):
            uidvalidity = untagged[0].decode("ascii", "replace")
        data = self._ok(imap.uid("SEARCH", "UNKEYWORD", STORED_KEYWORD), "SEARCH")
        raw = data[0] if data and isinstance(data[0], bytes) else b""
        uids = raw.split()[: s.batch]
        stored = 0
        for uid in uids:
            if self._store_one(imap, sink, uid.decode("ascii"), uidvalidity):
                stored += 1
        if s.processed_mailbox and stored:
            imap.expunge()
        return stored

    def _fetch(self, imap: imaplib.IMAP4, uid: str) -> tuple[bytes, bool] | None:
        data = self._ok(imap.uid("FETCH", uid, "(RFC822.SIZE)"), "FETCH")
        size = 0
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if isinstance(line, bytes) and (m := _SIZE.search(line)):
                size = int(m.group(1))
        section = "BODY.PEEK[]" if size <= self.settings.max_message_bytes else "BODY.PEEK[HEADER]"
        data = self._ok(imap.uid("FETCH", uid, f"({section})"), "FETCH")
        for item in data:
            if isinstance(item, tuple) and len(item) >= 2 and isinstance(item[1], bytes):
                return item[1], section != "BODY.PEEK[]"
        return None

    def _store_one(self, imap: imaplib.IMAP4, sink: InboundSink, uid: str, uidvalidity: str) -> bool:
        fetched = self._fetch(imap, uid)
        if fetched is None:
            _log.warning("mssante_imap_fetch_empty", uid=uid)
            return False
        content, truncated = fetched
        head = content.split(b"\r\n\r\n", 1)[0][: 256 * 1024]
        parsed = BytesHeaderParser(policy=policy.compat32).parsebytes(head)
        mid = normalise_message_id(str(parsed.get("Message-ID") or ""))
        if "@" not in mid:  # no usable Message-ID: the mailbox's own identity of the message
            digest = hashlib.sha256(content).hexdigest()[:32]
            mid = f"imap:{uidvalidity}:{uid}:{digest}"
        headers = {"kind": classify(head), "size": str(len(content)), "mailbox": self.settings.mailbox}
        if truncated:
            headers["truncated"] = "headers-only"
        message = InboundMessage(
            external_id=mid,
            content=content,
            media_type=MEDIA_TYPE,
            headers=headers,
            received_at=datetime.now(UTC),
        )
        try:
            result = sink.store(message)
        except Exception as exc:  # not stored: leave it in the box for the next poll
            _log.warning("mssante_imap_store_failed", uid=uid, error=type(exc).__name__)
            return False
        # stored (or already stored): now, and only now, the mailbox may forget it
        self._ok(imap.uid("STORE", uid, "+FLAGS", f"(\\Seen {STORED_KEYWORD})"), "STORE")
        if self.settings.processed_mailbox:
            target = _quote(self.settings.processed_mailbox)
            if "MOVE" in imap.capabilities:
                self._ok(imap.uid("MOVE", uid, target), "MOVE")
            else:
                self._ok(imap.uid("COPY", uid, target), "COPY")
                self._ok(imap.uid("STORE", uid, "+FLAGS", "(\\Deleted)"), "STORE")
        _log.info("mssante_imap_stored", uid=uid, kind=headers["kind"], duplicate=result.duplicate)
        return True

    def run(self, sink: InboundSink, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; failures are logged and retried with backoff, never raised."""
        backoff = self.settings.poll_seconds
        while not stop.is_set():
            try:
                self.poll_once(sink)
                backoff = self.settings.poll_seconds
            except (TransientError, PermanentError) as exc:
                _log.warning("mssante_imap_poll_failed", error=str(exc))
                backoff = min(backoff * 2, max(self.settings.poll_seconds, 900.0))
            except Exception as exc:
                _log.error("mssante_imap_poll_crashed", error=type(exc).__name__)
                backoff = min(backoff * 2, max(self.settings.poll_seconds, 900.0))
            stop.wait(backoff)

    def interpret(self, message: InboundMessage) -> Interpretation:
        if message.headers.get("truncated"):
            return Interpretation(note="message larger than max_message_bytes: only its headers were kept")
        return interpret_mail(message.content, essms_finess=self.settings.essms_finess)

    def health(self) -> Health:
        started = time.monotonic()
        try:
            with map_mail_errors("IMAP server"), _map_imap_errors():
                imap = self._connect()
                try:
                    status, _ = imap.noop()
                finally:
                    try:
                        imap.logout()
                    except (imaplib.IMAP4.error, OSError):
                        imap.shutdown()
        except (TransientError, PermanentError) as exc:
            return Health(ok=False, detail=str(exc))
        return Health(ok=status == "OK", detail=f"NOOP {status} in {time.monotonic() - started:.2f}s")
