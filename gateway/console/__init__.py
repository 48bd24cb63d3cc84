"""The ops console (``/console``): French, server-rendered, no build step; its CSS and JS are
served by the gateway (``/console/static``), as are the API docs' assets (``/docs``, ``/redoc``).

:func:`install` adds it to an application that has a runtime (docs/console.md).
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = ["install"]

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


class _ConsoleHeaders:
    """Security headers on the console's responses (plain ASGI: request bodies stream through untouched)."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def install(app: FastAPI, runtime: Runtime) -> None:
    from gateway.console.admin import router as admin_router
    from gateway.console.linking import router as linking_router
    from gateway.console.reports import router as reports_router
    from gateway.console.routes import PREFIX, ConsoleState, router
    from gateway.console.users import router as users_router

    app.state.console = ConsoleState(runtime)
    static = resources.files("gateway.console").joinpath("static")
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(static)), name="console-static")
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(reports_router)
    app.include_router(linking_router)
    app.include_router(users_router)
    app.add_middleware(_ConsoleHeaders, prefix=PREFIX)
