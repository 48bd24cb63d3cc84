"""The worker process's own small HTTP surface (``dui-gateway worker --health-port``), for
orchestrators and Prometheus: a worker serves no API, yet Kubernetes probes it and its delivery
counters (``dui_gateway_delivery_attempts_total``…) live in its own process.

- ``GET /healthz``: the process answers (liveness);
- ``GET /readyz``: the database answers and the conformance gate can run (readiness);
- ``GET /metrics``: this process's Prometheus counters and histograms.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from gateway.conformance import gate_problems
from gateway.runtime import Runtime
from gateway.storage.db import snapshot_engine

__all__ = ["start_health_server"]


def _ready(runtime: Runtime) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    try:
        with snapshot_engine(runtime.engine).connect() as conn:  # a reader: never waits for a writer
            conn.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except Exception as exc:  # any driver error means "not ready"; the type is enough
        checks["database"] = {"ok": False, "detail": type(exc).__name__}
    gate = gate_problems(runtime.settings)
    checks["conformance"] = {"ok": not gate, "detail": "; ".join(gate)} if gate else {"ok": True}
    return all(c["ok"] for c in checks.values()), checks


def start_health_server(runtime: Runtime, host: str, port: int) -> ThreadingHTTPServer:
    """Serve /healthz, /readyz and /metrics on ``host:port`` from a daemon thread; returns the
    server (``server_address`` has the port when 0 was asked; ``shutdown()`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, "application/json", json.dumps({"status": "ok"}).encode())
            elif path == "/readyz":
                ok, checks = _ready(runtime)
                body = {"status": "ready" if ok else "not ready", "checks": checks}
                self._send(200 if ok else 503, "application/json", json.dumps(body).encode())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest())
            else:
                self._send(404, "application/json", b'{"status": "not found"}')

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no log line
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="worker-health", daemon=True).start()
    return server
