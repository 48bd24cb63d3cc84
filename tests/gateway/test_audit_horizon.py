"""Readers paging the audit trail by ``seq`` never miss an event: on PostgreSQL a transaction may
commit after another that took a higher ``seq`` (different chains), so pages stop at the settled
horizon (gateway.audit.horizon) instead of passing an event still being appended."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from gateway.audit import AuditSealer, append, horizon
from gateway.audit.chain import chain_for
from gateway.audit.cli import app as audit_cli
from gateway.audit.horizon import AuditNotSettled, settled_seq, settled_seq_of
from gateway.services.queries import list_audit_events
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.models import AuditEvent

EIGHT = AuditSealer(chains=8)


def _entity(chain: int, prefix: str) -> str:
    return next(f"{prefix}-{i}" for i in range(10_000) if chain_for(f"{prefix}-{i}", 8) == chain)


def _append(session: Session, entity: str) -> int:
    return int(append(session, actor="w", action="attempt", entity_type="d", entity_id=entity, sealer=EIGHT).seq)


def _page(factory: sessionmaker[Session], after: int) -> list[int]:
    with session_scope(factory) as s:
        events, _ = list_audit_events(s, tenant_id=None, actor="user:siem", after_seq=after, limit=100)
        return [int(e.seq) for e in events if e.action != "exported"]


class _Held:
    """Transaction A: appends (takes its seq) and stays open until told to commit or roll back."""

    def __init__(self, factory: sessionmaker[Session], entity: str) -> None:
        self.session = factory()
        self.seq = _append(self.session, entity)

    def end(self, commit: bool) -> None:
        (self.session.commit if commit else self.session.rollback)()
        self.session.close()


def _paged_in_thread(factory: sessionmaker[Session], after: int) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def read() -> None:
        try:
            out.append(_page(factory, after))
        except BaseException as exc:  # handed to the test thread
            out.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    return thread, out


@pytest.fixture
def pg(pg_url_test: str) -> Any:
    engine = make_engine(pg_url_test)
    factory = make_sessionmaker(engine)
    for chain in range(8):  # every chain's head exists (its creation would serialise the appenders)
        with session_scope(factory) as s:
            start = _append(s, _entity(chain, "start"))
    yield engine, factory, start
    engine.dispose()


@pytest.mark.postgres
def test_a_page_does_not_pass_an_append_in_flight_and_misses_nothing(pg: Any) -> None:
    _, factory, start = pg
    a = _Held(factory, _entity(1, "a"))  # takes seq 100 and holds
    with session_scope(factory) as s:
        b = _append(s, _entity(2, "b"))  # takes 101 and commits first
    assert a.seq < b
    reader, out = _paged_in_thread(factory, after=start)
    time.sleep(0.5)
    assert reader.is_alive() and not out  # 101 is not answered while 100 may still appear
    a.end(commit=True)
    reader.join(10)
    assert out == [[a.seq, b]]  # nothing missed, in seq order
    assert _page(factory, after=b) == []


@pytest.mark.postgres
def test_a_rolled_back_append_leaves_a_gap_and_the_reader_goes_on(pg: Any) -> None:
    _, factory, start = pg
    a = _Held(factory, _entity(3, "a"))
    with session_scope(factory) as s:
        b = _append(s, _entity(4, "b"))
    reader, out = _paged_in_thread(factory, after=start)
    time.sleep(0.3)
    assert reader.is_alive()
    a.end(commit=False)
    reader.join(10)
    assert out == [[b]]  # a.seq is a gap: never committed
    with session_scope(factory) as s:
        c = _append(s, _entity(5, "c"))
    assert _page(factory, after=b) == [c]


@pytest.mark.postgres
def test_a_stuck_appender_cannot_hang_the_reader(pg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, factory, start = pg
    monkeypatch.setattr(horizon, "SETTLE_TIMEOUT_SECONDS", 0.3)
    a = _Held(factory, _entity(1, "a"))
    try:
        with session_scope(factory) as s:
            b = _append(s, _entity(2, "b"))
        began = time.monotonic()
        with pytest.raises(AuditNotSettled) as raised:
            _page(factory, after=start)  # today's code answered [b]: the next page skipped a.seq
        assert time.monotonic() - began < 5
        assert raised.value.status == 503 and raised.value.headers == {"Retry-After": "1"}
        with pytest.raises(AuditNotSettled):
            settled_seq(engine, timeout=0.2)
        # the reader's failed wait left no lock behind: appends on any chain go on
        with session_scope(factory) as s:
            c = _append(s, _entity(6, "c"))
    finally:
        a.end(commit=True)
    assert _page(factory, after=start) == [a.seq, b, c]


@pytest.mark.postgres
def test_the_horizon_is_the_last_seq_taken_once_settled(pg_url_test: str) -> None:
    engine = make_engine(pg_url_test)
    try:
        factory = make_sessionmaker(engine)
        assert settled_seq(engine) == 0  # the sequence was never called
        with session_scope(factory) as s:
            first = _append(s, _entity(0, "x"))  # chain 0: its head exists from the migrations
            with pytest.raises(AuditNotSettled):  # this transaction's append is in flight
                settled_seq(engine, timeout=0.2)
        assert settled_seq(engine) == first
        with session_scope(factory) as s:
            assert settled_seq_of(s) == first
            _append(s, _entity(0, "y"))
            _append(s, _entity(3, "z"))  # later appends of a transaction: still under its lock
            with pytest.raises(AuditNotSettled):
                settled_seq(engine, timeout=0.2)
        assert settled_seq(engine) == first + 2
    finally:
        engine.dispose()


def test_the_lock_statements_name_the_same_lock() -> None:
    from gateway.audit.chain import _PG_LOCK_HEAD

    key = f"({horizon.APPEND_LOCK_CLASS}, CAST(CAST(CAST('audit_event_seq' AS regclass) AS oid) AS integer))"
    assert f"pg_advisory_xact_lock_shared{key}" in str(_PG_LOCK_HEAD).replace('"  "', "")
    assert f"pg_advisory_xact_lock{key}" in str(horizon._WAIT)


def test_sqlite_needs_no_horizon(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        assert settled_seq(engine) is None
        with make_sessionmaker(engine)() as s:
            assert settled_seq_of(s) is None
    finally:
        engine.dispose()


def _fill(factory: sessionmaker[Session], n: int) -> list[int]:
    out = []
    for i in range(n):
        with session_scope(factory) as s:
            out.append(_append(s, f"e-{i}"))
    return out


def test_export_stops_at_the_horizon_and_continues_after_it(gateway_env: str) -> None:
    engine = make_engine(gateway_env)
    try:
        factory = make_sessionmaker(engine)
        seqs = _fill(factory, 3)
        runner = CliRunner()
        result = runner.invoke(audit_cli, ["export"])
        assert result.exit_code == 0, result.output
        assert len(result.stdout.splitlines()) == 3
        assert f"exported 3 events up to seq {seqs[-1]}" in result.stderr
        more = _fill(factory, 2)
        result = runner.invoke(audit_cli, ["export", "--after", str(seqs[-1])])
        assert result.exit_code == 0, result.output
        assert [line.count('"seq"') for line in result.stdout.splitlines()] == [1, 1]
        assert f"exported 2 events up to seq {more[-1]}" in result.stderr
        if engine.dialect.name == "postgresql":
            a = _Held(factory, "stuck")
            try:
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(horizon, "SETTLE_TIMEOUT_SECONDS", 0.3)
                    result = runner.invoke(audit_cli, ["export", "--after", str(more[-1])])
                assert result.exit_code == 1
                assert "did not settle" in result.stderr
            finally:
                a.end(commit=True)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_reader_paging_during_parallel_appends_misses_nothing(pg: Any) -> None:
    """Writers on different chains commit out of seq order (a pause between append and commit);
    a reader follows with after=<last seq read> all along: it ends with every event, once."""
    _, factory, start = pg
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(15):
                with session_scope(factory) as s:
                    _append(s, _entity((w + i) % 8, f"w{w}-{i}"))
                    time.sleep(0.002 * ((w * 7 + i * 3) % 5))  # commits overtake each other
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    read: list[int] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                read.extend(_page(factory, read[-1] if read else start))
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    follower = threading.Thread(target=reader)
    follower.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    follower.join(60)
    assert not errors
    read.extend(_page(factory, read[-1] if read else start))
    with session_scope(factory) as s:
        committed = [
            int(v)
            for v in s.scalars(
                select(AuditEvent.seq)
                .where(AuditEvent.seq > start, AuditEvent.action == "attempt")
                .order_by(AuditEvent.seq)
            )
        ]
    assert len(committed) == 4 * 15
    assert read == committed  # in order, none skipped, none twice


@pytest.mark.postgres
def test_waiting_after_appending_in_the_same_transaction_is_refused(pg: Any) -> None:
    from gateway.audit import chain

    assert horizon._HEAD_INFO == chain._HEAD_INFO
    _, factory, _ = pg
    with session_scope(factory) as s:
        assert settled_seq_of(s) is not None
        _append(s, _entity(1, "own"))
        with pytest.raises(RuntimeError, match="call it before"):
            settled_seq_of(s)
    with session_scope(factory) as s:  # a new transaction of the same session may wait again
        assert settled_seq_of(s) is not None
