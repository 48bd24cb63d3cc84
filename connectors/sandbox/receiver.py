"""The sandbox HTTP receiver: a real server on loopback that stands in for a webhook peer.

It records every request it gets (method, path, headers, body SHA-256, ``Idempotency-Key``)
durably in a SQLite file, answers a resend of an already accepted ``Idempotency-Key`` with
``200`` and the same receipt id, and lets tests and the demo inject faults.

HTTP surface::

    POST|PUT <any path>   accept a delivery -> 201 {"receipt_id", "duplicate": false}
                          resend (same Idempotency-Key) -> 200 {"receipt_id", "duplicate": true}
    GET  /_received       what was received (JSON); ?accepted=1 keeps accepted first copies only
    GET  /_received/<n>/body   the raw body of request n
    GET  /_health         200 {"ok": true}
    POST /_control        fault injection, e.g. {"fail_next": 3, "status": 503},
                          {"reject_next": 1, "status": 422}, {"delay": 0.5}, {"reset": true}
    GET  /_control        the current fault settings

Faults apply to deliveries only (not to the ``/_...`` endpoints). A failed or rejected request
is recorded too (``outcome`` ``failed`` / ``rejected``) but never counts as accepted.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Faults", "ReceiverStore", "SandboxReceiver"]

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
"""

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

    def as_dict(self) -> dict[str, Any]:
        return {
            "fail_next": self.fail_next,
            "fail_status": self.fail_status,
            "reject_next": self.reject_next,
            "reject_status": self.reject_status,
            "delay": self.delay,
        }


def _documents(body: bytes, content_type: str) -> list[dict[str, Any]]:
    """The (kind, document_id, set_id, version) of each rendition of a JSON envelope, if any."""
    if "json" not in content_type:
        return []
    try:
        data = json.loads(body)
    except ValueError:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("renditions"), list):
        return []
    out: list[dict[str, Any]] = []
    for r in data["renditions"]:
        if isinstance(r, dict):
            out.append({k: r.get(k) for k in ("kind", "document_id", "set_id", "version")})
    return out


class ReceiverStore:
    """Durable record of what the receiver got; one SQLite connection behind a lock."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # survives a crash of this process, not a power cut
        self._db.executescript(_SCHEMA)
        self.lock = threading.Lock()
        self.faults = Faults()

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
            if order.get("clear"):
                self._db.execute("DELETE FROM received")
            return f.as_dict()

    def record(
        self,
        *,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        outcome: str,
        status: int,
    ) -> tuple[int, str | None, bool]:
        """Store one request; for an accepted one, dedup by Idempotency-Key.

        Returns (status, receipt_id, duplicate).
        """
        key = next((v for k, v in headers.items() if k.lower() == "idempotency-key"), None)
        kept = {k: v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS}
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        docs = _documents(body, content_type)
        receipt: str | None = None
        duplicate = False
        with self.lock:
            if outcome == "ok":
                row = None
                if key:
                    row = self._db.execute(
                        "SELECT receipt_id FROM received WHERE idempotency_key = ? AND outcome = 'accepted' LIMIT 1",
                        (key,),
                    ).fetchone()
                if row is not None:
                    receipt, duplicate, outcome, status = row[0], True, "duplicate", 200
                else:
                    receipt, outcome, status = f"rcpt-{uuid.uuid4().hex}", "accepted", 201
            self._db.execute(
                "INSERT INTO received (received_at, method, path, headers, idempotency_key, body_sha256, body_size,"
                " body, documents, outcome, status, receipt_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                ),
            )
        return status, receipt, duplicate

    def received(self, *, accepted_only: bool = False, since: int = 0) -> list[dict[str, Any]]:
        sql = (
            "SELECT n, received_at, method, path, headers, idempotency_key, body_sha256, body_size, documents,"
            " outcome, status, receipt_id FROM received WHERE n > ?"
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
        elif url.path == "/_control":
            with store.lock:
                self._reply(200, store.faults.as_dict())
        else:
            self._reply(404, {"error": "GET is only served on /_health, /_received and /_control"})

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
        fate, status, delay = store.take_fault()
        if delay:
            time.sleep(delay)
        status, receipt, duplicate = store.record(
            method=self.command,
            path=url.path,
            headers=dict(self.headers.items()),
            body=body,
            outcome=fate,
            status=status,
        )
        if fate == "ok":
            self._reply(status, {"receipt_id": receipt, "duplicate": duplicate})
        else:
            reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "fault"
            self._reply(status, {"error": f"injected fault: {reason}"})

    do_PUT = do_POST


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], store: ReceiverStore, quiet: bool) -> None:
        self.store = store
        self.quiet = quiet
        super().__init__(address, _Handler)


class SandboxReceiver:
    """A running receiver; use ``start()`` for a background thread or ``serve_forever()``.

    ``port=0`` picks a free port; read it back from ``.port`` / ``.url`` after construction.
    """

    def __init__(
        self, *, db_path: Path | None = None, host: str = "127.0.0.1", port: int = 0, quiet: bool = True
    ) -> None:
        self.store = ReceiverStore(db_path)
        self._server = _Server((host, port), self.store, quiet)
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

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
        if self._thread is not None:  # shutdown() waits for serve_forever(): only when it runs
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self.store.close()

    def __enter__(self) -> SandboxReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
