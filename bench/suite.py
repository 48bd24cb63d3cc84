"""The throughput table of issue #15, in one command; it asserts nothing about speed.

    scripts/install-bench-deps.sh                 # wrk (Debian), once, as root; optional
    CISIS_KIT_DIR=../shared/cisis-kit .venv/bin/python -m bench [--quick] [--pg-url URL] [--md FILE]

What each row is (real DLUs: the demo record gateway/demo_data/01-dlu-qualified-ins.json, each
one another person: local id and INS matricule with its key; full CI-SIS + FHIR profile gate):

- **blocks**: the document work of one DLU measured alone in this process, warm, median:
  record validation, mapping (CDA + FHIR + metadata), CI-SIS (XSD + schematrons), FHIR profiles.
  Their sum gives the *block limit*: DLU/s one process could do if nothing else cost anything.
- **intake cN**: ``dui-gateway serve`` (``--workers P`` API processes on PostgreSQL, one on
  SQLite), no delivery worker; wrk (Lua script: distinct bodies and Idempotency-Keys) with N
  connections for D seconds. The figure is *durable* submissions/s: rows in the database after
  the run divided by the duration (every 202 is answered after the commit).
- **e2e**: API + workers + the sandbox receiver as a webhook destination. SQLite: one process
  with its embedded workers. PostgreSQL: one API process and K ``dui-gateway worker`` processes.
  A warm-up (schematrons compiled) is delivered first; then N DLUs are posted by 4 client
  threads as fast as the API takes them, and DLU/s is N / (last delivered − first POST). The
  latencies (POST → delivered, from the client's clock and ``deliveries.delivered_at``) include
  the wait in the queue, so they grow with N. *% of block limit*, two figures: DLU/s ÷ the
  block limit of one process (issue #15's measure: its 40 DLU/s per process and its target of
  30 DLU/s = 75 %), then DLU/s ÷ (block limit × min(K, CPU count)), as if every CPU did only
  document work while the database, the API and the receiver share those same CPUs. RSS is
  each worker process's resident set after the run (VmRSS; VmHWM is its peak). PostgreSQL CPU
  per DLU: utime + stime of the run's database backends (found in ``pg_stat_activity``, read
  from /proc), sampled through the run, divided by N.
- **p99 at R DLU/s offered**: PostgreSQL, 2 workers, DLUs posted at a steady R per second.
- **cold start**: ``dui-gateway --help``, median of 5 wall times.

``--md FILE`` (default bench/RESULTS.md) gets the same table in markdown with the machine it ran
on and the load average before and after; ``--json FILE`` the raw figures (the ``backfill``
command reads the worker scaling from it for its projection).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402

from gateway.settings import Settings  # noqa: E402
from gateway.storage.models import Delivery, Submission  # noqa: E402
from tests.peers.gateway import (  # noqa: E402
    DEMO_FINESS,
    Deployment,
    create_pg_database,
    drop_pg_database,
    provision,
    webhook_routing,
)
from tests.peers.net import free_port, wait_http  # noqa: E402

__all__ = ["dlu_record", "main"]

LUA = Path(__file__).resolve().parent / "intake.lua"
DEFAULT_MD = Path(__file__).resolve().parent / "RESULTS.md"
CPUS = os.cpu_count() or 1
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- records --------------------------------------------------------------------------------
def demo_record() -> dict[str, Any]:
    text_ = resources.files("gateway.demo_data").joinpath("01-dlu-qualified-ins.json").read_text(encoding="utf-8")
    record: dict[str, Any] = json.loads(text_)
    return record


def nir(n: int) -> str:
    """A valid NIR for the demo person's traits (woman, born 03/1938, Paris), number ``n``."""
    first13 = f"2380375{n % 1_000_000:06d}"
    return f"{first13}{97 - int(first13) % 97:02d}"


