"""``dui-gateway backfill``: load many persons' records through the intake path, resumably.

The source is an NDJSON file (one record a line) or a folder of ``*.json`` files (one record a
file, taken in name order). A record is either a bare DUI record (its type given by
``--document-type``) or a submission envelope ``{"document_type": ..., "record": ...}``.

Each item goes through :func:`gateway.services.intake.submit`, exactly as ``POST
/v1/submissions`` does (same validation, encryption, audit event, idempotency), in batches of
``--batch`` items per transaction: a batch is durable when its commit returns. The
Idempotency-Key of an item is derived from where it comes from (the source's name and the line
number, or the file's relative path), so running the same source again never stores an item
twice: an item already accepted is answered as a replay.

Resuming: after each commit the checkpoint file (``<source>.backfill.json`` unless
``--checkpoint``) records how many items are done; a rerun starts after them. A run killed
between a commit and the checkpoint write redoes at most one batch, whose items are replays.

Bad items (not JSON, not a valid record, an ESSMS of another organisation, a key reused with
another body) are written to the error report (``<source>.backfill-errors.ndjson``: the item,
the HTTP status the API would answer, field pointers and messages, never the values) and the
run goes on.

At the end it prints a projection of the time to process 790,000 DLUs with K worker processes,
from the end-to-end DLU/s measured by ``python -m bench`` with 1, 2 and 4 workers (its JSON,
``--scaling``), or from ``--rates 1=14,2=20,4=26``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

__all__ = [
    "CpuScaling",
    "Item",
    "backfill",
    "cpu_scaling_from",
    "iter_items",
    "project",
    "project_per_core",
    "scaling_from",
]

NATIONAL_DLUS = 790_000


@dataclass(frozen=True)
class Item:
    index: int  # position in the source, from 0
    where: str  # "line 12" or a relative file path: what the error report names
    key: str  # the Idempotency-Key derived from the source and the position
    raw: bytes


def _source_id(source: Path) -> str:
    return hashlib.sha256(source.name.encode("utf-8")).hexdigest()[:12]


def iter_items(source: Path, *, start: int = 0) -> Iterator[Item]:
    """The items of an NDJSON file or a folder of JSON files, from position ``start``."""
    sid = _source_id(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*.json") if p.is_file())
        for index, path in enumerate(files):
            if index < start:
                continue
            rel = path.relative_to(source).as_posix()
            digest = hashlib.sha256(rel.encode("utf-8")).hexdigest()[:24]
            yield Item(index, rel, f"backfill:{sid}:{digest}", path.read_bytes())
        return
    with source.open("rb") as fh:
        index = -1
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            index += 1
            if index < start:
                continue
            yield Item(index, f"line {lineno}", f"backfill:{sid}:{lineno}", line)


def count_items(source: Path) -> int:
    if source.is_dir():
        return sum(1 for p in source.rglob("*.json") if p.is_file())
    with source.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


# -- checkpoint --------------------------------------------------------------------------------
def read_checkpoint(path: Path, source: Path) -> dict[str, Any]:
    fresh = {"source": str(source.resolve()), "done": 0, "accepted": 0, "replayed": 0, "errors": 0}
    if not path.exists():
        return fresh
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if data.get("source") != fresh["source"]:
        raise typer.BadParameter(f"the checkpoint {path} belongs to another source ({data.get('source')})")
    return {**fresh, **data}


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# -- projection --------------------------------------------------------------------------------
def scaling_from(path: Path) -> dict[int, float]:
    """{workers: DLU/s} from the JSON written by ``python -m bench`` (its PostgreSQL e2e rows).

    Runs with more worker processes than the bench machine had CPUs are left out: there the
    workers shared cores, which says nothing of K workers each on its own core."""
    data = json.loads(path.read_text(encoding="utf-8"))
    cpus = int(data.get("cpus") or 0)
    out: dict[int, float] = {}
    for key, row in (data.get("e2e") or {}).items():
        if key.startswith("pg") and isinstance(row, dict) and row.get("dlu_s"):
            workers = int(row["workers"])
            if cpus and workers > cpus and any(int(r.get("workers", 0)) <= cpus for r in data["e2e"].values()):
                continue
            out[workers] = float(row["dlu_s"])
    return out


def parse_rates(text: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for part in text.split(","):
        workers, _, rate = part.partition("=")
        out[int(workers)] = float(rate)
    return out


def project(rates: dict[int, float], k: int) -> float:
    """DLU/s with ``k`` workers: measured when measured; otherwise from the scaling of the last
    measured doubling (r(2n)/r(n)) applied again per doubling, never more than linear, and for
    fewer workers than measured, linear interpolation. Each worker is assumed on its own core."""
    if k in rates:
        return rates[k]
    known = sorted(rates)
    if k < known[0]:
        return rates[known[0]] * k / known[0]
    if k < known[-1]:
        lo = max(w for w in known if w < k)
        hi = min(w for w in known if w > k)
        return rates[lo] + (rates[hi] - rates[lo]) * (k - lo) / (hi - lo)
    top = known[-1]
    half = [w for w in known if w * 2 == top]
    factor = min(2.0, rates[top] / rates[half[0]]) if half else 2.0 * 0.75
    if len(known) >= 2 and not half:
        prev = known[-2]
        factor = min(2.0, (rates[top] / rates[prev]) ** (1 / math.log2(top / prev)))
    return float(rates[top] * factor ** math.log2(k / top))


@dataclass(frozen=True)
class CpuScaling:
    """What the bench measured of the worker processes' CPU, for the one-core-per-worker model.

    ``cpu_ms``: {K: CPU milliseconds all K worker processes together spent per DLU};
    ``single_rate``: DLU/s of the 1-worker run, whose ``single_rate × cpu_ms[1] / 1000`` is the
    share of a core one worker process keeps busy (its threads share one interpreter lock);
    ``db_ms``: PostgreSQL backend CPU per DLU (the largest measured), for the database's share."""

    cpu_ms: dict[int, float]
    single_rate: float
    db_ms: float | None = None

    @property
    def core_use(self) -> float:
        return min(1.0, self.single_rate * self.cpu_ms[1] / 1000)


