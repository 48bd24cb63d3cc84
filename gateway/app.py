"""The FastAPI application: ``create_app(runtime)`` assembles routers, middleware, error
handlers, metrics and the lifespan (embedded workers started and drained).

``uvicorn --factory gateway.app:create_app`` builds the runtime from the environment.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, cast

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from prometheus_client.registry import CollectorRegistry
from pydantic import BaseModel, ConfigDict, create_model
from pydantic.json_schema import models_json_schema

from gateway.api import ROUTERS, fhir
from gateway.api.limits import QueueGuard, RateLimiter
from gateway.api.metrics import CircuitCollector, CredentialsCollector, DatabaseCollector
from gateway.api.middleware import BodyLimitMiddleware, CorrelationIdMiddleware
from gateway.api.problems import fix_openapi_problems, install_error_handlers, register_error_renderer
from gateway.api.submissions import SubmissionEnvelope
from gateway.logging import configure_logging, get_logger
from gateway.runtime import Runtime
from gateway.services.group_commit import GroupCommitter
from gateway.settings import Settings, get_settings
from gateway.storage.db import serving_loop
from mappings import registry

__all__ = ["create_app", "openapi_document"]

_log = get_logger(__name__)

# Routers written elsewhere, included when their module exists: (module, attribute).

_DESCRIPTION = """\
Interoperability gateway for French ESSMS: a DUI sends a record (e.g. a DLU), the gateway
turns it into CI-SIS documents (CDA R2, FHIR R4), checks them and delivers them (DMP,
MSSanté, ViaTrajectoire, SIDOBA...).