def dlu_record(n: int, run: str, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The demo DLU for another person (local id and INS matricule)."""
    record = copy.deepcopy(base or demo_record())
    record["person"]["local_id"] = f"B{run}-{n}"
    record["person"]["ins"]["matricule"] = nir(n)
    return record


# -- small measurements ----------------------------------------------------------------------------
def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, (nan, nan) when gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan"), float("nan")
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
    return int(values.get("VmRSS", 0)) / 1024, int(values.get("VmHWM", 0)) / 1024


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (the API processes under ``serve --workers``)."""
    total = cpu_seconds(pid) or 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(tree_cpu_seconds(int(c)) for c in children)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


class PgCpu:
    """CPU seconds spent by the backends of one database, sampled from /proc while it runs."""

    def __init__(self, engine: Any, database: str) -> None:
        self.engine = engine
        self.database = database
        self.baseline: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.visible = True

    def _pids(self) -> list[int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                {"d": self.database},
            )
            return [int(r[0]) for r in rows]

    def _sample(self, first: bool = False) -> None:
        for pid in self._pids():
            value = cpu_seconds(pid)
            if value is None:
                self.visible = False
                continue
            if first:
                self.baseline.setdefault(pid, value)
            else:
                self.baseline.setdefault(pid, 0.0)  # a backend born during the run
            self.last[pid] = value

    def start(self) -> None:
        self._sample(first=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self._sample()
            except Exception:  # the database may be going away at the end
                return

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._sample()
        except Exception:
            pass
        return sum(self.last[p] - self.baseline.get(p, 0.0) for p in self.last)


# -- table ------------------------------------------------------------------------------------
@dataclass
class Row:
    scenario: str
    throughput: str = ""
    pct_block: str = ""
    p50: str = ""
    p95: str = ""
    p99: str = ""
    rss: str = ""
    pg_cpu: str = ""
    note: str = ""

    COLUMNS = (
        "scenario",
        "throughput",
        "% block limit (1 process / × CPUs)",
        "p50 s",
        "p95 s",
        "p99 s",
        "RSS MB",
        "PG CPU ms/DLU",
        "note",
    )

    def cells(self) -> list[str]:
        return [
            " ".join(c.split())
            for c in [
                self.scenario,
                self.throughput,
                self.pct_block,
                self.p50,
                self.p95,
                self.p99,
                self.rss,
                self.pg_cpu,
                self.note,
            ]
        ]


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print("  " + " | ".join(c for c in row.cells() if c), flush=True)


def text_table(rows: list[Row]) -> str:
    table = [list(Row.COLUMNS), *(r.cells() for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(Row.COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(Row.COLUMNS) + " |", "|" + "---|" * len(Row.COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    model = ""
    try:
        model = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in ln
            ),
            "",
        )
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        mem = f", {mem_kb / 1024 / 1024:.1f} GB RAM"
    except (OSError, AttributeError):
        mem = ""
    cpu = model or platform.machine()
    return f"{platform.system()} {platform.release()}, {CPUS} CPU ({cpu}){mem}, Python {platform.python_version()}"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


# -- blocks ------------------------------------------------------------------------------------
def bench_blocks(opts: argparse.Namespace, results: Results) -> float:
    """Median ms of each document block of one DLU; returns the block limit in DLU/s per process."""
    from gateway.conformance import check_rendition
    from gateway.settings import Settings
    from mappings import registry
    from mappings.base import RenderContext

    doc = registry.get("dlu")
    assert doc is not None, "the DLU document type is not registered"
    from tests.peers.gateway import random_master_keys

    settings = Settings(
        profile="test",
        embedded_worker=False,
        cisis_kit_dir=Path(opts.kit),
        master_keys=random_master_keys(),
        audit_keys=random_master_keys(),
    )
    base = demo_record()
    bodies = [json.dumps(dlu_record(i, "blk", base)).encode() for i in range(opts.block_runs + 2)]
    timings: dict[str, list[float]] = {"record validation": [], "mapping": [], "CI-SIS": [], "FHIR profiles": []}
    for i, body in enumerate(bodies):
        t0 = time.perf_counter()
        record = doc.record_model.model_validate_json(body)
        t1 = time.perf_counter()
        renditions = doc.render(record, RenderContext(now=datetime.now(UTC), submission_id=uuid.uuid4()))
        t2 = time.perf_counter()
        cisis = fhir = 0.0
        for rendition in renditions:
            for tag in rendition.conformance:
                one = dataclasses.replace(rendition, conformance=(tag,))
                s = time.perf_counter()
                outcome = check_rendition(one, settings=settings)
                elapsed = time.perf_counter() - s
                if not all(r["ok"] for r in outcome):
                    raise SystemExit(f"the bench DLU does not pass {tag}: {outcome}")
                if tag.startswith("cisis"):
                    cisis += elapsed
                else:
                    fhir += elapsed
        if i < 2:  # warm-up: compilation of the schematrons, FHIRPath, models
            continue
        timings["record validation"].append(t1 - t0)
        timings["mapping"].append(t2 - t1)
        timings["CI-SIS"].append(cisis)
        timings["FHIR profiles"].append(fhir)
    total = 0.0
    for name, samples in timings.items():
        ms = statistics.median(samples) * 1000
        total += ms
        results.raw.setdefault("blocks_ms", {})[name] = ms
        results.add(Row(f"block: {name}", f"{ms:.1f} ms", note=f"median of {len(samples)}, one process"))
    limit = 1000 / total
    results.raw["block_limit_dlu_s"] = limit
    results.add(
        Row(
            "block limit (sum of the blocks)",
            f"{limit:.1f} DLU/s per process",
            note=f"{total:.1f} ms per DLU; ×{CPUS} CPU = {limit * CPUS:.0f} DLU/s",
        )
    )
    return limit


# -- deployments ------------------------------------------------------------------------------
@contextmanager
def deployment(opts: argparse.Namespace, backend: str, **settings: str) -> Iterator[tuple[Deployment, str | None]]:
    tmp = Path(tempfile.mkdtemp(prefix="dgw-bench-"))
    db_url = create_pg_database(opts.pg_url) if backend == "postgresql" else None
    dep = Deployment.create(tmp / "deployment", db_url=db_url, **settings)
    dep.env["DUI_GATEWAY_LOG_LEVEL"] = "WARNING"
    dep.env["CISIS_KIT_DIR"] = str(opts.kit)
    dep.env["DUI_GATEWAY_MAX_QUEUE_DEPTH"] = "10000000"
    try:
        dep.migrate()
        yield dep, db_url
    finally:
        dep.close()
        if db_url is not None:
            drop_pg_database(db_url)
        shutil.rmtree(tmp, ignore_errors=True)


def setup_dlu_routing(dep: Deployment) -> str:
    """Provision the demo tenant, start the sandbox receiver, route DLUs to it; returns the API key."""
    tenant = provision(dep.db_url, finess=DEMO_FINESS)
    sandbox = dep.start_sandbox()
    dep.write_routing(webhook_routing(sandbox.url, destinations={"bench": "webhook"}, document_types=["dlu"]))
    return tenant.api_key


def start_api(dep: Deployment, *, processes: int = 1, embedded_worker: bool = False, name: str = "api") -> str:
    port = free_port()
    args = ["serve", "--port", str(port)]
    if processes > 1:
        args += ["--workers", str(processes)]
    proc = dep.spawn(name, *args, env={"DUI_GATEWAY_EMBEDDED_WORKER": str(embedded_worker).lower()})
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", alive=proc.alive, timeout=120)
    return url


def count_submissions(dep: Deployment) -> int:
    with dep.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Submission)).scalar_one())


# -- intake ------------------------------------------------------------------------------------
def _wrk(url: str, api_key: str, connections: int, seconds: float, template: Path) -> tuple[int, int]:
    """Run wrk; returns (requests completed, non-2xx responses)."""
    env = {**os.environ, "BENCH_TEMPLATE": str(template), "BENCH_API_KEY": api_key, "BENCH_RUN": uuid.uuid4().hex[:8]}
    threads = max(1, min(connections, 2))
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return done, int(errors.group(1)) if errors else 0


def _python_load(url: str, api_key: str, connections: int, seconds: float) -> tuple[int, int]:
    """The fallback load generator (threads + requests): slower than wrk, said in the table."""
    base = demo_record()
    run = uuid.uuid4().hex[:8]
    deadline = time.monotonic() + seconds
    counts = [0, 0]
    lock = threading.Lock()

    def client(t: int) -> None:
        with requests.Session() as http:
            n = 0
            while time.monotonic() < deadline:
                n += 1
                key = f"{run}-{t}-{n}"
                body = {"document_type": "dlu", "record": dlu_record(t * 100_000 + n, f"{run}{t}", base)}
                resp = http.post(
                    f"{url}/v1/submissions",
                    json=body,
                    headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": key},
                    timeout=30,
                )
                with lock:
                    counts[0] += 1
                    counts[1] += resp.status_code >= 300

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(client, range(connections)))
    return counts[0], counts[1]


