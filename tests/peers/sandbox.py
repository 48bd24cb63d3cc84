"""The sandbox HTTP receiver as a peer: in a thread or as a ``dui-gateway sandbox`` process."""

from __future__ import annotations

from collections.abc import Iterator
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
def sandbox_process(tmp: Path, *, db_path: Path | None = None) -> Iterator[tuple[ManagedProcess, SandboxClient]]:
    """``dui-gateway sandbox`` as a real child process, on a free port."""
    port = free_port()
    db = db_path or tmp / "sandbox.db"
    proc = ManagedProcess(
        "sandbox",
        dui_gateway_cmd("sandbox", "--port", str(port), "--db", str(db)),
        log_path=tmp / "logs" / "sandbox.log",
    )
    try:
        client = SandboxClient(f"http://127.0.0.1:{port}")
        wait_http(f"{client.url}/_health", alive=proc.alive)
        yield proc, client
    finally:
        proc.stop()
