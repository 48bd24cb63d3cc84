#!/usr/bin/env python3
"""Engine throughput: intake -> routing -> delivery to the sandbox receiver, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_engine.py                       # SQLite, 1 worker process
    .venv/bin/python bench/bench_engine.py --backend postgresql --workers 2 \\
        --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test

What is measured, with real processes (``dui-gateway worker`` x N, ``dui-gateway sandbox``):
- intake + routing: submissions accepted through the intake service and routed through the
  pipeline in this process (test-only document type: no CDA rendering, no conformance gate);
- drain: the worker processes deliver every delivery to the sandbox receiver (webhook connector);
- end-to-end latency per delivery: ``delivered_at - submission.created_at`` (includes the wait
  in the queue, so it grows with the batch size: read it with the batch size in mind).
Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from gateway.delivery.engine import as_utc  # noqa: E402
from gateway.logging import configure_logging  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from gateway.storage.models import ApiClient, Delivery, Submission  # noqa: E402
from tests.peers.gateway import (  # noqa: E402
    Deployment,
    bulk_load_and_route,
    create_pg_database,
    drop_pg_database,
    provision,
    webhook_routing,
)
from tests.support.doctype import NOTE  # noqa: E402

FINESS = "750000010"


def run(backend: str, *, persons: int, versions: int, workers: int, concurrency: int, pg_url: str | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dgw-bench-"))
    db_url = create_pg_database(pg_url) if backend == "postgresql" and pg_url else None
    dep = Deployment.create(tmp / "deployment", db_url=db_url)
    dep.env["DUI_GATEWAY_LOG_LEVEL"] = "WARNING"
    try:
        dep.migrate()
        provision(dep.db_url, finess=FINESS)
        sandbox = dep.start_sandbox()
        dep.write_routing(webhook_routing(sandbox.url, destinations={"bench": "webhook"}, document_types=[NOTE.code]))
        with dep.engine.connect() as conn:
            client_id = conn.execute(select(ApiClient.id)).scalar_one()
        total = persons * versions
        load = bulk_load_and_route(dep, client_id=client_id, persons=persons, versions=versions, finess=FINESS)
        started = time.perf_counter()
        for n in range(workers):
            dep.start_worker(f"worker-{n + 1}", worker_concurrency=str(concurrency))
        while True:
            with dep.engine.connect() as conn:
                done = conn.execute(
                    select(func.count()).select_from(Delivery).where(Delivery.status == "delivered")
                ).scalar_one()
            if done == total:
                break
            time.sleep(0.2)
        drain = time.perf_counter() - started
        with dep.engine.connect() as conn:
            rows = conn.execute(
                select(Delivery.delivered_at, Submission.created_at).join(
                    Submission, Submission.id == Delivery.submission_id
                )
            ).all()
        latencies = sorted((as_utc(d) - as_utc(c)).total_seconds() for d, c in rows if d is not None)
        accepted = len(sandbox.accepted())
        q = statistics.quantiles(latencies, n=100)
        print(
            f"{backend:<10} submissions={total} workers={workers}x{concurrency} "
            f"intake+route={load:.1f}s ({total / load:.0f}/s) drain={drain:.1f}s ({total / drain:.0f} deliveries/s) "
            f"latency p50={q[49]:.1f}s p95={q[94]:.1f}s max={latencies[-1]:.1f}s accepted_at_receiver={accepted}",
            flush=True,
        )
    finally:
        dep.close()
        if db_url:
            drop_pg_database(db_url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--persons", type=int, default=250, help="document series")
    parser.add_argument("--versions", type=int, default=4, help="versions per series")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default 1 SQLite, 2 PostgreSQL)")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker process")
    parser.add_argument("--pg-url", default=None, help="PostgreSQL URL (a scratch database is created next to it)")
    args = parser.parse_args()
    configure_logging(Settings(log_level="WARNING"))  # the in-process intake/routing stays quiet
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        if backend == "postgresql" and not args.pg_url:
            print("postgresql: skipped (no --pg-url)")
            continue
        workers = args.workers or (2 if backend == "postgresql" else 1)
        run(
            backend,
            persons=args.persons,
            versions=args.versions,
            workers=workers,
            concurrency=args.concurrency,
            pg_url=args.pg_url,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