def bench_intake(opts: argparse.Namespace, results: Results, backend: str) -> None:
    with deployment(opts, backend) as (dep, _):
        api_key = setup_dlu_routing(dep)
        processes = opts.api_processes if backend == "postgresql" else 1
        url = start_api(dep, processes=processes)
        template = dep.root / "template.json"
        body = {"document_type": "dlu", "record": demo_record()}
        body["record"]["person"]["local_id"] = "__LOCAL_ID__"
        body["record"]["person"]["ins"]["matricule"] = "__MATRICULE__"
        template.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
        use_wrk = shutil.which("wrk") is not None and not opts.python_load
        # warm-up: every API process compiles its models and fills its pools before the clock runs
        _python_load(url, api_key, 4, 2.0 if opts.tiny else 5.0)
        tool = "wrk" if use_wrk else "python client (wrk missing: scripts/install-bench-deps.sh)"
        api_pid = next(p.pid for p in dep.processes if p.name == "api")
        for c in opts.concurrency:
            before = count_submissions(dep)
            cpu_before = tree_cpu_seconds(api_pid)
            started = time.perf_counter()
            done, errors = (
                _wrk(url, api_key, c, opts.intake_seconds, template)
                if use_wrk
                else _python_load(url, api_key, c, opts.intake_seconds)
            )
            elapsed = time.perf_counter() - started
            stored = count_submissions(dep) - before
            api_ms = (tree_cpu_seconds(api_pid) - cpu_before) * 1000 / max(stored, 1)
            rate = stored / elapsed
            results.raw.setdefault("intake", {}).setdefault(backend, {})[f"c{c}"] = rate
            results.add(
                Row(
                    f"intake c{c}, {backend}, {processes} API process{'es' if processes > 1 else ''}",
                    f"{rate:.0f} durable submissions/s",
                    note=f"{stored} stored, {done} answered, {errors} non-2xx; API CPU {api_ms:.1f} ms/submission; "
                    f"{tool}; load {load()}",
                )
            )


