"""The sandbox HTTP receiver: a real server on loopback that stands in for a webhook peer.

It records every request it gets (method, path, headers, body SHA-256, ``Idempotency-Key``)
durably in a SQLite file, answers a resend of an already accepted ``Idempotency-Key`` with
``200`` and the same receipt id, and lets tests and the demo inject faults.

With webhook secrets configured (``webhook_secrets``; CLI ``--webhook-secret env:NAME|file:PATH``,
repeatable, or ``DUI_GATEWAY_SANDBOX_WEBHOOK_SECRETS``) it verifies the Standard Webhooks
signature of every delivery like a real DUI vendor would: unsigned, wrongly signed or stale
(timestamp more than 5 minutes away) → ``401``, recorded with outcome ``rejected`` and the
reason in ``note``. Any configured secret is accepted (rotation).

HTTP surface::

    POST|PUT <any path>   accept a delivery -> 201 {"receipt_id", "duplicate": false}
                          resend (same Idempotency-Key) -> 200 {"receipt_id", "duplicate": true}
                          "receipt later" -> 202 {"receipt_id", "status": "accepted", "receipt": "later"}
    GET  /_received       what was received (JSON); ?accepted=1 keeps accepted first copies only
    GET  /_received/<n>/body   the raw body of request n
    GET  /_receipts       the receipts the sandbox scheduled/sent/gave up (JSON)
    GET  /_health         200 {"ok": true}
    POST /_control        fault injection, e.g. {"fail_next": 3, "status": 503},
                          {"reject_next": 1, "status": 422}, {"delay": 0.5}, {"reset": true},
                          {"receipt_later": 2, "receipt_delay": 1, "receipt_outcome": "failed",
                           "receipt_reason": "mailbox full", "receipt_url": "http://..."},
                          {"receipt_duplicate": "<receipt_id>"}, {"receipt_unknown": true}
    GET  /_control        the current fault settings

Faults apply to deliveries only (not to the ``/_...`` endpoints). A failed or rejected request
is recorded too (``outcome`` ``failed`` / ``rejected``) but never counts as accepted.

"Accepted, receipt later": the next ``receipt_later`` first acceptances are answered ``202``;
``receipt_delay`` seconds later the sandbox POSTs to the receipt URL (control ``receipt_url``,
else ``--receipt-url``) a ``delivery.receipt`` signed with its *first* secret::

    {"type": "delivery.receipt", "delivery_id", "idempotency_key", "receipt_id", "outcome",
     "reason", "at"}

It retries that POST with exponential backoff (``receipt_retries`` more tries after the first,
``receipt_backoff`` seconds doubled each time) while the gateway is unreachable or answers
5xx/408/429, then records the receipt ``undelivered`` (any other refusal at once). Receipts are
rows in the SQLite file, so one scheduled before a restart is sent by the restarted sandbox.
``receipt_duplicate`` sends an already scheduled receipt again (same ``webhook-id`` and body);
``receipt_unknown`` sends one for an idempotency key nobody used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from pydantic import SecretStr

from connectors._secrets import SecretRefError, resolve_secret_ref
from connectors.webhook.signing import SignatureError, check_secret, sign_headers, verify

__all__ = ["SECRETS_ENV", "Faults", "ReceiverStore", "SandboxReceiver", "sandbox_secrets"]

SECRETS_ENV = "DUI_GATEWAY_SANDBOX_WEBHOOK_SECRETS"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS received (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    headers TEXT NOT NULL,
    idempotency_key TEXT,
    body_sha256 TEXT NOT NULL,
    body_size INTEGER NOT NULL,
    body BLOB NOT NULL,
    documents TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER NOT NULL,
    receipt_id TEXT
);
CREATE INDEX IF NOT EXISTS ix_received_key ON received (idempotency_key, outcome);
CREATE TABLE IF NOT EXISTS receipts (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    message_id TEXT NOT NULL,
    receipt_id TEXT NOT NULL,
    delivery_id TEXT,
    idempotency_key TEXT,
    outcome TEXT NOT NULL,
    url TEXT NOT NULL,
    body BLOB NOT NULL,
    due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    backoff REAL NOT NULL,
    state TEXT NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    sent_at TEXT
);
CREATE INDEX IF NOT EXISTS ix_receipts_due ON receipts (state, due_at);
"""
# columns added after the first release (older sandbox files get them on open)
_ADDED_COLUMNS = {"note": "TEXT", "answer": "TEXT"}

