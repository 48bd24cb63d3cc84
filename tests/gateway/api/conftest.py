"""API fixtures: a Runtime on the test database, the app, clients for two tenants, and helpers
to put a submission into the states the pipeline and the delivery engine would leave it in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

import mappings
from gateway.app import create_app
from gateway.runtime import Runtime
from gateway.security.clients import add_essms, create_api_client, create_tenant
from gateway.security.crypto import KeyRing
from gateway.settings import Settings
from gateway.storage.db import session_scope
from tests.gateway.api.live import Api, LiveServer
from tests.gateway.api.support import ADMIN_TOKEN, MAX_BODY, TEST_FINESS_2
from tests.support.doctype import NOTE


@pytest.fixture(autouse=True, scope="session")
def _note_document_type() -> Iterator[None]:
    mappings.register(NOTE)
    yield
    mappings.unregister(NOTE.code)


@pytest.fixture
def runtime(session_factory: sessionmaker[Session], keyring: KeyRing) -> Iterator[Runtime]:
    engine = session_factory.kw["bind"]
    settings = Settings(
        profile="dev",
        database_url=engine.url.render_as_string(hide_password=False),
        embedded_worker=False,
        max_body_bytes=MAX_BODY,
        admin_token=ADMIN_TOKEN,
        log_json=True,
        log_level="WARNING",
    )
    rt = Runtime(settings=settings, engine=engine, session_factory=session_factory, keyring=keyring)
    yield rt
    rt.stop_workers()


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime)


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    server = LiveServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(app: FastAPI, live_server: LiveServer) -> Iterator[Api]:
    """A real HTTP client of this test's app (served by uvicorn on 127.0.0.1)."""
    live_server.install(app)
    api = Api(live_server.base_url)
    yield api
    api.close()
    live_server.install(None)


@dataclass(frozen=True)
class OtherTenant:
    id: str
    finess: str
    client_id: str
    api_key: str


@pytest.fixture
def other_tenant(session_factory: sessionmaker[Session]) -> OtherTenant:
    """A second organisation owning FINESS 750000028, with its own API client."""
    with session_scope(session_factory) as session:
        t = create_tenant(session, code="og-autre", name="Autre organisme")
        essms = add_essms(session, tenant_id=t.id, finess=TEST_FINESS_2, name="Autre EHPAD", category="500")
        c, key = create_api_client(session, tenant_id=t.id, name="Autre DUI")
        return OtherTenant(id=t.id, finess=essms.finess, client_id=c.id, api_key=key)


@pytest.fixture
def auditor_key(session_factory: sessionmaker[Session], tenant: Any) -> str:
    """An API key of the tenant holding the 'admin' scope (may export the audit trail)."""
    with session_scope(session_factory) as session:
        _, key = create_api_client(session, tenant_id=tenant.id, name="DPO", scopes="read admin")
        return key
