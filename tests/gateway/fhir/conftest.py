"""FHIR facade fixtures: a Runtime whose gate runs the CI-SIS kit, the app on a real uvicorn
server (127.0.0.1), and helpers to push PPA records through the real intake and pipeline."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy.orm import Session, sessionmaker

from gateway import pipeline
from gateway.app import create_app
from gateway.runtime import Runtime
from gateway.security.clients import create_api_client
from gateway.security.crypto import KeyRing
from gateway.settings import Settings
from gateway.storage.db import session_scope
from tests.gateway.api.live import LiveServer

ADMIN_TOKEN = "admin-token-for-fhir-tests-0123456789"
FIXTURE = Path(__file__).parents[2] / "resources" / "records" / "ppa-ehpad.json"


@pytest.fixture
def runtime(session_factory: sessionmaker[Session], keyring: KeyRing, kit_dir: Path) -> Iterator[Runtime]:
    engine = session_factory.kw["bind"]
    settings = Settings(
        profile="dev",
        database_url=engine.url.render_as_string(hide_password=False),
        embedded_worker=False,
        admin_token=ADMIN_TOKEN,
        log_json=True,
        log_level="WARNING",
        CISIS_KIT_DIR=kit_dir,
    )
    rt = Runtime(settings=settings, engine=engine, session_factory=session_factory, keyring=keyring)
    yield rt
    rt.stop_workers()


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    server = LiveServer()
    server.start()
    yield server
    server.stop()


class Facade:
    """The app served on 127.0.0.1, with the tenant's API key."""

    def __init__(self, base_url: str, api_key: str, runtime: Runtime) -> None:
        self.base_url = base_url
        self.fhir_base = base_url + "/fhir/r4"
        self.api_key = api_key
        self.runtime = runtime
        self.http = requests.Session()

    def get(self, path: str, *, key: str | None = None, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if key != "":
            headers.setdefault("Authorization", f"Bearer {key or self.api_key}")
        return self.http.get(self.fhir_base + path, headers=headers, timeout=60, **kwargs)

    def post(self, path: str, body: Any, *, key: str | None = None) -> requests.Response:
        return self.http.post(
            self.fhir_base + path,
            data=json.dumps(body),
            headers={"Authorization": f"Bearer {key or self.api_key}", "Content-Type": "application/fhir+json"},
            timeout=60,
        )

    def submit_ppa(self, record: dict[str, Any]) -> str:
        """POST the PPA record to /v1/submissions and run the pipeline on it; the submission id."""
        return self.submit("ppa", record)

    def submit(self, document_type: str, record: dict[str, Any]) -> str:
        """POST the record to /v1/submissions and run the pipeline on it; the submission id."""
        response = self.http.post(
            self.base_url + "/v1/submissions",
            json={"document_type": document_type, "record": record},
            headers={"Authorization": f"Bearer {self.api_key}", "Idempotency-Key": str(uuid.uuid4())},
            timeout=60,
        )
        assert response.status_code == 202, response.text
        assert pipeline.process_next(self.runtime, worker_id="test-worker")
        submission_id: str = response.json()["id"]
        status = self.http.get(
            f"{self.base_url}/v1/submissions/{submission_id}",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=60,
        ).json()
        assert status["status"] in ("routed", "delivered"), status
        return submission_id

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def facade(runtime: Runtime, live_server: LiveServer, tenant: Any) -> Iterator[Facade]:
    live_server.install(create_app(runtime))
    api = Facade(live_server.base_url, tenant.api_key, runtime)
    yield api
    api.close()
    live_server.install(None)


@pytest.fixture
def ppa_record(tenant: Any) -> dict[str, Any]:
    """The PPA fixture record, for the tenant's ESSMS."""
    record: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    record["essms"]["finess"] = tenant.finess
    return record


@pytest.fixture
def auditor_key(session_factory: sessionmaker[Session], tenant: Any) -> str:
    with session_scope(session_factory) as session:
        _, key = create_api_client(session, tenant_id=tenant.id, name="DPO", scopes="read admin")
        return key


@pytest.fixture
def other_key(session_factory: sessionmaker[Session]) -> str:
    """An API key of another organisation (own ESSMS 750000028)."""
    from gateway.security.clients import add_essms, create_tenant

    with session_scope(session_factory) as session:
        other = create_tenant(session, code="og-autre", name="Autre organisme")
        add_essms(session, tenant_id=other.id, finess="750000028", name="Autre EHPAD", category="500")
        _, key = create_api_client(session, tenant_id=other.id, name="Autre DUI")
        return key