Authentication: `Authorization: Bearer <access token>` (OAuth2 client credentials,
`POST /oauth/token`) or `Bearer <API key>`; each route needs a scope (`submissions:write`,
`submissions:read`, `fhir:read`, `audit:read`, `admin`). Errors are RFC 9457
`application/problem+json` documents; validation errors list JSON pointers into the body.
"""


def _version() -> str:
    try:
        return version("dui-gateway")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0.0.0"


def _camel(code: str) -> str:
    return "".join(part.capitalize() for part in code.replace("_", "-").split("-"))


def submission_request_schemas() -> dict[str, Any]:
    """JSON Schemas of the request body: one variant per registered document type.

    ``SubmissionRequest`` is a ``oneOf`` discriminated by ``document_type``; each variant
    embeds the document type's record model, so the DLU record schema is published.
    """
    variants: list[tuple[str, type[BaseModel]]] = []
    for code in registry.public_codes():
        doc = registry.get(code)
        if doc is None:
            continue
        model = create_model(
            f"{_camel(code)}Submission",
            __config__=ConfigDict(extra="forbid"),
            __doc__=f"A {code!r} submission: the document type and its DUI record.",
            document_type=(cast(Any, Literal)[code], ...),
            record=(doc.record_model, ...),
        )
        variants.append((code, model))
    if not variants:
        return {"SubmissionRequest": SubmissionEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")}
    _, top = models_json_schema(
        [(model, "validation") for _, model in variants], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    refs = {code: f"#/components/schemas/{model.__name__}" for code, model in variants}
    schemas["SubmissionRequest"] = {
        "title": "SubmissionRequest",
        "description": "A DUI record and its document type.",
        "oneOf": [{"$ref": ref} for ref in refs.values()],
        "discriminator": {"propertyName": "document_type", "mapping": refs},
    }
    return schemas


def _add_request_examples(schema: dict[str, Any]) -> None:
    """Valid request examples (the fictitious demo records), so that clients and schema-driven
    testers (schemathesis) reach the success paths, not only the validation errors."""
    operation = schema.get("paths", {}).get("/v1/submissions", {}).get("post")
    if operation is None:
        return
    examples: dict[str, Any] = {}
    folder = resources.files("gateway.demo_data")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json") and registry.get("dlu") is not None:
            name = entry.name.removesuffix(".json")
            record = json.loads(entry.read_text(encoding="utf-8"))
            examples[name] = {"summary": f"demo DLU {name}", "value": {"document_type": "dlu", "record": record}}
    if examples:
        operation["requestBody"]["content"]["application/json"]["examples"] = examples


def _openapi_factory(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        from gateway.api.stays import request_schemas

        for name, value in {**submission_request_schemas(), **request_schemas()}.items():
            if name in components and components[name] != value:
                raise RuntimeError(f"OpenAPI schema name clash: a record model and the API both define {name!r}")
            components[name] = value
        fix_openapi_problems(schema)
        fhir.fix_openapi(schema)
        _add_request_examples(schema)
        app.openapi_schema = schema
        return schema

    return openapi


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime: Runtime | None = app.state.runtime
    if runtime is not None and runtime.settings.embedded_worker:
        try:
            await run_in_threadpool(runtime.start_workers)
            _log.info("embedded_workers_started", concurrency=runtime.settings.worker_concurrency)
        except ModuleNotFoundError as exc:
            if exc.name != "gateway.worker":
                raise
            _log.warning("embedded_workers_unavailable", reason="gateway.worker is not installed")
    # the document types are imported now, not by the first submission (validated on the event loop)
    await run_in_threadpool(registry.codes)
    loop = asyncio.get_running_loop()
    serving_loop(loop)  # from here on, a coroutine writing to SQLite directly is refused (storage.db)
    try:
        yield
    finally:
        serving_loop(loop, serving=False)
        committer: GroupCommitter | None = getattr(app.state, "intake_committer", None)
        if committer is not None:
            await run_in_threadpool(committer.close)  # the submissions handed over are committed
        if runtime is not None:
            await run_in_threadpool(runtime.stop_workers)  # drains in-flight deliveries


def _include_fhir_facade(app: FastAPI) -> None:
    app.include_router(fhir.router)
    register_error_renderer(app, fhir.PREFIX, fhir.error_response)


def _build(runtime: Runtime | None, settings: Settings) -> FastAPI:
    app = FastAPI(
        title="dui-gateway",
        version=_version(),
        description=_DESCRIPTION,
        lifespan=_lifespan,
        docs_url=None,  # served with local assets by gateway.console.apidocs (no CDN)
        redoc_url=None,
        openapi_tags=[
            {"name": "oauth", "description": "OAuth2 client credentials: access tokens for API clients"},
            {"name": "submissions", "description": "Submit DUI records and follow them"},
            {"name": "deliveries", "description": "Act on deliveries to destinations"},
            {"name": "persons", "description": "Inbound events about persons not matched yet, and linking them"},
            {"name": "indicators", "description": "Stay events in, activity indicators out (SIDOBA, tableau de bord)"},
            {"name": "audit", "description": "Audit trail as FHIR AuditEvent"},
            {"name": "admin", "description": "Tenants, ESSMS, API clients, credentials, routing rules"},
            {"name": "health", "description": "Liveness and readiness"},
            {"name": "metrics", "description": "Prometheus metrics"},
        ],
    )
    app.state.runtime = runtime
    app.state.error_renderers = []
    metrics_registry = CollectorRegistry(auto_describe=False)
    if runtime is not None:
        metrics_registry.register(DatabaseCollector(runtime.session_factory))
        metrics_registry.register(CircuitCollector(lambda: runtime.bulkheads))
        metrics_registry.register(CredentialsCollector(runtime))
    app.state.metrics_registry = metrics_registry
    app.state.rate_limiter = RateLimiter(rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst)
    app.state.queue_guard = (
        QueueGuard(
            runtime.session_factory,
            max_depth=settings.max_queue_depth,
            cache_seconds=settings.queue_depth_cache_seconds,
        )
        if runtime is not None
        else None
    )
    # submissions arriving together share one transaction (each still answered after the commit)
    app.state.intake_committer = GroupCommitter(runtime.session_factory) if runtime is not None else None
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    _include_fhir_facade(app)
    from gateway.console.apidocs import install_docs

    install_docs(app)
    if runtime is not None and settings.console_enabled:
        from gateway.console import install as install_console

        install_console(app, runtime)
    # Outermost first: the correlation id must exist before the body limit can refuse anything.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(CorrelationIdMiddleware)
    app.openapi = _openapi_factory(app)  # type: ignore[method-assign]
    return app


def create_app(runtime: Runtime | None = None) -> FastAPI:
    """The API application for this runtime (built from the environment's settings when None)."""
    if runtime is None:
        runtime = Runtime.from_settings(get_settings())
    configure_logging(runtime.settings)
    return _build(runtime, runtime.settings)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document, without a database or keys (for scripts/export_openapi.py)."""
    return _build(None, Settings.model_construct()).openapi()