# headers never stored: credentials the sender may use
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


@dataclass
class Faults:
    """Current fault-injection settings (guarded by the store lock)."""

    fail_next: int = 0
    fail_status: int = 503
    reject_next: int = 0
    reject_status: int = 422
    delay: float = 0.0
    receipt_later: int = 0
    receipt_delay: float = 1.0
    receipt_outcome: str = "delivered"
    receipt_reason: str | None = None
    receipt_url: str | None = None
    receipt_retries: int = 4
    receipt_backoff: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_URL = re.compile(r"^https?://[^\s]+$")


def sandbox_secrets(refs: Sequence[str] = (), *, environ: Mapping[str, str] | None = None) -> list[SecretStr]:
    """The sandbox's webhook secrets, newest first: ``refs`` (``env:NAME`` / ``file:PATH``), else
    the variable ``DUI_GATEWAY_SANDBOX_WEBHOOK_SECRETS`` (``whsec_`` values or references,
    separated by spaces or commas). ``ValueError`` names the reference, never a value."""
    env = os.environ if environ is None else environ
    items = list(refs) or [i for i in re.split(r"[\s,]+", env.get(SECRETS_ENV, "")) if i]
    out: list[SecretStr] = []
    for i, item in enumerate(items):
        where = item if item.startswith(("env:", "file:")) else f"{SECRETS_ENV} item {i + 1}"
        try:
            secret: SecretStr = SecretStr(item) if item.startswith("whsec_") else resolve_secret_ref(item, environ=env)
            check_secret(secret.get_secret_value())
        except SecretRefError as exc:
            raise ValueError(str(exc)) from None
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        out.append(secret)
    return out


def _envelope_facts(body: bytes, content_type: str) -> tuple[list[dict[str, Any]], str | None]:
    """The (kind, document_id, set_id, version) of each rendition of a JSON envelope, and its
    delivery id, if any."""
    if "json" not in content_type:
        return [], None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return [], None
    if not isinstance(data, dict):
        return [], None
    delivery_id = data.get("delivery_id") if isinstance(data.get("delivery_id"), str) else None
    if not isinstance(data.get("renditions"), list):
        return [], delivery_id
    out: list[dict[str, Any]] = []
    for r in data["renditions"]:
        if isinstance(r, dict):
            out.append({k: r.get(k) for k in ("kind", "document_id", "set_id", "version")})
    return out, delivery_id


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


