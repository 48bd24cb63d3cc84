"""ACK after durability, proved by killing: a real ``dui-gateway sources`` process runs the ``mllp``
listener on PostgreSQL (SQLite when it is not reachable); four connections send ADT messages
without pause; the process is SIGKILLed while messages are in flight (received, not yet
acknowledged). Every message that got an AA must be in the database; a restarted listener
acknowledges the resends of the unacknowledged ones, and stores each message once."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select

from connectors.hl7v2.mllp import frame, read_frame
from gateway.storage.models import InboundMessage
from tests.connectors.hl7v2.support import adt, msa
from tests.peers.gateway import Deployment, create_pg_database, drop_pg_database, provision
from tests.peers.net import free_port, wait_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
FINESS = "750000010"


def _pg_url() -> str | None:
    url = os.environ.get("DUI_GATEWAY_TEST_PG_URL")
    if not url:
        return None
    try:
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return url
    except psycopg.OperationalError:
        return None


def test_every_aa_survives_a_kill_between_receipt_and_ack(tmp_path: Path) -> None:
    pg = _pg_url()
    db_url = create_pg_database(pg) if pg else None
    dep = Deployment.create(tmp_path / "deployment", db_url=db_url)
    port = free_port()
    acked: set[str] = set()
    unanswered: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    try:
        dep.migrate()
        provision(dep.db_url, finess=FINESS)
        dep.write_routing(
            {
                "sources": {
                    "hospital-adt": {
                        "source": "mllp",
                        "tenant": "e2e",
                        "settings": {"essms_finess": FINESS, "port": port},
                    }
                }
            }
        )
        proc = dep.spawn("sources", "sources")
        wait_port(port, alive=proc.alive, timeout=60)

        def client(n: int) -> None:
            i = 0
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                    while not stop.is_set():
                        cid = f"K{n}-{i}"
                        i += 1
                        with lock:
                            unanswered.add(cid)
                        sock.sendall(frame(adt("A01", control_id=cid, movement=cid)))
                        answer = read_frame(sock)
                        with lock:
                            unanswered.discard(cid)
                            if msa(answer)[0] == "AA":
                                acked.add(cid)
            except (OSError, ConnectionError):
                return  # the listener was killed

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if len(acked) >= 60:
                    break
            time.sleep(0.01)
        proc.kill()  # SIGKILL: no shutdown, whatever is between receipt and ACK stays there
        stop.set()
        for t in threads:
            t.join(30)
        assert len(acked) >= 60, dep.logs()
        in_flight = set(unanswered)
        assert in_flight, "the kill should catch messages sent and not yet acknowledged"

        with dep.engine.connect() as conn:
            stored = {row[0].rsplit("|", 1)[1] for row in conn.execute(select(InboundMessage.external_id))}
        assert acked <= stored, f"{len(acked - stored)} AA'd messages are not stored"

        # the sender resends what got no answer: a new listener acknowledges each, stores each once
        proc2 = dep.spawn("sources-2", "sources")
        wait_port(port, alive=proc2.alive, timeout=60)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            for cid in sorted(in_flight):
                sock.sendall(frame(adt("A01", control_id=cid, movement=cid)))
                assert msa(read_frame(sock))[0] == "AA"
        with dep.engine.connect() as conn:
            ids = [row[0] for row in conn.execute(select(InboundMessage.external_id))]
        assert len(ids) == len(set(ids))
        assert acked | in_flight <= {i.rsplit("|", 1)[1] for i in ids}
    finally:
        stop.set()
        dep.close()
        if db_url:
            drop_pg_database(db_url)
