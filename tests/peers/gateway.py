"""A gateway deployment made of real processes: ``dui-gateway serve`` / ``worker`` / ``sandbox``.

Everything is configured through the environment, as an operator would (``DUI_GATEWAY_*``),
on free ports, under one temporary folder; every process is stopped by :meth:`Deployment.close`.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url

from gateway import pipeline
from gateway.runtime import Runtime
from gateway.security.clients import add_essms, create_api_client, create_tenant
from gateway.services import intake
from gateway.settings import Settings
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.models import ApiClient, Delivery, Submission
from mappings import registry
from tests.peers.net import free_port, wait_http
from tests.peers.process import ManagedProcess, dui_gateway_cmd
from tests.peers.sandbox import SandboxClient
from tests.support.doctype import NOTE

DEMO_FINESS = "759900004"  # the FINESS of gateway/demo_data records (fictitious, Luhn-valid)


def random_master_keys() -> str:
    return f"e2e:{base64.urlsafe_b64encode(os.urandom(32)).decode()}"


def webhook_routing(sandbox_url: str, *, destinations: Mapping[str, str], document_types: list[str]) -> dict[str, Any]:
    """A routing document sending ``document_types`` to webhook destinations ``{name: category}``."""
    return {
        "destinations": {
            name: {
                "connector": "webhook",
                "category": category,
                "settings": {
                    "url": f"{sandbox_url}/{name}",
                    "health_url": f"{sandbox_url}/_health",
                    "timeout": 10,
                    "signing": False,
                },
            }
            for name, category in destinations.items()
        },
        "rules": [{"name": "e2e", "document_types": document_types, "destinations": list(destinations)}],
    }


@dataclass(frozen=True)
class Provisioned:
    tenant_id: str
    tenant_code: str
    finess: str
    api_key: str


def provision(db_url: str, *, finess: str = DEMO_FINESS, code: str = "e2e") -> Provisioned:
    """A tenant with one ESSMS and one API client, written straight to the database."""
    engine = make_engine(db_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            tenant = create_tenant(session, code=code, name="Organisme e2e")
            add_essms(session, tenant_id=tenant.id, finess=finess, name="ESSMS e2e", category="500")
            _client, key = create_api_client(session, tenant_id=tenant.id, name="DUI e2e")
            return Provisioned(tenant_id=tenant.id, tenant_code=code, finess=finess, api_key=key)
    finally:
        engine.dispose()


# -- PostgreSQL scratch databases ----------------------------------------------------------------
def create_pg_database(pg_url: str) -> str:
    """A new empty database next to ``pg_url``; returns its URL (drop it with :func:`drop_pg_database`)."""
    name = f"dgw_e2e_{uuid.uuid4().hex[:12]}"
    admin = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')  # type: ignore[arg-type]


# -- the deployment ---------------------------------------------------------------------------
@dataclass
class Deployment:
    """Processes sharing one database, one routing file and one master key."""

    root: Path
    db_url: str
    env: dict[str, str] = field(default_factory=dict)
    processes: list[ManagedProcess] = field(default_factory=list)
    _engine: Engine | None = None

    @classmethod
    def create(cls, root: Path, *, db_url: str | None = None, **settings: str) -> Deployment:
        root.mkdir(parents=True, exist_ok=True)
        url = db_url or f"sqlite:///{root / 'gateway.db'}"
        env = {
            "DUI_GATEWAY_PROFILE": "test",
            "DUI_GATEWAY_MASTER_KEYS": random_master_keys(),
            "DUI_GATEWAY_AUDIT_KEYS": random_master_keys(),
            "DUI_GATEWAY_DATABASE_URL": url,
            "DUI_GATEWAY_LOG_JSON": "true",
            "DUI_GATEWAY_LOG_LEVEL": "INFO",
            "DUI_GATEWAY_POLL_INTERVAL_SECONDS": "0.1",
            "DUI_GATEWAY_BACKOFF_BASE_SECONDS": "0.2",
            "DUI_GATEWAY_BACKOFF_MAX_SECONDS": "2",
        }
        for key, value in settings.items():
            env[f"DUI_GATEWAY_{key.upper()}"] = value
        return cls(root=root, db_url=url, env=env)

    # processes
    def run(self, *args: str, timeout: float = 120) -> str:
        """Run a short ``dui-gateway`` command to completion; its output is returned (and kept)."""
        proc = self.spawn(f"cmd-{args[0]}-{len(self.processes)}", *args)
        try:
            proc.proc.wait(timeout=timeout)
        finally:
            proc.stop()
        if proc.proc.returncode != 0:
            raise RuntimeError(f"dui-gateway {' '.join(args)} exited {proc.proc.returncode}:\n{proc.output()}")
        return proc.output()

    def spawn(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> ManagedProcess:
        full_env = {**self.env, **(env or {})}
        proc = ManagedProcess(name, dui_gateway_cmd(*args), log_path=self.root / "logs" / f"{name}.log", env=full_env)
        self.processes.append(proc)
        return proc

    def migrate(self) -> None:
        self.run("migrate")

    def start_sandbox(self, name: str = "sandbox") -> SandboxClient:
        port = free_port()
        proc = self.spawn(name, "sandbox", "--port", str(port), "--db", str(self.root / f"{name}.db"))
        client = SandboxClient(f"http://127.0.0.1:{port}")
        wait_http(f"{client.url}/_health", alive=proc.alive)
        return client

    def write_routing(self, document: Mapping[str, Any]) -> Path:
        path = self.root / "routing.json"
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")
        self.env["DUI_GATEWAY_ROUTING_FILE"] = str(path)
        return path

    def start_api(self, name: str = "api", *, embedded_worker: bool = False) -> str:
        port = free_port()
        proc = self.spawn(
            name,
            "serve",
            "--port",
            str(port),
            env={"DUI_GATEWAY_EMBEDDED_WORKER": str(embedded_worker).lower()},
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", alive=proc.alive, timeout=60)
        return url

    def start_worker(self, name: str, **settings: str) -> ManagedProcess:
        return self.spawn(name, "worker", env={f"DUI_GATEWAY_{k.upper()}": v for k, v in settings.items()})

    def logs(self) -> str:
        return "\n".join(f"==> {p.name}\n{p.output()}" for p in self.processes)

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        if self._engine is not None:
            self._engine.dispose()

    # reading the shared database
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.db_url)
        return self._engine

    def deliveries(self) -> list[Delivery]:
        with make_sessionmaker(self.engine)() as session:
            return list(session.scalars(select(Delivery)))

    def submission_statuses(self) -> dict[str, int]:
        with make_sessionmaker(self.engine)() as session:
            rows = session.execute(select(Submission.status, func.count()).group_by(Submission.status)).all()
            return {status: count for status, count in rows}

    def wait_until(self, predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            for proc in self.processes:
                if not proc.name.startswith("cmd-") and not proc.killed and proc.proc.poll():
                    raise RuntimeError(f"{proc.name} died ({proc.proc.returncode}):\n{proc.output()[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"{what} not reached after {timeout}s: {self.submission_statuses()}")


def bulk_load_and_route(
    dep: Deployment, *, client_id: str, persons: int, versions: int, finess: str, routers: int = 3
) -> float:
    """Accept persons*versions submissions (intake service) and route them (pipeline), in-process."""
    registry.register(NOTE)
    settings = Settings(
        profile="test",
        database_url=dep.db_url,
        master_keys=dep.env["DUI_GATEWAY_MASTER_KEYS"],
        audit_keys=dep.env["DUI_GATEWAY_AUDIT_KEYS"],
        routing_file=Path(dep.env["DUI_GATEWAY_ROUTING_FILE"]),
        embedded_worker=False,
    )
    runtime = Runtime.from_settings(settings)
    started = time.perf_counter()
    try:
        for version in range(1, versions + 1):
            for start in range(0, persons, 100):
                with session_scope(runtime.session_factory) as session:
                    client = session.get(ApiClient, client_id)
                    assert client is not None
                    for p in range(start, min(start + 100, persons)):
                        record = {"person_ref": f"P{p:05d}", "essms_finess": finess, "text": f"version {version}"}
                        intake.submit(
                            session,
                            client=client,
                            document_type=NOTE.code,
                            record_json=record,
                            idempotency_key=f"bulk-{p}-{version}",
                            keyring=runtime.keyring,
                            correlation_id="bulk-load",
                        )

        def route(n: int) -> None:
            while pipeline.process_next(runtime, worker_id=f"bulk-router:{n}"):
                pass

        threads = [threading.Thread(target=route, args=(n,)) for n in range(routers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with runtime.session_factory() as session:
            assert session.scalar(select(func.count()).select_from(Delivery)) == persons * versions
        if runtime.engine.dialect.name == "postgresql":
            # After a bulk load, refresh the planner statistics as an operator would (autovacuum does it
            # eventually): with the empty-table estimates the claim query's anti-join goes quadratic.
            with runtime.engine.connect() as conn:
                conn.execute(text("ANALYZE")).close()
                conn.commit()
    finally:
        runtime.close()
        registry.unregister(NOTE.code)
    return time.perf_counter() - started


def post_submissions(
    api_url: str, api_key: str, records: Iterable[tuple[str, dict[str, Any]]], *, expect: int = 202
) -> list[str]:
    """POST each (document type, record) with its own Idempotency-Key; returns the submission ids."""
    ids = []
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {api_key}"
        for doc_type, record in records:
            resp = http.post(
                f"{api_url}/v1/submissions",
                json={"document_type": doc_type, "record": record},
                headers={"Idempotency-Key": f"e2e-{uuid.uuid4()}"},
                timeout=60,
            )
            assert resp.status_code == expect, resp.text[:2000]
            if expect == 202:
                ids.append(str(resp.json()["id"]))
    return ids