class ReceiverStore:
    """Durable record of what the receiver got (and of the receipts it owes); one SQLite
    connection behind a lock."""

    def __init__(
        self,
        path: Path | None,
        *,
        secrets: Sequence[SecretStr] = (),
        receipt_url: str | None = None,
    ) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # survives a crash of this process, not a power cut
        self._db.executescript(_SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(received)")}
        for column, ddl in _ADDED_COLUMNS.items():
            if column not in present:
                self._db.execute(f"ALTER TABLE received ADD COLUMN {column} {ddl}")
        self.lock = threading.Lock()
        self.secrets = tuple(secrets)
        self.receipt_url = receipt_url
        self.faults = Faults()
        self.receipts_changed = threading.Event()  # wakes the receipt sender

    def close(self) -> None:
        with self.lock:
            self._db.close()

    def take_fault(self) -> tuple[str, int, float]:
        """Decide this delivery's fate: ("ok"|"failed"|"rejected", status, delay)."""
        with self.lock:
            f = self.faults
            if f.fail_next > 0:
                f.fail_next -= 1
                return "failed", f.fail_status, f.delay
            if f.reject_next > 0:
                f.reject_next -= 1
                return "rejected", f.reject_status, f.delay
            return "ok", 0, f.delay

    def control(self, order: dict[str, Any]) -> dict[str, Any]:
        """Apply a fault-injection order; ``ValueError`` (answered 400) when it makes no sense."""
        with self.lock:
            f = self.faults
            if order.get("reset"):
                self.faults = f = Faults()
            if "fail_next" in order:
                f.fail_next = int(order["fail_next"])
                f.fail_status = int(order.get("status", 503))
            if "reject_next" in order:
                f.reject_next = int(order["reject_next"])
                f.reject_status = int(order.get("status", 422))
            if "delay" in order:
                f.delay = max(0.0, float(order["delay"]))
            self._receipt_control(f, order)
            if order.get("clear"):
                self._db.execute("DELETE FROM received")
                self._db.execute("DELETE FROM receipts")
            state = f.as_dict()
        if "receipt_duplicate" in order or "receipt_unknown" in order:
            self.receipts_changed.set()
        return state

    def _receipt_control(self, f: Faults, order: dict[str, Any]) -> None:
        if "receipt_url" in order:
            url = order["receipt_url"]
            if url is not None and not (isinstance(url, str) and _URL.match(url)):
                raise ValueError("receipt_url is an http(s) URL")
            f.receipt_url = url
        if "receipt_outcome" in order:
            if order["receipt_outcome"] not in ("delivered", "failed"):
                raise ValueError("receipt_outcome is 'delivered' or 'failed'")
            f.receipt_outcome = order["receipt_outcome"]
        if "receipt_reason" in order:
            reason = order["receipt_reason"]
            f.receipt_reason = None if reason is None else str(reason)[:500]
        if "receipt_delay" in order:
            f.receipt_delay = max(0.0, float(order["receipt_delay"]))
        if "receipt_retries" in order:
            f.receipt_retries = max(0, min(20, int(order["receipt_retries"])))
        if "receipt_backoff" in order:
            f.receipt_backoff = max(0.0, float(order["receipt_backoff"]))
        wants_receipts = int(order.get("receipt_later", 0)) > 0 or "receipt_duplicate" in order
        if wants_receipts or order.get("receipt_unknown"):
            if not self.secrets:
                raise ValueError("receipts are signed: start the sandbox with --webhook-secret")
            if not (f.receipt_url or self.receipt_url):
                raise ValueError("no receipt URL: give receipt_url or start the sandbox with --receipt-url")
        if "receipt_later" in order:
            f.receipt_later = max(0, int(order["receipt_later"]))
        if "receipt_duplicate" in order:
            if not self._duplicate_receipt(str(order["receipt_duplicate"])):
                raise ValueError("no receipt with that receipt_id")
        if order.get("receipt_unknown"):
            key = f"unknown-{uuid.uuid4().hex}"
            self._schedule(
                f, kind="unknown", receipt_id=f"rcpt-{uuid.uuid4().hex}", delivery_id=None, key=key, delay=0.0
            )

    def _schedule(
        self, f: Faults, *, kind: str, receipt_id: str, delivery_id: str | None, key: str | None, delay: float
    ) -> None:
        """Insert a receipt to send (caller holds the lock)."""
        url = f.receipt_url or self.receipt_url
        assert url is not None
        body = {
            "type": "delivery.receipt",
            "delivery_id": delivery_id,
            "idempotency_key": key,
            "receipt_id": receipt_id,
            "outcome": f.receipt_outcome,
            "reason": f.receipt_reason,
            "at": datetime.now(UTC).isoformat(),
        }
        self._db.execute(
            "INSERT INTO receipts (kind, message_id, receipt_id, delivery_id, idempotency_key, outcome, url, body,"
            " due_at, max_attempts, backoff, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'scheduled')",
            (
                kind,
                f"msg_{uuid.uuid4().hex}",
                receipt_id,
                delivery_id,
                key,
                f.receipt_outcome,
                url,
                json.dumps(body, separators=(",", ":")).encode(),
                time.time() + delay,
                1 + f.receipt_retries,
                f.receipt_backoff,
            ),
        )

    def _duplicate_receipt(self, receipt_id: str) -> bool:
        """Send the first receipt for ``receipt_id`` again, same message id and body (caller locks)."""
        row = self._db.execute(
            "SELECT kind, message_id, receipt_id, delivery_id, idempotency_key, outcome, url, body, max_attempts,"
            " backoff FROM receipts WHERE receipt_id = ? ORDER BY n LIMIT 1",
            (receipt_id,),
        ).fetchone()
        if row is None:
            return False
        self._db.execute(
            "INSERT INTO receipts (kind, message_id, receipt_id, delivery_id, idempotency_key, outcome, url, body,"
            " due_at, max_attempts, backoff, state) VALUES ('duplicate', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'scheduled')",
            (*row[1:8], time.time(), row[8], row[9]),
        )
        return True

    def record(
        self,
        *,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        outcome: str,
        status: int,
        note: str | None = None,
    ) -> tuple[int, str | None, bool, bool]:
        """Store one request; for an accepted one, dedup by Idempotency-Key.

        Returns (status, receipt_id, duplicate, receipt_later).
        """
        key = _header(headers, "idempotency-key")
        kept = {k: v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS}
        docs, delivery_id = _envelope_facts(body, _header(headers, "content-type") or "")
        receipt: str | None = None
        duplicate = later = False
        with self.lock:
            if outcome == "ok":
                row = None
                if key:
                    row = self._db.execute(
                        "SELECT receipt_id, answer FROM received WHERE idempotency_key = ? AND outcome = 'accepted'"
                        " ORDER BY n LIMIT 1",
                        (key,),
                    ).fetchone()
                if row is not None:
                    receipt, duplicate, outcome = row[0], True, "duplicate"
                    later = row[1] == "later"
                    status = 202 if later else 200
                else:
                    receipt, outcome, status = f"rcpt-{uuid.uuid4().hex}", "accepted", 201
                    if self.faults.receipt_later > 0:
                        self.faults.receipt_later -= 1
                        later, status = True, 202
                        self._schedule(
                            self.faults,
                            kind="receipt",
                            receipt_id=receipt,
                            delivery_id=delivery_id,
                            key=key,
                            delay=self.faults.receipt_delay,
                        )
            self._db.execute(
                "INSERT INTO received (received_at, method, path, headers, idempotency_key, body_sha256, body_size,"
                " body, documents, outcome, status, receipt_id, note, answer)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    datetime.now(UTC).isoformat(),
                    method,
                    path,
                    json.dumps(kept),
                    key,
                    hashlib.sha256(body).hexdigest(),
                    len(body),
                    body,
                    json.dumps(docs),
                    outcome,
                    status,
                    receipt,
                    note,
                    ("later" if later else "now") if receipt else None,
                ),
            )
        if later and not duplicate:
            self.receipts_changed.set()
        return status, receipt, duplicate, later

    def received(self, *, accepted_only: bool = False, since: int = 0) -> list[dict[str, Any]]:
        sql = (
            "SELECT n, received_at, method, path, headers, idempotency_key, body_sha256, body_size, documents,"
            " outcome, status, receipt_id, note, answer FROM received WHERE n > ?"
        )
        if accepted_only:
            sql += " AND outcome = 'accepted'"
        with self.lock:
            rows = self._db.execute(sql + " ORDER BY n", (since,)).fetchall()
        return [
            {
                "n": r[0],
                "received_at": r[1],
                "method": r[2],
                "path": r[3],
                "headers": json.loads(r[4]),
                "idempotency_key": r[5],
                "body_sha256": r[6],
                "body_size": r[7],
                "documents": json.loads(r[8]),
                "outcome": r[9],
                "status": r[10],
                "receipt_id": r[11],
                "note": r[12],
                "receipt": r[13],
            }
            for r in rows
        ]

    def body(self, n: int) -> tuple[bytes, str] | None:
        with self.lock:
            row = self._db.execute("SELECT body, headers FROM received WHERE n = ?", (n,)).fetchone()
        if row is None:
            return None
        headers = json.loads(row[1])
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "application/octet-stream")
        return bytes(row[0]), ctype

    # -- receipts owed to the gateway
    def receipts(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = self._db.execute(
                "SELECT n, kind, message_id, receipt_id, delivery_id, idempotency_key, outcome, url, body, attempts,"
                " state, last_status, last_error, sent_at FROM receipts ORDER BY n"
            ).fetchall()
        names = (
            "n kind message_id receipt_id delivery_id idempotency_key outcome url body attempts state"
            " last_status last_error sent_at"
        ).split()
        out = []
        for r in rows:
            item = dict(zip(names, r, strict=True))
            item["body"] = json.loads(item["body"])
            out.append(item)
        return out

    def next_receipt(self, now: float) -> tuple[tuple[Any, ...] | None, float | None]:
        """(the first due receipt, None) or (None, when the next one is due / None if none)."""
        with self.lock:
            row = self._db.execute(
                "SELECT n, message_id, url, body, attempts, max_attempts, backoff, due_at FROM receipts"
                " WHERE state = 'scheduled' ORDER BY due_at, n LIMIT 1"
            ).fetchone()
        if row is None:
            return None, None
        if row[7] > now:
            return None, float(row[7])
        return tuple(row[:7]), None

    def receipt_attempted(self, n: int, *, ok: bool, retry_at: float | None, status: int | None, error: str) -> None:
        with self.lock:
            if ok:
                self._db.execute(
                    "UPDATE receipts SET state = 'sent', attempts = attempts + 1, last_status = ?, last_error = NULL,"
                    " sent_at = ? WHERE n = ?",
                    (status, datetime.now(UTC).isoformat(), n),
                )
            elif retry_at is not None:
                self._db.execute(
                    "UPDATE receipts SET attempts = attempts + 1, last_status = ?, last_error = ?, due_at = ?"
                    " WHERE n = ?",
                    (status, error, retry_at, n),
                )
            else:
                self._db.execute(
                    "UPDATE receipts SET state = 'undelivered', attempts = attempts + 1, last_status = ?,"
                    " last_error = ? WHERE n = ?",
                    (status, error, n),
                )


_RETRY_STATUSES = frozenset({408, 429})


class _ReceiptSender(threading.Thread):
    """Sends due receipts one at a time, signed with the sandbox's first secret."""

    def __init__(self, store: ReceiverStore, stop: threading.Event) -> None:
        super().__init__(name="sandbox-receipts", daemon=True)
        self.store = store
        self.stop = stop

    def run(self) -> None:
        while not self.stop.is_set():
            due, next_at = self.store.next_receipt(time.time())
            if due is None:
                wait = 1.0 if next_at is None else max(0.01, min(1.0, next_at - time.time()))
                self.store.receipts_changed.wait(wait)
                self.store.receipts_changed.clear()
                continue
            self._send(*due)

    def _send(
        self, n: int, message_id: str, url: str, body: bytes, attempts: int, max_attempts: int, backoff: float
    ) -> None:
        status: int | None = None
        if not self.store.secrets:
            self.store.receipt_attempted(n, ok=False, retry_at=None, status=None, error="no secret to sign with")
            return
        headers = {
            "Content-Type": "application/json",
            **sign_headers(self.store.secrets[:1], msg_id=message_id, body=bytes(body)),
        }
        try:
            resp = requests.post(url, data=bytes(body), headers=headers, timeout=5, allow_redirects=False)
            status = resp.status_code
            error = f"HTTP {status}"
            retryable = status >= 500 or status in _RETRY_STATUSES
        except requests.RequestException as exc:
            error, retryable = type(exc).__name__, True
        if status is not None and 200 <= status < 300:
            self.store.receipt_attempted(n, ok=True, retry_at=None, status=status, error="")
            return
        tried = attempts + 1
        retry_at = time.time() + backoff * 2 ** (tried - 1) if retryable and tried < max_attempts else None
        self.store.receipt_attempted(n, ok=False, retry_at=retry_at, status=status, error=error)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        # method, path and status only: bodies and headers never reach the log
        if self.server.quiet:
            return
        line = {"event": "sandbox.request", "request": self.requestline[:200], "detail": format % args}
        print(json.dumps(line), flush=True)

    # -- helpers
    def _reply(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # -- verbs
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        store = self.server.store
        if url.path == "/_health":
            self._reply(200, {"ok": True})
        elif url.path == "/_received":
            q = parse_qs(url.query)
            accepted = q.get("accepted", ["0"])[0] in ("1", "true")
            since = int(q.get("since", ["0"])[0])
            self._reply(200, store.received(accepted_only=accepted, since=since))
        elif url.path.startswith("/_received/") and url.path.endswith("/body"):
            try:
                n = int(url.path.split("/")[2])
            except ValueError:
                self._reply(404, {"error": "no such request"})
                return
            found = store.body(n)
            if found is None:
                self._reply(404, {"error": "no such request"})
            else:
                self._reply(200, found[0], found[1])
        elif url.path == "/_receipts":
            self._reply(200, store.receipts())
        elif url.path == "/_control":
            with store.lock:
                self._reply(200, store.faults.as_dict())
        else:
            self._reply(404, {"error": "GET is only served on /_health, /_received, /_receipts and /_control"})

    def do_POST(self) -> None:
        body = self._body()
        url = urlsplit(self.path)
        store = self.server.store
        if url.path == "/_control":
            try:
                order = json.loads(body or b"{}")
                if not isinstance(order, dict):
                    raise ValueError("a JSON object is expected")
                self._reply(200, store.control(order))
            except (ValueError, TypeError) as exc:
                self._reply(400, {"error": str(exc)})
            return
        if url.path.startswith("/_"):
            self._reply(404, {"error": "unknown control endpoint"})
            return
        headers = dict(self.headers.items())
        if store.secrets:
            try:
                verify(store.secrets, headers, body)
            except SignatureError as exc:
                store.record(
                    method=self.command, path=url.path, headers=headers, body=body, outcome="rejected",
                    status=401, note=f"signature {exc.reason}",
                )  # fmt: skip
                self._reply(401, {"error": f"signature refused: {exc}"})
                return
        fate, status, delay = store.take_fault()
        if delay and self.server.stopping.wait(delay):
            self.close_connection = True  # the sandbox is stopping: no answer
            return
        status, receipt, duplicate, later = store.record(
            method=self.command,
            path=url.path,
            headers=headers,
            body=body,
            outcome=fate,
            status=status,
        )
        if fate != "ok":
            reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "fault"
            self._reply(status, {"error": f"injected fault: {reason}"})
        elif later:
            answer = {"receipt_id": receipt, "status": "accepted", "receipt": "later", "duplicate": duplicate}
            self._reply(202, answer)
        else:
            self._reply(status, {"receipt_id": receipt, "duplicate": duplicate})

    do_PUT = do_POST


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], store: ReceiverStore, quiet: bool) -> None:
        self.store = store
        self.quiet = quiet
        self.stopping = threading.Event()
        super().__init__(address, _Handler)


