#!/usr/bin/env python3
"""Real DLUs through real processes: how fast do ``dui-gateway worker`` processes turn a queue of
accepted DLUs into deliveries at the sandbox receiver, on PostgreSQL (or SQLite)?

    .venv/bin/python bench/bench_pg_e2e.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        --documents 200 --workers 1 2

What runs: a scratch database (migrated, never ANALYZEd: the fresh-database case of issue 15),
one API process (``dui-gateway serve``), the sandbox receiver, the demo record
``gateway/demo_data/01-dlu-qualified-ins.json`` for ``--documents`` distinct persons POSTed through
HTTP while no worker runs; then N ``dui-gateway worker`` processes start and the clock runs until
every delivery is delivered: pipeline (record validation, mapping, CI-SIS, FHIR profiles,
routing) + delivery, DLU/s = documents / drain time. The CPU per DLU is printed twice: over the
whole life of the worker processes (start-up and the first compilation of the CI-SIS rules and
FHIR profiles included: a few seconds per process, a large share with a few hundred DLUs), and
in the steady state, from the moment 10 % of the DLUs were delivered. With ``--sqlite``: the embedded mode, one
API process whose own worker threads drain the queue. The load average is printed next to each
figure, since the machine may be shared. Needs ``CISIS_KIT_DIR``. Asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402

from gateway.storage.models import Delivery  # noqa: E402
from tests.peers.gateway import (  # noqa: E402
    Deployment,
    create_pg_database,
    drop_pg_database,
    provision,
    webhook_routing,
)

FINESS = "750000010"
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


RECORD = ROOT / "gateway" / "demo_data" / "01-dlu-qualified-ins.json"


def _records(count: int) -> list[dict[str, object]]:
    base = json.loads(RECORD.read_text(encoding="utf-8"))
    base["essms"]["finess"] = FINESS
    base["essms"].pop("legal_entity_finess", None)
    out = []
    for i in range(count):
        rec = copy.deepcopy(base)
        rec["person"]["local_id"] = f"BENCH-P-{i:06d}"
        out.append(rec)
    return out


def run(*, pg_url: str | None, documents: int, workers: int, concurrency: int, embedded: bool = False) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dgw-bench-e2e-"))
    db_url = create_pg_database(pg_url) if pg_url else None
    dep = Deployment.create(tmp / "deployment", db_url=db_url)
    dep.env["DUI_GATEWAY_LOG_LEVEL"] = "WARNING"
    backend = "postgresql" if db_url else "sqlite"
    try:
        dep.migrate()
        tenant = provision(dep.db_url, finess=FINESS)
        sandbox = dep.start_sandbox()
        dep.write_routing(webhook_routing(sandbox.url, destinations={"bench": "webhook"}, document_types=["dlu"]))
        api = dep.start_api()
        posted = time.perf_counter()
        with requests.Session() as http:
            http.headers["Authorization"] = f"Bearer {tenant.api_key}"
            for rec in _records(documents):
                resp = http.post(
                    f"{api}/v1/submissions",
                    json={"document_type": "dlu", "record": rec},
                    headers={"Idempotency-Key": str(uuid.uuid4())},
                    timeout=60,
                )
                assert resp.status_code == 202, resp.text[:500]
        posted = time.perf_counter() - posted
        load_before = os.getloadavg()
        started = time.perf_counter()
        if embedded:
            # one process serving and working (the embedded mode): a second API with its workers
            dep.processes.pop().stop()  # stopped on purpose: not a process that died
            dep.env["DUI_GATEWAY_WORKER_CONCURRENCY"] = str(concurrency)
            dep.start_api("api-embedded", embedded_worker=True)
        else:
            for n in range(workers):
                dep.start_worker(f"worker-{n + 1}", worker_concurrency=str(concurrency))

        def delivered() -> int:
            with dep.engine.connect() as conn:
                return int(
                    conn.execute(
                        select(func.count()).select_from(Delivery).where(Delivery.status == "delivered")
                    ).scalar_one()
                )

        def pg_backends() -> dict[int, float]:
            if not db_url:
                return {}
            with dep.engine.connect() as conn:
                pids = conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalars()
                return {int(pid): _cpu_seconds(int(pid)) for pid in pids}

        workers_procs = dep.processes[-max(1, workers) :]
        # steady state: CPU from the moment `warm` DLUs were delivered (start-up, the first
        # compilation of the CI-SIS rules and FHIR profiles, and the idle tail left out)
        warm = max(1, min(documents // 2, max(10, documents // 10)))
        dep.wait_until(lambda: delivered() >= warm, timeout=warm * 2 + 120, what="warm-up delivered")
        warm_cpu = {p.proc.pid: _cpu_seconds(p.proc.pid) for p in workers_procs}
        warm_pg = pg_backends()
        warm_at = time.perf_counter()
        dep.wait_until(lambda: delivered() >= documents, timeout=documents * 2 + 120, what="all delivered")
        drain = time.perf_counter() - started
        steady_s = time.perf_counter() - warm_at
        load_after = os.getloadavg()
        # CPU per DLU, less sensitive than DLU/s to what else the machine runs: the worker
        # processes, and the PostgreSQL backends connected to this database (their pools)
        worker_cpu = sum(_cpu_seconds(p.proc.pid) for p in workers_procs)
        steady_worker = sum(_cpu_seconds(pid) - cpu for pid, cpu in warm_cpu.items())
        end_pg = pg_backends()
        backend_cpu = sum(end_pg.values())
        steady_pg = sum(cpu - warm_pg.get(pid, 0.0) for pid, cpu in end_pg.items())
        steady_n = max(1, documents - warm)
        mode = f"embedded 1x{concurrency}" if embedded else f"workers={workers}x{concurrency}"
        print(
            f"{backend:<10} DLUs={documents} {mode} "
            f"intake={documents / posted:.0f}/s drain={drain:.1f}s -> {documents / drain:.1f} DLU/s "
            f"CPU/DLU: workers {1000 * worker_cpu / documents:.0f} ms, "
            f"PG backends {1000 * backend_cpu / documents:.0f} ms; "
            f"steady state (after {warm} delivered): {steady_n / steady_s:.1f} DLU/s, "
            f"workers {1000 * steady_worker / steady_n:.1f} ms, PG {1000 * steady_pg / steady_n:.1f} ms "
            f"(load avg 1 min before/after: {load_before[0]:.1f}/{load_after[0]:.1f}) "
            f"accepted_at_receiver={len(sandbox.accepted())}",
            flush=True,
        )
    finally:
        dep.close()
        if db_url:
            drop_pg_database(db_url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", default=None, help="PostgreSQL URL (a scratch database is created next to it)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead: one process, API + embedded workers")
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker process counts to run")
    parser.add_argument("--concurrency", type=int, default=2, help="threads per worker process")
    args = parser.parse_args()
    if not args.sqlite and not args.pg_url:
        parser.error("--pg-url or --sqlite")
    for workers in [1] if args.sqlite else args.workers:
        run(
            pg_url=None if args.sqlite else args.pg_url,
            documents=args.documents,
            workers=workers,
            concurrency=args.concurrency,
            embedded=args.sqlite,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
