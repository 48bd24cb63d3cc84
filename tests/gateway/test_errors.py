"""One exception tree: every error class of the service sits under GatewayError or says why not."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import httpx
from fastapi import FastAPI
from structlog.testing import capture_logs

import gateway
from gateway import errors
from gateway.api.problems import PROBLEM_BASE, install_error_handlers
from gateway.errors import GatewayError
from gateway.security.crypto import DecryptionError

GATEWAY = Path(gateway.__file__).parent


def _gateway_exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages([str(GATEWAY)], prefix="gateway."):
        if ".migrations" in info.name:  # alembic scripts run on import
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == info.name:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def test_every_exception_class_is_in_the_tree_or_named_outside_it_in_the_docstring() -> None:
    classes = _gateway_exception_classes()
    assert "gateway.security.crypto.DecryptionError" in classes
    outside = {name for name, cls in classes.items() if not issubclass(cls, GatewayError)}
    doc = errors.__doc__ or ""
    for name in outside:
        assert f"``{name}``" in doc, f"{name} is outside GatewayError without a stated reason in gateway.errors"
    for name, cls in classes.items():
        if issubclass(cls, GatewayError) and cls is not GatewayError:
            assert cls.__name__ in doc, f"{name} is missing from the tree drawn in gateway.errors"


def test_no_error_class_of_the_tree_is_dead() -> None:
    """Each error a module declares is raised (or referenced) somewhere else in the service."""
    sources = {p: p.read_text(encoding="utf-8") for p in GATEWAY.rglob("*.py")}
    for name, cls in _gateway_exception_classes().items():
        if cls.__subclasses__():
            continue  # a base class: handlers and callers catch it
        home = Path(inspect.getfile(cls))
        used = any(re.search(rf"\b{cls.__name__}\b", text) for path, text in sources.items() if path != home)
        raised_at_home = re.search(rf"raise {cls.__name__}\b", sources[home]) is not None
        assert used or raised_at_home, f"{name} is never raised nor used"


def test_a_decryption_error_is_a_500_problem_that_does_not_show_the_diagnostic() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise DecryptionError("data key dk-secret-id does not unwrap (wrong master key or tampered)")

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/boom")

    with capture_logs() as logs:
        response = asyncio.run(call())
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == PROBLEM_BASE + "decryption"
    assert "dk-secret-id" not in response.text
    # operators see the diagnostic in the logs
    assert [(e["event"], e["error_type"]) for e in logs if e["log_level"] == "error"] == [
        ("gateway_error", "DecryptionError")
    ]
    assert "dk-secret-id" in logs[-1]["diagnostic"]