def cpu_scaling_from(path: Path) -> CpuScaling | None:
    """:class:`CpuScaling` from the JSON written by ``python -m bench`` (PostgreSQL e2e rows with
    at most as many workers as the bench machine had CPUs), or None without a 1-worker run."""
    data = json.loads(path.read_text(encoding="utf-8"))
    cpus = int(data.get("cpus") or 0)
    cpu_ms: dict[int, float] = {}
    single = 0.0
    db: list[float] = []
    for key, row in (data.get("e2e") or {}).items():
        if not (key.startswith("pg") and isinstance(row, dict) and row.get("process_cpu_ms_per_dlu")):
            continue
        workers = int(row["workers"])
        if cpus and workers > cpus:
            continue  # workers sharing cores: context switches, not the software's scaling
        cpu_ms[workers] = float(sum(row["process_cpu_ms_per_dlu"]))
        if workers == 1:
            single = float(row["dlu_s"])
        if row.get("pg_cpu_ms_per_dlu"):
            db.append(float(row["pg_cpu_ms_per_dlu"]))
    if 1 not in cpu_ms or single <= 0:
        return None
    return CpuScaling(cpu_ms, single, max(db) if db else None)


def project_per_core(scaling: CpuScaling, k: int) -> float:
    """DLU/s with ``k`` worker processes, each on its own core (the database on its own host).

    Each worker keeps ``core_use`` of its core busy (measured alone), and the CPU all workers
    spend per DLU is the measured one for ``k`` when measured; beyond, it grows per doubling of
    the workers as it grew over the last measured doubling (the coordination's cost: claims,
    lock waits, cache), never less than measured: ``k × core_use × 1000 / cpu_ms(k)``."""
    known = sorted(scaling.cpu_ms)
    if k in scaling.cpu_ms:
        cost = scaling.cpu_ms[k]
    elif k < known[-1]:
        lo = max(w for w in known if w < k) if k > known[0] else known[0]
        cost = scaling.cpu_ms[lo]
    else:
        top = known[-1]
        growth = 1.0
        if len(known) >= 2:
            prev = known[-2]
            growth = max(1.0, (scaling.cpu_ms[top] / scaling.cpu_ms[prev]) ** (1 / math.log2(top / prev)))
        cost = scaling.cpu_ms[top] * growth ** math.log2(k / top)
    return k * scaling.core_use * 1000 / cost


