#!/usr/bin/env python3
"""MLLP listener throughput: messages acknowledged (AA) per second, each committed before its AA.

    .venv/bin/python bench/bench_mllp.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/bench_mllp.py --backend sqlite --messages 2000

A real ``dui-gateway sources`` process runs the routing file's ``mllp`` source against a scratch
database; N client connections (1 and 4 by default) each send PAM-FR ADT^A01 messages one after
the other over a real socket (send, wait for the ACK, send the next: what an HL7 sender does).
``--processes N`` runs N such processes sharing the port (the source's ``reuse_port``; their CPU
is summed). Every ACK must be AA; the count of stored messages is checked against the AAs at the end.
Prints msg/s per connection count, the listener's CPU time per message (user + system, from
``/proc/<pid>/stat``: unlike msg/s it barely moves when other jobs share the machine), the
clients' CPU per message (this process) and the machine's load (``os.getloadavg``); asserts
nothing about speed. Messages are built before the clock starts.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from connectors.hl7v2.mllp import frame, read_frame  # noqa: E402
from gateway.storage.models import InboundMessage  # noqa: E402
from tests.connectors.hl7v2.support import adt, msa  # noqa: E402
from tests.peers.gateway import Deployment, create_pg_database, drop_pg_database, provision  # noqa: E402
from tests.peers.net import free_port, wait_port  # noqa: E402

FINESS = "750000010"


def _cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client(port: int, frames: list[bytes], acked: list[int], errors: list[str]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ok = 0
        for data in frames:
            sock.sendall(data)
            code = msa(read_frame(sock))[0]
            if code == "AA":
                ok += 1
            else:
                errors.append(code)
        acked.append(ok)


def run(
    backend: str,
    *,
    messages: int,
    connections: list[int],
    pg_url: str | None,
    batch: bool,
    window_ms: float | None,
    processes: int = 1,
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dgw-bench-mllp-"))
    db_url = create_pg_database(pg_url) if backend == "postgresql" and pg_url else None
    dep = Deployment.create(tmp / "deployment", db_url=db_url)
    dep.env["DUI_GATEWAY_LOG_LEVEL"] = "WARNING"
    port = free_port()
    try:
        dep.migrate()
        provision(dep.db_url, finess=FINESS)
        settings: dict[str, object] = {"essms_finess": FINESS, "port": port, "group_commit": batch}
        if processes > 1:
            settings["reuse_port"] = True
        if window_ms is not None:
            settings["group_commit_window_ms"] = window_ms
        dep.write_routing(
            {
                "sources": {
                    "hospital-adt": {
                        "source": "mllp",
                        "tenant": "e2e",
                        "settings": settings,
                    }
                }
            }
        )
        procs = []
        for k in range(processes):  # with reuse_port, the kernel spreads the connections among them
            procs.append(dep.spawn(f"sources-{k}", "sources"))
            time.sleep(0.5 if k + 1 < processes else 0)
        for p in procs:
            wait_port(port, alive=p.alive, timeout=60)
        time.sleep(1.0 if processes > 1 else 0)  # every process listens before the clients connect
        total_acked = 0
        warm: list[int] = []
        _client(port, [frame(adt("A01", control_id=f"warm-{i}", movement=f"W{i}")) for i in range(100)], warm, [])
        for n in connections:
            acked: list[int] = []
            errors: list[str] = []
            per = messages // n
            batches = [
                [frame(adt("A01", control_id=f"c{n}-{k}-{i}", movement=f"Mc{n}-{k}-{i}")) for i in range(per)]
                for k in range(n)
            ]
            threads = [threading.Thread(target=_client, args=(port, b, acked, errors)) for b in batches]
            cpu_before = sum(_cpu_seconds(p.pid) for p in procs)
            own_before = time.process_time()
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started
            listener_cpu = sum(_cpu_seconds(p.pid) for p in procs) - cpu_before
            client_cpu = time.process_time() - own_before
            load = os.getloadavg()
            total = sum(acked)
            total_acked += total
            print(
                f"{backend:<10} processes={processes} connections={n} messages={total} AA in {elapsed:.2f}s"
                f" -> {total / elapsed:,.0f} msg/s"
                f"  listener CPU {1000 * listener_cpu / max(total, 1):.3f} ms/msg,"
                f" clients CPU {1000 * client_cpu / max(total, 1):.3f} ms/msg"
                f"  (errors={len(errors)}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} cpus)"
            )
        with dep.engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(InboundMessage)).scalar_one()
        total_acked += sum(warm)
        print(f"stored {stored} messages (every AA'd message is stored: {stored >= total_acked})")
    finally:
        dep.close()
        if db_url:
            drop_pg_database(db_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--pg-url", default=os.environ.get("DUI_GATEWAY_TEST_PG_URL"))
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--connections", default="1,4")
    parser.add_argument("--no-group-commit", action="store_true", help="one transaction per message")
    parser.add_argument("--processes", type=int, default=1, help="listener processes sharing the port (reuse_port)")
    parser.add_argument("--window-ms", type=float, help="the source's group_commit_window_ms (default: its default)")
    args = parser.parse_args()
    if args.backend == "postgresql" and not args.pg_url:
        parser.error("--pg-url (or DUI_GATEWAY_TEST_PG_URL) is needed for PostgreSQL")
    run(
        args.backend,
        messages=args.messages,
        connections=[int(c) for c in args.connections.split(",")],
        pg_url=args.pg_url,
        batch=not args.no_group_commit,
        window_ms=args.window_ms,
        processes=args.processes,
    )


if __name__ == "__main__":
    main()
