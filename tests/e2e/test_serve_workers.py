"""``dui-gateway serve --workers 2`` on PostgreSQL: two API processes on one port, every 202 durable."""

from __future__ import annotations

import copy
import json
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from gateway.storage.models import AuditEvent, Submission
from tests.peers.gateway import DEMO_FINESS, Deployment, create_pg_database, drop_pg_database, provision
from tests.peers.net import free_port, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]


def _record(n: int) -> dict[str, Any]:
    base = json.loads(
        resources.files("gateway.demo_data").joinpath("01-dlu-qualified-ins.json").read_text(encoding="utf-8")
    )
    record = copy.deepcopy(base)
    first13 = f"2380375{n:06d}"
    record["person"]["local_id"] = f"SW-{n}"
    record["person"]["ins"]["matricule"] = f"{first13}{97 - int(first13) % 97:02d}"
    return record


def _children(pid: int) -> list[int]:
    """The API processes uvicorn spawned (not multiprocessing's resource tracker)."""
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            out.append(int(child))
    return out


def test_two_api_processes_accept_concurrent_submissions_durably(tmp_path: Path, pg_url: str) -> None:
    url = create_pg_database(pg_url)
    dep = Deployment.create(tmp_path / "deployment", db_url=url)
    try:
        dep.migrate()
        tenant = provision(dep.db_url, finess=DEMO_FINESS)
        port = free_port()
        proc = dep.spawn(
            "api", "serve", "--port", str(port), "--workers", "2", env={"DUI_GATEWAY_EMBEDDED_WORKER": "false"}
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", alive=proc.alive, timeout=120)
        deadline = time.monotonic() + 30
        while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_children(proc.pid)) == 2, "two API processes under the supervisor"

        def post(n: int) -> requests.Response:
            return requests.post(
                f"{base}/v1/submissions",
                json={"document_type": "dlu", "record": _record(n)},
                headers={"Authorization": f"Bearer {tenant.api_key}", "Idempotency-Key": f"sw-{n}"},
                timeout=60,
            )

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, [*range(40), *range(10)]))  # the last 10 are replays
        assert [a.status_code for a in answers] == [202] * 50
        ids = {a.json()["id"] for a in answers}
        assert len(ids) == 40
        assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) >= 10
        refused = requests.post(
            f"{base}/v1/submissions",
            json={
                "document_type": "dlu",
                "record": {**_record(99), "essms": {**_record(99)["essms"], "finess": "750000010"}},
            },
            headers={"Authorization": f"Bearer {tenant.api_key}"},
            timeout=60,
        )
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        with dep.engine.connect() as conn:
            stored = set(conn.execute(select(Submission.id)).scalars())
            received = conn.execute(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "received")
            ).scalar_one()
        assert stored == ids and received == 40
    finally:
        dep.close()
        drop_pg_database(url)
