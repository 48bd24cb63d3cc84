"""Security suites reuse the API fixtures (runtime, app on a live uvicorn server, two tenants),
and add OAuth2 clients: an API client with a client secret, for each tenant."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway.security.clients import create_api_client
from gateway.security.oauth import create_client_secret
from gateway.storage.db import session_scope
from tests.gateway.api.conftest import (  # noqa: F401 - fixtures
    _note_document_type,
    app,
    client,
    live_server,
    other_tenant,
    runtime,
)


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    secret: str
    tenant_id: str


def make_oauth_client(
    session_factory: sessionmaker[Session], tenant_id: str, scopes: str = "submit read", name: str = "DUI OAuth"
) -> OAuthClient:
    with session_scope(session_factory) as session:
        c, _key = create_api_client(session, tenant_id=tenant_id, name=name, scopes=scopes)
        _, secret = create_client_secret(session, client_id=c.id)
        return OAuthClient(client_id=c.id, secret=secret, tenant_id=tenant_id)


@pytest.fixture
def oauth_client(session_factory: sessionmaker[Session], tenant: object) -> OAuthClient:
    return make_oauth_client(session_factory, tenant.id)  # type: ignore[attr-defined]
