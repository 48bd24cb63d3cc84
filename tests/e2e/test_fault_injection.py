"""Fault injection with real processes: nothing accepted is lost, duplicated or reordered.

A PostgreSQL instance the test starts itself (``initdb`` + ``pg_ctl``, never the machine's shared
server), two API processes, two worker processes and the sandbox receiver. While DLU records (two
versions per person) are posted, the test: answers 500 from the destination, makes it slower than
the send deadline, stops it for a while (connections refused), SIGKILLs a worker and an API at
arbitrary points (replacements start), and restarts the database with ``pg_ctl restart -m
immediate`` (every open connection dies). The poster retries with the same ``Idempotency-Key``,
on the other API, until it gets its 202.

Afterwards: every submission the database holds (every accepted one among them) is delivered
exactly once per destination at the idempotent receiver, each person's versions in order, no dead
letter (every fault was transient), and ``dui-gateway audit verify`` passes.

Short by default (a few dozen documents); ``DUI_GATEWAY_FAULT_LONG=1`` runs 5,000 documents.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from gateway.storage.models import Attempt, Delivery, Submission
from tests.e2e.conftest import many_dlu, require_dlu
from tests.peers.gateway import Deployment, provision, webhook_routing
from tests.peers.net import free_port, wait_http
from tests.peers.sandbox import SandboxClient

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

LONG = os.environ.get("DUI_GATEWAY_FAULT_LONG") == "1"
PERSONS = 2500 if LONG else 30
VERSIONS = 2
DESTINATIONS = {"peer-a": "webhook", "peer-b": "webhook"}
SEND_TIMEOUT = 2.0  # the connector's deadline; the "slow" fault answers after 3 s
PG_BIN = Path("/usr/lib/postgresql/15/bin")


# -- a PostgreSQL of our own -------------------------------------------------------------------
@dataclass
class OwnPostgres:
    """A throw-away PostgreSQL cluster run as the ``postgres`` user on a free port."""

    root: Path
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=timeout)

    def pg_ctl(self, *args: str) -> None:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off",
            "-w",
            *args,
        )

    def create(self) -> None:
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.pg_ctl("start")

    def restart_immediately(self) -> None:
        """Every connection dies, in-flight transactions are lost (crash recovery on start)."""
        self.pg_ctl("-m", "immediate", "restart")

    def stop(self) -> None:
        try:
            self.pg_ctl("-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    if shutil.which("runuser") is None or not (PG_BIN / "initdb").exists():
        pytest.skip("needs PostgreSQL binaries and runuser to start a cluster of its own")
    root = Path(tempfile.mkdtemp(prefix="dgw-pg-"))
    shutil.chown(root, user="postgres", group="postgres")
    pg = OwnPostgres(root)
    try:
        pg.create()
    except (subprocess.CalledProcessError, LookupError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start a PostgreSQL cluster: {exc}")
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- posting through whichever API is up -------------------------------------------------------
@dataclass
class Poster:
    """Posts each record with its own Idempotency-Key, retrying (same key) on any API until a 202."""

    api_key: str
    apis: list[str]
    accepted: dict[str, str] = field(default_factory=dict)  # idempotency key -> submission id
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, record: dict[str, Any], *, deadline: float) -> None:
        key = f"fault-{uuid.uuid4()}"
        attempt = 0
        while time.monotonic() < deadline:
            with self.lock:
                api = self.apis[attempt % len(self.apis)]
            attempt += 1
            try:
                resp = requests.post(
                    f"{api}/v1/submissions",
                    json={"document_type": "dlu", "record": record},
                    headers={"Authorization": f"Bearer {self.api_key}", "Idempotency-Key": key},
                    timeout=20,
                )
            except requests.RequestException:
                resp = None
            if resp is not None and resp.status_code == 202:
                self.accepted[key] = resp.json()["id"]
                return
            assert resp is None or resp.status_code in (429, 500, 502, 503), resp.text[:500]
            self.retries += 1
            time.sleep(0.3)
        raise AssertionError(f"no API accepted {key} before the deadline")


def _versions(finess: str) -> list[list[dict[str, Any]]]:
    first = many_dlu(PERSONS, finess)
    second = []
    for record in first:
        update = copy.deepcopy(record)
        update["dlu"]["comment"] = "Mise à jour après réévaluation (version 2)."
        second.append(update)
    return [first, second]


def test_faults_everywhere_nothing_lost_duplicated_or_reordered(
    own_postgres: OwnPostgres, tmp_path: Path, kit_dir: Path
) -> None:
    require_dlu()
    dep = Deployment.create(
        tmp_path / "deployment",
        db_url=own_postgres.url,
        lease_seconds="4",
        max_attempts="200",
        worker_concurrency="3",
        backoff_base_seconds="0.2",
        backoff_max_seconds="2",
        breaker_cooldown_seconds="1",
    )
    try:
        _run(dep, own_postgres)
    finally:
        dep.close()


def _run(dep: Deployment, pg: OwnPostgres) -> None:
    rng = random.Random(20261130)
    dep.migrate()
    tenant = provision(dep.db_url)
    sandbox_port = free_port()
    sandbox_db = dep.root / "sandbox.db"

    def start_sandbox(name: str) -> Any:
        proc = dep.spawn(name, "sandbox", "--port", str(sandbox_port), "--db", str(sandbox_db))
        wait_http(f"http://127.0.0.1:{sandbox_port}/_health", alive=proc.alive)
        return proc

    sandbox_proc = start_sandbox("sandbox-1")
    sandbox = SandboxClient(f"http://127.0.0.1:{sandbox_port}")
    routing = webhook_routing(sandbox.url, destinations=DESTINATIONS, document_types=["dlu"])
    for destination in routing["destinations"].values():
        destination["settings"]["timeout"] = SEND_TIMEOUT
    dep.write_routing(routing)

    api_procs = {}
    urls = []
    for name in ("api-1", "api-2"):
        urls.append(dep.start_api(name))
        api_procs[name] = dep.processes[-1]
    workers = [dep.start_worker("worker-1"), dep.start_worker("worker-2")]
    poster = Poster(api_key=tenant.api_key, apis=list(urls))
    records = _versions(tenant.finess)
    deadline = time.monotonic() + (3600 if LONG else 600)

    def post_all() -> None:
        for batch in records:  # every first version, then every second version
            for record in batch:
                poster.post(record, deadline=deadline)

    posting = threading.Thread(target=post_all, daemon=True)
    posting.start()
    total = PERSONS * VERSIONS

    def when(fraction: float) -> None:  # posting progress
        dep.wait_until(lambda: len(poster.accepted) >= fraction * total, timeout=600, what=f"{fraction:.0%} posted")

    def delivered(fraction: float) -> None:  # delivery progress, at the receiver
        wanted = fraction * total * len(DESTINATIONS)
        dep.wait_until(lambda: len(sandbox.accepted()) >= wanted, timeout=600, what=f"{fraction:.0%} delivered")

    faults: list[str] = []
    # while records are posted: an API dies, the database restarts under everyone
    when(0.1 + rng.random() * 0.1)
    api_procs["api-1"].kill()  # mid-posting: the poster retries the same key on the other API
    with poster.lock:
        poster.apis.remove(urls[0])
    faults.append("api-1 SIGKILLed")
    replacement = dep.start_api("api-3")
    with poster.lock:
        poster.apis.append(replacement)
    when(0.3)
    pg.restart_immediately()
    faults.append("PostgreSQL restarted (-m immediate) while posting")
    # while documents are delivered: the destination fails, a worker dies, the peer is slow, then down
    delivered(0.05)
    sandbox.control(fail_next=8, status=500)
    faults.append("destination answers 500 x8")
    delivered(0.2)
    workers[0].kill()
    faults.append("worker-1 SIGKILLed")
    workers.append(dep.start_worker("worker-3"))
    delivered(0.35)
    sandbox.control(delay=SEND_TIMEOUT + 1)
    time.sleep(4)
    sandbox.control(delay=0)
    faults.append("destination slower than the send deadline for 4 s")
    delivered(0.5)
    pg.restart_immediately()
    faults.append("PostgreSQL restarted (-m immediate) while delivering")
    delivered(0.6)
    sandbox_proc.kill()
    time.sleep(3)
    sandbox_proc = start_sandbox("sandbox-2")
    faults.append("destination down for 3 s")
    posting.join(timeout=max(1.0, deadline - time.monotonic()))
    assert not posting.is_alive(), "posting did not finish"
    assert len(poster.accepted) == total

    def settled() -> bool:
        with dep.engine.connect() as conn:
            open_submissions = conn.execute(
                select(func.count())
                .select_from(Submission)
                .where(Submission.status.in_(("received", "processing", "routed", "partially_failed")))
            ).scalar_one()
            undelivered = conn.execute(
                select(func.count()).select_from(Delivery).where(Delivery.status != "delivered")
            ).scalar_one()
        return open_submissions == 0 and undelivered == 0

    dep.wait_until(settled, timeout=3600 if LONG else 600, what="every delivery delivered")

    with dep.engine.connect() as conn:
        submissions = dict(conn.execute(select(Submission.id, Submission.status)).all())
        deliveries = conn.execute(select(Delivery.id, Delivery.status)).all()
    assert set(poster.accepted.values()) <= set(submissions), "an accepted submission is missing"
    assert len(submissions) == total, "one submission per idempotency key, retries included"
    assert set(submissions.values()) == {"delivered"}, Counter(submissions.values())
    assert {status for _, status in deliveries} == {"delivered"}, "no dead letter: every fault was transient"
    assert len(deliveries) == total * len(DESTINATIONS)

    accepted = sandbox.accepted()
    per_delivery = Counter(r["headers"].get("X-Dui-Delivery-Id") for r in accepted)
    assert per_delivery == Counter(dict.fromkeys((d for d, _ in deliveries), 1)), "exactly once per delivery"
    series: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in sorted(accepted, key=lambda r: r["n"]):
        for doc in r["documents"]:
            series[(r["path"], doc["set_id"])].append(int(doc["version"]))
    assert series and all(v == sorted(v) for v in series.values()), "a newer version arrived first"
    # the faults were felt: failed and timed-out attempts were recorded, and retried
    with dep.engine.connect() as conn:
        outcomes = Counter(conn.execute(select(Attempt.outcome)).scalars())
    assert sum(n for outcome, n in outcomes.items() if outcome != "success") >= 8, outcomes
    assert len([r for r in sandbox.received() if r["outcome"] == "failed"]) >= 8
    verify = dep.run("audit", "verify")
    assert "OK:" in verify, verify
    print(f"\nfaults: {faults}; {total} documents, {poster.retries} client retries, attempts {dict(outcomes)}")
