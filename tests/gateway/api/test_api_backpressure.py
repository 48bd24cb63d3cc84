"""Back-pressure: the API refuses work it cannot take (queue too deep: 503; one client too fast:
429; the database saturated: 503), always with ``Retry-After``, and never accepts (202) what it did
not store."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from gateway.app import create_app
from gateway.runtime import Runtime
from gateway.security.crypto import KeyRing
from gateway.settings import Settings
from tests.gateway.api.live import Api, LiveServer
from tests.gateway.api.support import bearer, count_rows, note, post_note


def _runtime(session_factory: sessionmaker[Session], keyring: KeyRing, **settings: Any) -> Runtime:
    engine = session_factory.kw["bind"]
    config = Settings(
        profile="dev",
        database_url=engine.url.render_as_string(hide_password=False),
        embedded_worker=False,
        log_level="WARNING",
        **settings,
    )
    return Runtime(settings=config, engine=engine, session_factory=session_factory, keyring=keyring)


@pytest.fixture
def serve(live_server: LiveServer) -> Any:
    clients: list[Api] = []

    def install(app: FastAPI) -> Api:
        live_server.install(app)
        api = Api(live_server.base_url)
        clients.append(api)
        return api

    yield install
    for api in clients:
        api.close()
    live_server.install(None)


def _retry_after(response: Any, status: int) -> int:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    value = int(response.headers["retry-after"])
    assert value >= 1
    return value


def test_a_queue_deeper_than_the_limit_is_a_503(
    serve: Any, session_factory: sessionmaker[Session], keyring: KeyRing, tenant: Any
) -> None:
    runtime = _runtime(session_factory, keyring, max_queue_depth=2, queue_depth_cache_seconds=0)
    client = serve(create_app(runtime))
    for n in range(2):
        assert post_note(client, tenant.api_key, note(tenant.finess, person_ref=f"P-{n}")).status_code == 202
    before = count_rows(session_factory)
    refused = post_note(client, tenant.api_key, note(tenant.finess, person_ref="P-9"))
    _retry_after(refused, 503)
    assert refused.json()["type"].endswith("/overloaded")
    assert count_rows(session_factory) == before  # nothing stored, nothing audited
    # reading is still served
    assert client.get("/v1/submissions", headers=bearer(tenant.api_key)).status_code == 200


def test_a_client_over_its_rate_is_a_429_others_are_served(
    serve: Any, session_factory: sessionmaker[Session], keyring: KeyRing, tenant: Any, other_tenant: Any
) -> None:
    runtime = _runtime(session_factory, keyring, rate_limit_per_second=0.5, rate_limit_burst=3)
    client = serve(create_app(runtime))
    statuses = [client.get("/v1/submissions", headers=bearer(tenant.api_key)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    wait = _retry_after(client.get("/v1/submissions", headers=bearer(tenant.api_key)), 429)
    assert wait <= 2
    assert client.get("/v1/submissions", headers=bearer(other_tenant.api_key)).status_code == 200


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("SELECT 1", {}, Exception("database is locked")),
        PoolTimeout("QueuePool limit of size 5 overflow 10 reached"),
    ],
)
def test_a_saturated_database_is_a_503_with_retry_after(
    error: Exception, serve: Any, session_factory: sessionmaker[Session], keyring: KeyRing
) -> None:
    app = create_app(_runtime(session_factory, keyring))

    def saturated() -> None:
        raise error

    app.add_api_route("/saturated", saturated)
    response = serve(app).get("/saturated")
    _retry_after(response, 503)
    assert "locked" not in response.text and "QueuePool" not in response.text