class SandboxReceiver:
    """A running receiver; use ``start()`` for a background thread or ``serve_forever()``.

    ``port=0`` picks a free port; read it back from ``.port`` / ``.url`` after construction.
    ``webhook_secrets`` (``whsec_`` values, newest first; see :func:`sandbox_secrets`) turn on
    signature verification and sign the receipts; ``receipt_url`` is where receipts go unless a
    control order names another one.
    """

    def __init__(
        self,
        *,
        db_path: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        quiet: bool = True,
        webhook_secrets: Sequence[SecretStr | str] = (),
        receipt_url: str | None = None,
    ) -> None:
        secrets = [s if isinstance(s, SecretStr) else SecretStr(s) for s in webhook_secrets]
        for i, secret in enumerate(secrets):
            try:
                check_secret(secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"webhook secret {i + 1}: {exc}") from None
        if receipt_url is not None and not _URL.match(receipt_url):
            raise ValueError("receipt_url is an http(s) URL")
        self.store = ReceiverStore(db_path, secrets=secrets, receipt_url=receipt_url)
        self._server = _Server((host, port), self.store, quiet)
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None
        self._sender = _ReceiptSender(self.store, self._server.stopping)
        self._sender.start()  # receipts scheduled before a restart go out now

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SandboxReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox-receiver", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.stopping.set()
        self.store.receipts_changed.set()
        if self._thread is not None:  # shutdown() waits for serve_forever(): only when it runs
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self._sender.join(timeout=10)
        self.store.close()

    def __enter__(self) -> SandboxReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
