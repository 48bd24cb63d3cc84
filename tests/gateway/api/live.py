"""A real HTTP server for the API tests: uvicorn in a thread on 127.0.0.1, and a small client.

The server is started once per test session and serves whichever app the current test put in
:attr:`LiveServer.app` (each test has its own database, hence its own app), so requests go
through real sockets, HTTP parsing and chunked transfer without a server start per test.
Lifespan events are not forwarded to the per-test apps; :func:`serve` runs one app with its
own server and lifespan when a test needs that.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send


class _Dispatch:
    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.app is not None, "no app installed on the live server"
        await self.app(scope, receive, send)


class _Server:
    def __init__(self, app: ASGIApp, *, lifespan: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan=lifespan,
            access_log=False,
            timeout_keep_alive=1,
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


class Api:
    """``requests`` bound to a base URL (one connection pool per test)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return self.http.request(method, self.base_url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def close(self) -> None:
        self.http.close()


class LiveServer:
    def __init__(self) -> None:
        self._dispatch = _Dispatch()
        self._server = _Server(self._dispatch, lifespan="on")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    def install(self, app: ASGIApp | None) -> None:
        self._dispatch.app = app

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()


@contextmanager
def serve(app: ASGIApp) -> Iterator[Api]:
    """Run ``app`` with its own uvicorn server, lifespan included; stopped on exit."""
    server = _Server(app, lifespan="on")
    server.start()
    api = Api(f"http://127.0.0.1:{server.port}")
    try:
        yield api
    finally:
        api.close()
        server.stop()