# -- end to end --------------------------------------------------------------------------------
class Poster:
    """Posts DLUs, remembering when each POST started (client clock, UTC)."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url
        self.api_key = api_key
        self.base = demo_record()
        self.run = uuid.uuid4().hex[:8]
        self.sent: dict[str, float] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def post(self, n: int) -> None:
        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = requests.Session()
        body = {"document_type": "dlu", "record": dlu_record(n, self.run, self.base)}
        started = time.time()
        resp = http.post(
            f"{self.url}/v1/submissions",
            json=body,
            headers={"Authorization": f"Bearer {self.api_key}", "Idempotency-Key": f"{self.run}-{n}"},
            timeout=60,
        )
        if resp.status_code != 202:
            raise RuntimeError(f"POST answered {resp.status_code}: {resp.text[:300]}")
        with self._lock:
            self.sent[resp.json()["id"]] = started

    def burst(self, first: int, count: int, threads: int = 4) -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(self.post, range(first, first + count)))

    def steady(self, first: int, count: int, rate: float) -> None:
        with ThreadPoolExecutor(8) as pool:
            start = time.monotonic()
            futures = []
            for i in range(count):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(self.post, first + i))
            for f in futures:
                f.result()


def delivered_times(dep: Deployment, ids: set[str]) -> dict[str, float]:
    with dep.engine.connect() as conn:
        rows = conn.execute(
            select(Delivery.submission_id, Delivery.delivered_at).where(Delivery.status == "delivered")
        ).all()
    out: dict[str, float] = {}
    for sub_id, at in rows:
        if sub_id in ids and at is not None:
            at = at if at.tzinfo else at.replace(tzinfo=UTC)
            out[sub_id] = max(out.get(sub_id, 0.0), at.timestamp())
    return out


def wait_delivered(dep: Deployment, poster: Poster, ids: set[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        done = delivered_times(dep, ids)
        if len(done) == len(ids):
            return done
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(done)}/{len(ids)} delivered after {timeout:.0f}s: {dep.submission_statuses()}")
        for proc in dep.processes:
            if not proc.name.startswith("cmd-") and proc.proc.poll() is not None:
                raise RuntimeError(f"{proc.name} died:\n{proc.output()[-3000:]}")
        time.sleep(0.1)


def bench_e2e(
    opts: argparse.Namespace, results: Results, backend: str, workers: int, block_limit: float | None
) -> None:
    with deployment(opts, backend, worker_concurrency=str(opts.worker_concurrency)) as (dep, db_url):
        api_key = setup_dlu_routing(dep)
        if backend == "sqlite":
            url = start_api(dep, embedded_worker=True)
            procs = [p for p in dep.processes if p.name == "api"]
            label = "e2e SQLite, 1 process (API + embedded workers)"
        else:
            url = start_api(dep)
            procs = [dep.start_worker(f"worker-{k}") for k in range(workers)]
            label = f"e2e PostgreSQL, {workers} worker{'s' if workers > 1 else ''}"
        poster = Poster(url, api_key)
        warm = max(2, 2 * max(1, workers))
        poster.burst(0, warm)
        wait_delivered(dep, poster, set(poster.sent), timeout=300)
        poster.sent.clear()
        pg = None
        if db_url is not None:
            from sqlalchemy.engine import make_url

            pg = PgCpu(dep.engine, str(make_url(db_url).database))
            pg.start()
        others = [p for p in dep.processes if p not in procs and p.name in ("api", "sandbox") and p.alive()]
        cpu_before = {p.pid: cpu_seconds(p.pid) or 0.0 for p in [*procs, *others]}
        t0 = time.time()
        poster.burst(warm, opts.dlus)
        done = wait_delivered(dep, poster, set(poster.sent), timeout=opts.timeout)
        elapsed = max(done.values()) - t0
        pg_seconds = pg.stop() if pg is not None else None
        rate = opts.dlus / elapsed
        lat = [done[s] - poster.sent[s] for s in poster.sent]
        rss = [rss_mb(p.pid) for p in procs]
        proc_cpu = [((cpu_seconds(p.pid) or 0.0) - cpu_before[p.pid]) * 1000 / opts.dlus for p in procs]
        other_cpu = {p.name: ((cpu_seconds(p.pid) or 0.0) - cpu_before[p.pid]) * 1000 / opts.dlus for p in others}
        # every process of the run per DLU: what bounds DLU/s when they all share the machine's CPUs
        total_ms = sum(proc_cpu) + sum(other_cpu.values()) + (pg_seconds * 1000 / opts.dlus if pg_seconds else 0.0)
        pct = ""
        if block_limit:
            pct = f"{100 * rate / block_limit:.0f} % / {100 * rate / (block_limit * min(max(workers, 1), CPUS)):.0f} %"
        key = "sqlite" if backend == "sqlite" else f"pg{workers}"
        results.raw.setdefault("e2e", {})[key] = {
            "dlu_s": rate,
            "workers": workers,
            "p50": percentile(lat, 50),
            "p95": percentile(lat, 95),
            "p99": percentile(lat, 99),
            "rss_mb": [r[0] for r in rss],
            "hwm_mb": [r[1] for r in rss],
            "pg_cpu_ms_per_dlu": pg_seconds * 1000 / opts.dlus if pg_seconds is not None else None,
            "process_cpu_ms_per_dlu": proc_cpu,
            "other_cpu_ms_per_dlu": other_cpu,
            "total_cpu_ms_per_dlu": total_ms,
            "pct_block_limit": (
                [100 * rate / block_limit, 100 * rate / (block_limit * min(max(workers, 1), CPUS))]
                if block_limit
                else None
            ),
        }
        results.add(
            Row(
                label,
                f"{rate:.1f} DLU/s",
                pct,
                f"{percentile(lat, 50):.2f}",
                f"{percentile(lat, 95):.2f}",
                f"{percentile(lat, 99):.2f}",
                " / ".join(f"{r:.0f}" for r, _ in rss) + f" (peak {max(h for _, h in rss):.0f})",
                f"{pg_seconds * 1000 / opts.dlus:.1f}" if pg_seconds is not None else "",
                f"{opts.dlus} DLUs after {warm} warm-up; worker CPU "
                + "/".join(f"{c:.0f}" for c in proc_cpu)
                + " ms/DLU"
                + "".join(
                    f", {'receiver' if name == 'sandbox' else name} {c:.0f}" for name, c in sorted(other_cpu.items())
                )
                + f"; all processes {total_ms:.0f} ms/DLU (CPU-bound at {CPUS * 1000 / total_ms:.0f} DLU/s)"
                + f"; load {load()}",
            )
        )
        if backend == "postgresql" and workers == 2 and opts.rate_seconds > 0:
            bench_steady(opts, results, dep, poster, warm + opts.dlus)


def bench_steady(opts: argparse.Namespace, results: Results, dep: Deployment, poster: Poster, first: int) -> None:
    poster.sent.clear()
    count = max(1, round(opts.rate * opts.rate_seconds))
    poster.steady(first, count, opts.rate)
    done = wait_delivered(dep, poster, set(poster.sent), timeout=opts.timeout)
    lat = [done[s] - poster.sent[s] for s in poster.sent]
    results.raw["steady"] = {"rate": opts.rate, "p50": percentile(lat, 50), "p99": percentile(lat, 99)}
    results.add(
        Row(
            f"POST → delivered at {opts.rate:g} DLU/s offered, PostgreSQL, 2 workers",
            f"{count} DLUs",
            "",
            f"{percentile(lat, 50):.2f}",
            f"{percentile(lat, 95):.2f}",
            f"{percentile(lat, 99):.2f}",
            note=f"load {load()}",
        )
    )


def bench_cold_start(results: Results) -> None:
    exe = Path(sys.executable).parent / "dui-gateway"
    cmd = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "gateway.cli", "--help"]
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        samples.append(time.perf_counter() - t0)
    results.raw["cold_start_s"] = statistics.median(samples)
    results.add(Row("`dui-gateway --help` cold start", f"{statistics.median(samples):.2f} s", note="median of 5"))


# -- the command -----------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes: a rough table in about two minutes")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the smoke test's mode
    p.add_argument("--kit", default=os.environ.get("CISIS_KIT_DIR"), help="CI-SIS kit (default $CISIS_KIT_DIR)")
    p.add_argument(
        "--pg-url",
        default=os.environ.get("DUI_GATEWAY_TEST_PG_URL"),
        help="PostgreSQL server (scratch databases created and dropped); none: no PostgreSQL rows",
    )
    p.add_argument(
        "--only",
        default="blocks,intake,e2e,cold",
        help="comma-separated sections: blocks, intake, e2e, cold (default all)",
    )
    p.add_argument("--dlus", type=int, default=None, help="DLUs per end-to-end run (default 500; quick 60)")
    p.add_argument("--workers", default="1,2,4", help="PostgreSQL worker process counts (default 1,2,4)")
    p.add_argument(
        "--worker-concurrency",
        type=int,
        default=Settings.model_fields["worker_concurrency"].default,
        help="threads per worker process (default: the gateway's default)",
    )
    p.add_argument("--intake-seconds", type=float, default=None, help="wrk duration per concurrency (default 10)")
    p.add_argument("--concurrency", default="1,4,16", help="intake connections (default 1,4,16)")
    p.add_argument("--api-processes", type=int, default=2, help="API processes for intake on PostgreSQL")
    p.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk is here")
    p.add_argument("--rate", type=float, default=10.0, help="offered DLU/s for the latency row")
    p.add_argument("--rate-seconds", type=float, default=None, help="duration of the latency row (default 30)")
    p.add_argument("--block-runs", type=int, default=None, help="DLUs timed per block (default 30)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait for a run to be delivered")
    p.add_argument("--md", type=Path, default=DEFAULT_MD, help=f"markdown output (default {DEFAULT_MD.name})")
    p.add_argument("--json", type=Path, default=None, help="raw figures as JSON (default: next to --md)")
    p.add_argument(
        "--readme",
        action="store_true",
        help="also put the table in README.md (between the bench:start / bench:end markers)",
    )
    opts = p.parse_args(argv)
    small = opts.tiny or opts.quick
    opts.dlus = opts.dlus or (4 if opts.tiny else 60 if opts.quick else 500)
    opts.intake_seconds = opts.intake_seconds or (1 if opts.tiny else 4 if opts.quick else 10)
    opts.rate_seconds = (
        opts.rate_seconds if opts.rate_seconds is not None else (0.5 if opts.tiny else 6 if small else 30)
    )
    opts.block_runs = opts.block_runs or (2 if opts.tiny else 10 if opts.quick else 30)
    opts.workers = [int(w) for w in opts.workers.split(",") if w]
    opts.concurrency = [int(c) for c in opts.concurrency.split(",") if c]
    opts.sections = {s.strip() for s in opts.only.split(",") if s.strip()}
    opts.json = opts.json or opts.md.with_suffix(".json")
    return opts


README_START = "<!-- bench:start (python -m bench --readme writes here) -->"
README_END = "<!-- bench:end -->"


def backfill_projection(path: Path) -> str:
    """The backfill's projection for 790,000 DLUs from this run's figures ("" without PostgreSQL runs)."""
    from gateway.backfill import cpu_scaling_from, projection_table, scaling_from

    rates = scaling_from(path)
    if not rates:
        return ""
    return projection_table(rates, [1, 2, 4, 8, 16], cpu=cpu_scaling_from(path))


def update_readme(readme: Path, header: str, table: str) -> None:
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        print(f"{readme}: no bench markers, not updated", file=sys.stderr)
        return
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    block = "\n".join(f"{line}  " for line in header.splitlines()) + "\n\n" + table
    readme.write_text(f"{head}{README_START}\n{block}\n{README_END}{tail}", encoding="utf-8")
    print(f"written: {readme}")


def _section(name: str, fn: Callable[[], Any], results: Results) -> Any:
    print(f"== {name} (load {load()})", flush=True)
    try:
        return fn()
    except Exception as exc:  # one failed section does not lose the others: it shows in the table
        results.add(Row(name, "FAILED", note=f"{type(exc).__name__}: {str(exc)[:200]}"))
        results.raw.setdefault("failed", []).append(name)
        return None


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if not opts.kit or not Path(opts.kit, "schematrons").is_dir():
        print("the CI-SIS kit is needed (CISIS_KIT_DIR or --kit)", file=sys.stderr)
        return 2
    opts.kit = str(Path(opts.kit).resolve())
    results = Results()
    started = datetime.now(UTC)
    load_before = load()
    print(f"dui-gateway bench, {machine()}, commit {git_commit()}, load {load_before}", flush=True)
    limit = None
    if "blocks" in opts.sections:
        limit = _section("blocks", lambda: bench_blocks(opts, results), results)
    if "intake" in opts.sections:
        if opts.pg_url:
            _section("intake PostgreSQL", lambda: bench_intake(opts, results, "postgresql"), results)
        _section("intake SQLite", lambda: bench_intake(opts, results, "sqlite"), results)
    if "e2e" in opts.sections:
        _section("e2e SQLite", lambda: bench_e2e(opts, results, "sqlite", 1, limit), results)
        if opts.pg_url:
            for k in opts.workers:
                _section(f"e2e PostgreSQL {k}", lambda k=k: bench_e2e(opts, results, "postgresql", k, limit), results)
    if "cold" in opts.sections:
        _section("cold start", lambda: bench_cold_start(results), results)
    load_after = load()
    mode = "tiny" if opts.tiny else "quick" if opts.quick else "full"
    header = (
        f"{started:%Y-%m-%d %H:%M} UTC, commit {git_commit()}, {mode} mode ({opts.dlus} DLUs per e2e run, "
        f"intake {opts.intake_seconds:g} s per concurrency, worker concurrency {opts.worker_concurrency})\n"
        f"machine: {machine()}\nload average (1/5/15 min): {load_before} before, {load_after} after"
    )
    print("\n" + header + "\n\n" + text_table(results.rows), flush=True)
    opts.md.parent.mkdir(parents=True, exist_ok=True)
    opts.md.write_text(
        "# dui-gateway bench (`python -m bench`)\n\n"
        + "\n".join(f"{line}  " for line in header.splitlines())
        + "\n\n"
        + markdown_table(results.rows)
        + "\n",
        encoding="utf-8",
    )
    results.raw.update(
        {
            "started": started.isoformat(),
            "mode": mode,
            "machine": machine(),
            "load": [load_before, load_after],
            "cpus": CPUS,
            "dlus": opts.dlus,
        }
    )
    opts.json.write_text(json.dumps(results.raw, indent=2), encoding="utf-8")
    table = markdown_table(results.rows)
    projection = backfill_projection(opts.json)
    if projection:
        print("\n" + projection, flush=True)
        table += "\n\nNational backfill (`dui-gateway backfill --scaling bench/RESULTS.json` prints the same):\n\n```\n"
        table += projection + "\n```"
        with opts.md.open("a", encoding="utf-8") as md:
            md.write("\n```\n" + projection + "\n```\n")
    print(f"\nwritten: {opts.md}, {opts.json}")
    if opts.readme:
        update_readme(ROOT / "README.md", header, table)
    return 1 if results.raw.get("failed") else 0
