"""The sandbox HTTP receiver as a peer: in a thread or as a ``dui-gateway sandbox`` process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from connectors.sandbox import SandboxReceiver
from tests.peers.net import free_port, wait_http
from tests.peers.process import ManagedProcess, dui_gateway_cmd


class SandboxClient:
    """Reads what a sandbox receiver got and drives its fault injection over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def received(self, *, accepted_only: bool = False) -> list[dict[str, Any]]:
        resp = requests.get(f"{self.url}/_received", params={"accepted": int(accepted_only)}, timeout=30)
        resp.raise_for_status()
        data: list[dict[str, Any]] = resp.json()
        return data

    def accepted(self) -> list[dict[str, Any]]:
        return self.received(accepted_only=True)

    def body(self, n: int) -> bytes:
        resp = requests.get(f"{self.url}/_received/{n}/body", timeout=10)
        resp.raise_for_status()
        return resp.content

    def receipts(self) -> list[dict[str, Any]]:
        """The receipts the sandbox scheduled, sent or gave up on."""
        resp = requests.get(f"{self.url}/_receipts", timeout=30)
        resp.raise_for_status()
        data: list[dict[str, Any]] = resp.json()
        return data

    def control(self, **order: Any) -> dict[str, Any]:
        resp = requests.post(f"{self.url}/_control", json=order, timeout=10)
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data


@contextmanager
def sandbox_thread(db_path: Path | None = None) -> Iterator[tuple[SandboxReceiver, SandboxClient]]:
    """A receiver in a background thread of the test process, on a free port."""
    receiver = SandboxReceiver(db_path=db_path).start()
    try:
        yield receiver, SandboxClient(receiver.url)
    finally:
        receiver.stop()


@contextmanager
def sandbox_process(
    tmp: Path,
    *,
    db_path: Path | None = None,
    secret_refs: Sequence[str] = (),
    receipt_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[ManagedProcess, SandboxClient]]:
    """``dui-gateway sandbox`` as a real child process, on a free port.

    ``secret_refs`` (``env:NAME`` / ``file:PATH``) become ``--webhook-secret`` options;
    ``env`` is added to the child's environment.
    """
    port = free_port()
    db = db_path or tmp / "sandbox.db"
    args = ["sandbox", "--port", str(port), "--db", str(db)]
    for ref in secret_refs:
        args += ["--webhook-secret", ref]
    if receipt_url:
        args += ["--receipt-url", receipt_url]
    proc = ManagedProcess(
        "sandbox",
        dui_gateway_cmd(*args),
        log_path=tmp / "logs" / "sandbox.log",
        env=env,
    )
    try:
        client = SandboxClient(f"http://127.0.0.1:{port}")
        wait_http(f"{client.url}/_health", alive=proc.alive)
        yield proc, client
    finally:
        proc.stop()


class ReceiptCollector:
    """A tiny real HTTP server standing in for the gateway's ``POST /inbound/webhook-receipts``:
    it calls :meth:`WebhookReceiptSource.accept` then ``interpret`` on each request and keeps
    what they returned. ``status`` forces an answer (e.g. 503) before anything is checked."""

    def __init__(self, source: Any, port: int = 0) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from connectors.base import InboundRejected

        collector = self
        self.source = source
        self.messages: list[Any] = []  # InboundMessage
        self.interpretations: list[Any] = []  # Interpretation
        self.rejections: list[tuple[int, str]] = []
        self.status: int | None = None
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if collector.status is not None:
                    self._answer(collector.status)
                    return
                try:
                    message = collector.source.accept(dict(self.headers.items()), body)
                except InboundRejected as exc:
                    with collector._lock:
                        collector.rejections.append((exc.status, str(exc)))
                    self._answer(exc.status)
                    return
                with collector._lock:
                    collector.messages.append(message)
                    collector.interpretations.append(collector.source.interpret(message))
                self._answer(202)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/inbound/webhook-receipts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def acknowledgements(self) -> list[Any]:
        with self._lock:
            return [ack for i in self.interpretations for ack in i.acknowledgements]

    def wait(self, count: int, *, timeout: float = 15.0) -> None:
        """Until ``count`` messages were accepted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{len(self.messages)} receipts after {timeout}s, {count} expected")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ReceiptCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