def projection_table(
    rates: dict[int, float], ks: list[int], total: int = NATIONAL_DLUS, cpu: CpuScaling | None = None
) -> str:
    measured = ", ".join(f"{w} worker(s) {r:.1f} DLU/s" for w, r in sorted(rates.items()))
    lines = [f"projection for {total:,} DLUs (measured: {measured})"]
    if cpu is not None:
        costs = ", ".join(f"{w}: {c:.0f} ms" for w, c in sorted(cpu.cpu_ms.items()))
        lines.append(
            "  wall clock = this machine's scaling; per core = each worker on its own core "
            f"(worker CPU per DLU by workers {costs}; one worker keeps {cpu.core_use:.0%} of a core busy)"
        )
    for k in ks:
        rate = project(rates, k)
        hours = total / rate / 3600 if rate > 0 else math.inf
        kind = "measured" if k in rates else "projected"
        line = f"  {k:>3} workers: {rate:7.1f} DLU/s ({kind}) -> {hours:6.2f} h"
        if cpu is not None:
            core_rate = project_per_core(cpu, k)
            line += f" | per core: {core_rate:7.1f} DLU/s -> {total / core_rate / 3600:6.2f} h"
            if cpu.db_ms:
                line += f" (database {core_rate * cpu.db_ms / 1000:.1f} cores)"
        lines.append(line)
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------------
def _error_entry(item: Item, status: int, title: str, errors: list[dict[str, str]]) -> dict[str, Any]:
    return {"item": item.where, "idempotency_key": item.key, "status": status, "title": title, "errors": errors}


