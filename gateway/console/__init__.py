"""The ops console (``/console``): French, server-rendered, no build step; its CSS and JS are
served by the gateway (``/console/static``), as are the API docs' assets (``/docs``, ``/redoc``).

:func:`install` adds it to an application that has a runtime (docs/console.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = ["install"]

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


def install(app: FastAPI, runtime: Runtime) -> None:
    from gateway.console.routes import PREFIX, ConsoleState, router

    app.state.console = ConsoleState(runtime)
    static = resources.files("gateway.console").joinpath("static")
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(static)), name="console-static")
    app.include_router(router)

    @app.middleware("http")
    async def _console_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if request.url.path.startswith(PREFIX):
            response.headers.setdefault("Content-Security-Policy", _CSP)
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "same-origin")
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response
