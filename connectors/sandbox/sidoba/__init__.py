"""A local SIDOBA simulator: a real HTTP server on loopback that takes indicator datasets.

It checks what a receiver would (schema name and version, FINESS, period, the dataset's
layout version), keeps each accepted dataset by ``Idempotency-Key`` (a resend answers the first
receipt), keeps the latest version per series, and can inject faults for the tests:
``POST /_control`` with ``{"reject_next": n, "fail_next": n, "status": code, "delay": s}``.
``GET /_health`` answers 200; ``GET /_datasets`` lists what it holds.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["SidobaSimulator"]

_SUPPORTED = {"1.0"}


class SidobaSimulator:
    """``with SidobaSimulator() as sim: sim.url`` — a server on 127.0.0.1, a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self.accepted: dict[str, dict[str, Any]] = {}  # idempotency key -> {"id", "body"}
        self.latest: dict[str, int] = {}  # series -> latest version held
        self.faults: dict[str, Any] = {"reject_next": 0, "fail_next": 0, "status": None, "delay": 0.0}
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet: no payload in logs
                return

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/_health":
                    self._reply(200, {"status": "ok"})
                elif self.path == "/_datasets":
                    with sim._lock:
                        self._reply(200, {"datasets": [v["body"] for v in sim.accepted.values()]})
                else:
                    self._reply(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if 0 < length <= 16 * 1024 * 1024 else b""
                if self.path == "/_control":
                    with sim._lock:
                        sim.faults.update(json.loads(raw or b"{}"))
                    self._reply(200, sim.faults)
                    return
                self._receive(raw)

            def _receive(self, raw: bytes) -> None:
                with sim._lock:
                    delay = float(sim.faults.get("delay") or 0)
                    sim.faults["delay"] = 0.0
                if delay:
                    time.sleep(delay)
                key = self.headers.get("Idempotency-Key") or ""
                with sim._lock:
                    if sim.faults["fail_next"] > 0:
                        sim.faults["fail_next"] -= 1
                        self._reply(int(sim.faults.get("status") or 503), {"error": "temporarily unavailable"})
                        return
                    if sim.faults["reject_next"] > 0:
                        sim.faults["reject_next"] -= 1
                        self._reply(int(sim.faults.get("status") or 422), {"error": "rejected"})
                        return
                    if key in sim.accepted:
                        self._reply(200, {"id": sim.accepted[key]["id"], "replayed": True})
                        return
                problem = _check(self.headers.get("Content-Type", ""), raw, key)
                if problem:
                    self._reply(422, {"error": problem})
                    return
                body = json.loads(raw)
                with sim._lock:
                    if sim.latest.get(body["series"], 0) >= body["version"]:
                        self._reply(409, {"error": "a newer or equal version of this period is held"})
                        return
                    receipt = {"id": f"sidoba-{uuid.uuid4()}", "body": body}
                    sim.accepted[key] = receipt
                    sim.latest[body["series"]] = body["version"]
                self._reply(201, {"id": receipt["id"]})

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="sidoba-simulator", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SidobaSimulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> SidobaSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def control(self, **faults: Any) -> None:
        with self._lock:
            self.faults.update(faults)

    def count(self, idempotency_key: str) -> int:
        with self._lock:
            return int(idempotency_key in self.accepted)


def _check(content_type: str, raw: bytes, key: str) -> str | None:
    """What a receiver refuses: not JSON, unknown schema or version, missing fields."""
    if not key:
        return "Idempotency-Key is required"
    if not content_type.startswith("application/json"):
        return "this simulator takes the JSON payload"
    try:
        body = json.loads(raw)
    except ValueError:
        return "not JSON"
    if not isinstance(body, dict) or body.get("schema") != "dui-gateway.sidoba-indicators":
        return "unknown schema"
    if body.get("schema_version") not in _SUPPORTED:
        return "unsupported schema_version"
    for name in ("finess", "period", "series", "version", "dataset"):
        if name not in body:
            return f"missing {name}"
    dataset = body["dataset"]
    if not isinstance(dataset, dict) or dataset.get("finess") != body["finess"] or "totals" not in dataset:
        return "the dataset does not match the envelope"
    return None