def _envelope(doc: Any, default_type: str) -> tuple[str, Any]:
    if isinstance(doc, dict) and set(doc) == {"document_type", "record"}:
        return str(doc["document_type"]), doc["record"]
    return default_type, doc


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def backfill(
    source: Annotated[Path, typer.Argument(help="an NDJSON file (one record a line) or a folder of .json files")],
    client: Annotated[str, typer.Option("--client", help="id of the API client the records are submitted as")],
    document_type: Annotated[str, typer.Option(help="document type of bare records")] = "dlu",
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="items per transaction (group commit)")] = 100,
    checkpoint: Annotated[Path | None, typer.Option(help="checkpoint file (default <source>.backfill.json)")] = None,
    errors: Annotated[
        Path | None, typer.Option(help="error report, NDJSON (default <source>.backfill-errors.ndjson)")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="stop after this many items (this run)")] = None,
    scaling: Annotated[
        Path | None, typer.Option(help="JSON written by python -m bench: worker scaling for the projection")
    ] = None,
    rates: Annotated[str | None, typer.Option(help="worker scaling as 1=14,2=20,4=26 (DLU/s)")] = None,
    project_workers: Annotated[str, typer.Option(help="worker counts of the projection")] = "1,2,4,8,16",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="progress bar with ETA")] = True,
) -> None:
    """Load many records (NDJSON or a folder) through intake, resumable; projects the national backfill."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from gateway.commands import _settings
    from gateway.errors import Conflict, Forbidden, GatewayError, ValidationFailed
    from gateway.runtime import Runtime
    from gateway.services import intake
    from gateway.storage.models import ApiClient

    if not source.exists():
        raise typer.BadParameter(f"{source} does not exist", param_hint="SOURCE")
    checkpoint = checkpoint or source.with_name(source.name + ".backfill.json")
    errors = errors or source.with_name(source.name + ".backfill-errors.ndjson")
    state = read_checkpoint(checkpoint, source)
    scaling_rates: dict[int, float] = {}
    cpu_scaling: CpuScaling | None = None
    if rates:
        scaling_rates = parse_rates(rates)
    elif scaling is not None:
        scaling_rates = scaling_from(scaling)
        cpu_scaling = cpu_scaling_from(scaling)
    settings = _settings()
    runtime = Runtime.from_settings(settings)
    total = count_items(source)
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.monotonic()
    this_run = 0
    interrupted = False
    out = typer.echo
    try:
        with runtime.session_factory() as session:
            api_client = session.get(ApiClient, client)
            if api_client is None or not api_client.active:
                raise typer.BadParameter(f"no active API client with id {client}", param_hint="--client")
            if "submit" not in api_client.scopes.split():
                raise typer.BadParameter("this API client lacks the 'submit' scope", param_hint="--client")
        out(f"backfill {source}: {total} items, {state['done']} already done (checkpoint {checkpoint})")
        bar = Progress(
            TextColumn("backfill"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.0f}/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            disable=not progress,
            transient=False,
        )
        items = iter_items(source, start=state["done"])
        with bar, errors.open("a", encoding="utf-8") as report:
            task = bar.add_task("backfill", total=total, completed=state["done"], rate=0.0)
            while limit is None or this_run < limit:
                chunk = []
                for item in items:
                    chunk.append(item)
                    if len(chunk) >= batch or (limit is not None and this_run + len(chunk) >= limit):
                        break
                if not chunk:
                    break
                counts = {"accepted": 0, "replayed": 0, "errors": 0}
                bad: list[dict[str, Any]] = []
                with runtime.session_factory() as session:
                    api_client = session.get(ApiClient, client)
                    assert api_client is not None
                    for item in chunk:
                        try:
                            doc = intake.parse_json(item.raw)
                            doc_type, record = _envelope(doc, document_type)
                            _, created = intake.submit(
                                session,
                                client=api_client,
                                document_type=doc_type,
                                record_json=record,
                                idempotency_key=item.key,
                                keyring=runtime.keyring,
                                correlation_id=f"backfill:{item.where}"[:64],
                            )
                        except (ValidationFailed, Forbidden, Conflict) as exc:
                            status = (
                                422 if isinstance(exc, ValidationFailed) else 403 if isinstance(exc, Forbidden) else 409
                            )
                            errs = [
                                {"pointer": e.pointer, "message": e.message, "code": e.code}
                                for e in getattr(exc, "errors", None) or []
                            ]
                            bad.append(_error_entry(item, status, str(exc), errs))
                            counts["errors"] += 1
                            continue
                        except GatewayError as exc:  # anything else the API would refuse
                            bad.append(_error_entry(item, 400, type(exc).__name__, []))
                            counts["errors"] += 1
                            continue
                        counts["accepted" if created else "replayed"] += 1
                    session.commit()  # the batch is durable from here
                for entry in bad:
                    report.write(json.dumps(entry, ensure_ascii=False) + "\n")
                report.flush()
                state["done"] += len(chunk)
                for name, value in counts.items():
                    state[name] += value
                write_checkpoint(checkpoint, state)
                this_run += len(chunk)
                elapsed = time.monotonic() - started
                bar.update(task, completed=state["done"], rate=this_run / elapsed if elapsed > 0 else 0.0)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        runtime.close()
    elapsed = time.monotonic() - started
    rate = this_run / elapsed if elapsed > 0 else 0.0
    out(
        f"{'interrupted' if interrupted else 'done'}: {state['done']}/{total} items handled "
        f"({state['accepted']} accepted, {state['replayed']} already there, {state['errors']} errors"
        f"{' in ' + str(errors) if state['errors'] else ''}); this run {this_run} items in {elapsed:.1f} s "
        f"({rate:.0f}/s through intake)"
    )
    if interrupted:
        out(f"rerun the same command to resume after item {state['done']}")
    if scaling_rates:
        ks = sorted({int(k) for k in project_workers.split(",") if k})
        out(projection_table(scaling_rates, ks, cpu=cpu_scaling))
        if rate > 0:
            out(
                f"  intake by this command: {rate:.0f} items/s -> "
                f"{NATIONAL_DLUS / rate / 3600:.2f} h for {NATIONAL_DLUS:,}"
            )
    else:
        out("no worker scaling given (--scaling bench/RESULTS.json or --rates 1=..,2=..,4=..): no projection")
    if interrupted:
        raise typer.Exit(130)
    if state["errors"]:
        sys.stdout.flush()
