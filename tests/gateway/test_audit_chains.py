"""Several audit chains (migration 0008): each transaction appends to one chain, chains are
appended to in parallel, and verify still catches every change, deletion, insertion and move, per
chain and position; events written before 0008 keep verifying."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import delete, event, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit import AuditSealer, Entry, append, append_many, verify
from gateway.audit.anchor import Anchor, check_anchors, current_anchor, parse_anchors
from gateway.audit.chain import (
    GENESIS_HASH,
    PLAIN_KEY_ID,
    canonical_bytes,
    canonical_bytes_v1,
    chain_for,
    record_heads,
)
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.migrate import upgrade
from gateway.storage.models import AuditEvent, AuditHead

CHAINS = 4
FOUR = AuditSealer(chains=CHAINS)
T0 = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)


def _entity(chain: int, chains: int = CHAINS, prefix: str = "e") -> str:
    """An entity id whose transactions append to ``chain``."""
    return next(f"{prefix}-{i}" for i in count() if chain_for(f"{prefix}-{i}", chains) == chain)


def _fill(factory: sessionmaker[Session], n: int, sealer: AuditSealer = FOUR) -> None:
    """``n`` transactions of one event each, about ``n`` entities (spread over the chains)."""
    for i in range(n):
        with session_scope(factory) as s:
            append(s, actor="worker:w", action="attempt", entity_type="delivery", entity_id=f"d-{i}",
                   detail={"i": i}, at=T0 + timedelta(seconds=i), sealer=sealer)  # fmt: skip


def _verify(factory: sessionmaker[Session], sealer: AuditSealer = FOUR) -> Any:
    with session_scope(factory) as s:
        return verify(s, sealer=sealer)


def _chain(factory: sessionmaker[Session], chain: int) -> list[AuditEvent]:
    with session_scope(factory) as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.chain == chain).order_by(AuditEvent.chain_seq)))


def _where(ev: AuditEvent) -> str:
    return f"chain {ev.chain} #{ev.chain_seq} (seq {ev.seq})"


def _seal(ev: AuditEvent) -> str:
    digest = FOUR.seal(canonical_bytes(ev), PLAIN_KEY_ID)
    assert digest is not None
    return digest


@pytest.fixture
def filled(session_factory: sessionmaker[Session]) -> tuple[sessionmaker[Session], int]:
    """24 events over 4 chains; returns the factory and the chain the tampering tests target (one
    that is not chain 0 and has at least 4 events)."""
    _fill(session_factory, 24)
    result = _verify(session_factory)
    assert result.ok, result.problems
    assert sorted(result.heads) == [0, 1, 2, 3], "every chain is used"
    assert sum(n for n, _ in result.heads.values()) == result.checked == 24
    target = max((c for c in result.heads if c != 0), key=lambda c: result.heads[c][0])
    assert result.heads[target][0] >= 4
    return session_factory, target


def test_each_chain_is_gapless_linked_and_ordered_by_seq(filled: tuple[sessionmaker[Session], int]) -> None:
    factory, _ = filled
    seqs: list[int] = []
    for chain in range(CHAINS):
        events = _chain(factory, chain)
        assert [e.chain_seq for e in events] == list(range(1, len(events) + 1))
        assert [e.prev_hash for e in events] == [GENESIS_HASH] + [e.hash for e in events[:-1]]
        assert [e.seq for e in events] == sorted(e.seq for e in events)  # seq increases along the chain
        assert all(chain_for(e.entity_id, CHAINS) == chain for e in events)
        seqs += [e.seq for e in events]
    assert sorted(seqs) == list(range(1, 25))  # one global order, no rollback here: no gap


def test_modified_event_is_reported_with_its_chain_and_position(filled: tuple[sessionmaker[Session], int]) -> None:
    factory, target = filled
    victim = _chain(factory, target)[1]
    with session_scope(factory) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == victim.seq).values(outcome="failure"))
    assert _verify(factory).problems == [f"{_where(victim)}: content does not match its hash (event modified)"]


def test_deleted_event_is_a_gap_in_its_chain(filled: tuple[sessionmaker[Session], int]) -> None:
    factory, target = filled
    events = _chain(factory, target)
    with session_scope(factory) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == events[1].seq))
    assert _verify(factory).problems == [
        f"{_where(events[2])}: events #2 are missing (deleted)",
        f"{_where(events[2])}: prev_hash does not match the previous event's hash (inserted/deleted)",
    ]


def test_inserted_event_is_detected(filled: tuple[sessionmaker[Session], int]) -> None:
    """A forged event slipped in at #2 of the chain, well linked and hashed; the later events are
    renumbered and the head moved: the renumbered events no longer match their hashes."""
    factory, target = filled
    events = _chain(factory, target)
    with session_scope(factory) as s:
        for ev in reversed(events[1:]):
            s.execute(update(AuditEvent).where(AuditEvent.seq == ev.seq).values(chain_seq=ev.chain_seq + 1))
        forged = AuditEvent(seq=10_000, chain=target, chain_seq=2, id="00000000-0000-4000-8000-0000000000ff",
                            recorded_at=T0, tenant_id=None, actor="user:intruder", action="read",
                            entity_type="submission", entity_id="x", person_ref="p", outcome="success",
                            detail=None, prev_hash=events[0].hash, key_id=PLAIN_KEY_ID)  # fmt: skip
        forged.hash = _seal(forged)
        s.add(forged)
        s.execute(update(AuditHead).where(AuditHead.id == target).values(last_seq=len(events) + 1))
    problems = _verify(factory).problems
    moved = f"chain {target} #3 (seq {events[1].seq})"
    assert f"{moved}: content does not match its hash (event modified)" in problems
    assert f"{moved}: prev_hash does not match the previous event's hash (inserted/deleted)" in problems
    assert f"{moved}: seq does not increase along the chain (renumbered)" in problems  # forged seq is too high
    assert not any(p.startswith(f"chain {target} #2 ") for p in problems)  # the forgery itself is consistent


def test_event_moved_to_another_chain_is_detected(filled: tuple[sessionmaker[Session], int]) -> None:
    """The last event of one chain becomes the last of another, linked there, both heads moved to
    match: only the hash (which covers the chain and the position) gives it away."""
    factory, target = filled
    other = next(c for c in range(CHAINS) if c != target)
    source, dest = _chain(factory, target), _chain(factory, other)
    moved = source[-1]
    with session_scope(factory) as s:
        s.execute(
            update(AuditEvent)
            .where(AuditEvent.seq == moved.seq)
            .values(chain=other, chain_seq=len(dest) + 1, prev_hash=dest[-1].hash)
        )
        s.execute(update(AuditHead).where(AuditHead.id == target).values(last_seq=len(source) - 1,
                                                                         last_hash=source[-2].hash))  # fmt: skip
        s.execute(update(AuditHead).where(AuditHead.id == other).values(last_seq=len(dest) + 1, last_hash=moved.hash))
    problems = _verify(factory).problems
    where = f"chain {other} #{len(dest) + 1} (seq {moved.seq})"
    assert f"{where}: content does not match its hash (event modified)" in problems
    assert all(p.startswith(where) for p in problems), problems


def test_a_chain_relabelled_whole_is_detected(filled: tuple[sessionmaker[Session], int]) -> None:
    """Every event of a chain and its head given another chain number: links and positions still
    hold, only the hash covering the chain number tells."""
    factory, target = filled
    events = _chain(factory, target)
    with session_scope(factory) as s:
        s.execute(update(AuditEvent).where(AuditEvent.chain == target).values(chain=CHAINS + 3))
        s.execute(update(AuditHead).where(AuditHead.id == target).values(id=CHAINS + 3))
    assert _verify(factory).problems == [
        f"chain {CHAINS + 3} #{e.chain_seq} (seq {e.seq}): content does not match its hash (event modified)"
        for e in events
    ]


def test_head_mismatch_and_missing_head_are_per_chain(filled: tuple[sessionmaker[Session], int]) -> None:
    factory, target = filled
    events = _chain(factory, target)
    with session_scope(factory) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == events[-1].seq))
    n = len(events)
    assert _verify(factory).problems == [
        f"chain {target} head: records #{n} but the chain ends at #{n - 1} (events removed from or added at the tail)"
    ]
    with session_scope(factory) as s:
        s.execute(delete(AuditHead).where(AuditHead.id == target))
    assert _verify(factory).problems == [f"chain {target}: head row is missing (the chain ends at #{n - 1})"]


def test_unknown_key_is_reported_per_chain(filled: tuple[sessionmaker[Session], int]) -> None:
    factory, target = filled
    victim = _chain(factory, target)[0]
    with session_scope(factory) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == victim.seq).values(key_id="stolen"))
    assert _verify(factory).problems == [f"{_where(victim)}: sealed with unknown audit key 'stolen'"]


def test_truncated_tail_with_heads_moved_is_caught_by_the_anchor(filled: tuple[sessionmaker[Session], int]) -> None:
    factory, target = filled
    with session_scope(factory) as s:
        anchor = current_anchor(s)
    assert len(anchor.heads) == CHAINS
    (line,) = parse_anchors([anchor.to_json()])
    assert line == anchor
    events = _chain(factory, target)
    with session_scope(factory) as s:  # drop the last two events of one chain, move its head back
        s.execute(delete(AuditEvent).where(AuditEvent.seq.in_([events[-1].seq, events[-2].seq])))
        s.execute(
            update(AuditHead).where(AuditHead.id == target).values(last_seq=len(events) - 2, last_hash=events[-3].hash)
        )
    assert _verify(factory).ok  # consistent again: only the anchor can tell
    with session_scope(factory) as s:
        assert check_anchors(s, [anchor]) == [
            f"anchor chain {target} #{len(events)} (anchored {anchor.anchored_at}): "
            "the chain has no such event (missing: truncated)"
        ]


def test_recorded_heads_tie_the_chains_together(filled: tuple[sessionmaker[Session], int]) -> None:
    """record_heads appends an event holding every chain's head: a consistent truncation or
    rewrite of another chain before those positions (no HMAC key, heads moved) is then caught
    without any external anchor."""
    factory, _ = filled
    with session_scope(factory) as s:
        mark = record_heads(s, actor="gateway:test", sealer=FOUR)
    assert _verify(factory).ok
    target = next(c for c in range(1, CHAINS) if c != mark.chain)
    events = _chain(factory, target)
    with session_scope(factory) as s:  # drop the last event of another chain, move its head back
        s.execute(delete(AuditEvent).where(AuditEvent.seq == events[-1].seq))
        s.execute(
            update(AuditHead).where(AuditHead.id == target).values(last_seq=len(events) - 1, last_hash=events[-2].hash)
        )
    assert _verify(factory).problems == [
        f"{_where(mark)}: recorded chain {target} at #{len(events)}, which no longer exists (truncated)"
    ]
    with session_scope(factory) as s:  # ... or rewrite its last event and recompute its hash and head
        forged = AuditEvent(**{c.key: getattr(events[-1], c.key) for c in AuditEvent.__table__.c})
        forged.outcome = "failure"
        forged.hash = _seal(forged)
        s.add(forged)
        s.execute(update(AuditHead).where(AuditHead.id == target).values(last_seq=len(events), last_hash=forged.hash))
    assert _verify(factory).problems == [
        f"{_where(mark)}: recorded chain {target} at #{len(events)}, which now holds another hash"
    ]


def test_one_transaction_appends_to_one_chain_whatever_its_entities(session_factory: sessionmaker[Session]) -> None:
    first = _entity(2)
    others = [_entity(c, prefix="o") for c in (0, 1, 3)]
    with session_scope(session_factory) as s:
        append(s, actor="worker:w", action="attempt", entity_type="delivery", entity_id=first, sealer=FOUR)
        append_many(
            s,
            [Entry(actor="worker:w", action="sent", entity_type="delivery", entity_id=e) for e in others],
            sealer=FOUR,
        )
        with s.begin_nested():  # a savepoint keeps the transaction's chain
            append(s, actor="worker:w", action="read", entity_type="delivery", entity_id=others[0], sealer=FOUR)
    with session_scope(session_factory) as s:  # the next transaction chooses again
        append(s, actor="worker:w", action="read", entity_type="delivery", entity_id=others[1], sealer=FOUR)
    with session_scope(session_factory) as s:
        placed = s.execute(select(AuditEvent.chain, AuditEvent.chain_seq).order_by(AuditEvent.seq)).all()
    assert placed == [(2, 1), (2, 2), (2, 3), (2, 4), (2, 5), (1, 1)]
    assert _verify(session_factory).ok


def test_the_number_of_chains_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.settings import Settings

    monkeypatch.setenv("DUI_GATEWAY_AUDIT_CHAINS", "16")
    assert AuditSealer.for_settings(Settings()).chains == 16
    monkeypatch.delenv("DUI_GATEWAY_AUDIT_CHAINS")
    assert AuditSealer.for_settings(Settings()).chains is None  # the database's default
    with pytest.raises(ValueError):
        AuditSealer(chains=0)


def test_defaults_one_chain_on_sqlite_eight_on_postgresql(session_factory: sessionmaker[Session]) -> None:
    with session_scope(session_factory) as s:
        dialect = s.get_bind().dialect.name
        assert AuditSealer().chain_count(s) == {"sqlite": 1, "postgresql": 8}[dialect]


# -- PostgreSQL: parallel appends --------------------------------------------------------------
@pytest.mark.postgres
def test_a_transaction_locks_one_head_and_others_append_meanwhile(pg_url_test: str) -> None:
    engine = make_engine(pg_url_test)
    factory = make_sessionmaker(engine)
    sealer = AuditSealer(chains=8)
    try:
        for chain in range(8):  # every head exists
            with session_scope(factory) as s:
                append(s, actor="w", action="attempt", entity_type="d", entity_id=_entity(chain, 8), sealer=sealer)
        held = _entity(5, 8, prefix="h")
        with session_scope(factory) as s:
            append(s, actor="w", action="attempt", entity_type="d", entity_id=held, sealer=sealer)
            for chain in range(8):  # entities of every chain, same transaction: still chain 5 only
                append(s, actor="w", action="sent", entity_type="d", entity_id=_entity(chain, 8, "x"), sealer=sealer)
            with engine.connect() as other:
                free = other.execute(text("SELECT id FROM audit_head ORDER BY id FOR UPDATE SKIP LOCKED")).scalars()
                assert list(free) == [0, 1, 2, 3, 4, 6, 7]
                other.rollback()
            done: list[int] = []

            def elsewhere(entity: str) -> None:
                with session_scope(factory) as s2:
                    done.append(
                        append(s2, actor="w", action="read", entity_type="d", entity_id=entity, sealer=sealer).chain
                    )

            free_writer = threading.Thread(target=elsewhere, args=(_entity(3, 8, "y"),))
            free_writer.start()
            free_writer.join(10)
            assert done == [3]  # another chain: not held up by this transaction
            blocked = threading.Thread(target=elsewhere, args=(_entity(5, 8, "z"),))
            blocked.start()
            time.sleep(0.5)
            assert blocked.is_alive() and done == [3]  # the same chain waits for the commit
        blocked.join(10)
        assert done == [3, 5]
        result = _verify(factory, sealer)
        assert result.ok and result.checked == 8 + 1 + 8 + 2, result.problems
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_concurrent_threads_fill_valid_chains(pg_url_test: str) -> None:
    writers, per_writer = 6, 25
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def writer(n: int) -> None:
        engine = make_engine(pg_url_test)
        factory = make_sessionmaker(engine)
        try:
            start.wait()
            for i in range(per_writer):
                with session_scope(factory) as s:
                    append_many(s, [Entry(actor=f"worker:{n}", action=a, entity_type="delivery",
                                          entity_id=f"d-{n}-{i}") for a in ("attempt", "sent")],
                                sealer=AuditSealer(chains=8))  # fmt: skip
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    engine = make_engine(pg_url_test)
    try:
        factory = make_sessionmaker(engine)
        result = _verify(factory, AuditSealer(chains=8))
        assert result.ok, result.problems
        assert result.checked == 2 * writers * per_writer == sum(n for n, _ in result.heads.values())
        assert len(result.heads) == 8
        with session_scope(factory) as s:
            pairs = s.execute(select(AuditEvent.entity_id, AuditEvent.chain, AuditEvent.chain_seq)).all()
        by_entity: dict[str, list[tuple[int, int]]] = {}
        for entity, chain, position in pairs:
            by_entity.setdefault(entity, []).append((chain, position))
        # each transaction's two events: same chain, consecutive positions
        for placed in by_entity.values():
            (chain, first), (other, second) = sorted(placed)
            assert chain == other and second == first + 1, placed
    finally:
        engine.dispose()


_WRITER_SCRIPT = """
import sys
from gateway.audit import AuditSealer, append
from gateway.storage.db import make_engine, make_sessionmaker, session_scope

url, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine = make_engine(url)
factory = make_sessionmaker(engine)
print("ready", flush=True)
sys.stdin.readline()
for i in range(n):
    with session_scope(factory) as s:
        append(s, actor=f"worker:{who}", action="attempt", entity_type="delivery", entity_id=f"{who}-{i}",
               sealer=AuditSealer())
engine.dispose()
print("done", flush=True)
"""


@pytest.mark.postgres
def test_processes_appending_at_once_keep_every_chain_valid(pg_url_test: str) -> None:
    """Three real processes with the default sealer (8 chains on PostgreSQL)."""
    n = 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER_SCRIPT, pg_url_test, name, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2", "p3")
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.wait(timeout=120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    stream.close()
    engine = make_engine(pg_url_test)
    try:
        result = _verify(make_sessionmaker(engine), AuditSealer())
        assert result.ok, result.problems
        assert result.checked == 3 * n == sum(m for m, _ in result.heads.values())
        assert len(result.heads) == 8
    finally:
        engine.dispose()


# -- events written before 0008 ----------------------------------------------------------------
def test_format_1_is_the_pre_0008_canonical_form() -> None:
    """Pinned on a digest computed with the pre-0008 code (main at 721e76f), so that events it
    wrote keep verifying."""
    ev = AuditEvent(
        seq=7,
        id="00000000-0000-4000-8000-000000000007",
        recorded_at=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        tenant_id="t1",
        actor="worker:w1",
        action="delivered",
        entity_type="delivery",
        entity_id="d-7",
        person_ref="p-1",
        outcome="success",
        detail={"destination": "dmp", "n": 1.5, "flags": [True, None]},
        prev_hash="a" * 64,
        key_id="sha256",
    )
    assert AuditSealer().seal(canonical_bytes_v1(ev), "sha256") == (
        "5a16e88ee3000d1c24a3d684d54fd6315cb61c795423b85f8adda1cea4e9d0a3"
    )


_OLD_EVENTS = sa.table(
    "audit_events",
    *(sa.column(name) for name in ("seq", "id", "recorded_at", "tenant_id", "actor", "action", "entity_type",
                                   "entity_id", "person_ref", "outcome", "prev_hash", "hash", "key_id")),
    sa.column("detail", sa.JSON),
)  # fmt: skip


def _write_pre_0008_chain(url: str, n: int) -> list[str]:
    """``n`` events as the code before 0008 wrote them, into a database at 0007: format-1 hashes,
    no chain columns, head id 1. Returns their hashes."""
    upgrade(url, "0007")
    engine = make_engine(url)
    hashes: list[str] = []
    try:
        with engine.begin() as conn:
            prev = GENESIS_HASH
            for seq in range(1, n + 1):
                ev = AuditEvent(
                    seq=seq,
                    id=f"00000000-0000-4000-8000-{seq:012d}",
                    recorded_at=T0 + timedelta(minutes=seq),
                    tenant_id="t1",
                    actor="worker:old",
                    action="delivered",
                    entity_type="delivery",
                    entity_id=f"old-{seq}",
                    person_ref=None,
                    outcome="success",
                    detail={"n": seq},
                    prev_hash=prev,
                    key_id=PLAIN_KEY_ID,
                )
                ev.hash = prev = FOUR.seal(canonical_bytes_v1(ev), PLAIN_KEY_ID) or ""
                row = {c.name: getattr(ev, c.name) for c in _OLD_EVENTS.columns}
                conn.execute(_OLD_EVENTS.insert().values(**row))
                hashes.append(ev.hash)
            conn.execute(text("UPDATE audit_head SET last_seq = :n, last_hash = :h WHERE id = 1"), {"n": n, "h": prev})
    finally:
        engine.dispose()
    upgrade(url)
    return hashes


def _migration_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    return str(request.getfixturevalue("pg_url_empty"))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_events_from_before_0008_verify_and_stay_protected(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    url = _migration_url(request, backend, tmp_path)
    hashes = _write_pre_0008_chain(url, 5)
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    try:
        with session_scope(factory) as s:
            placed = s.execute(select(AuditEvent.seq, AuditEvent.chain, AuditEvent.chain_seq)).all()
            assert sorted(placed) == [(i, 0, i) for i in range(1, 6)]
        result = _verify(factory)
        assert result.ok and result.checked == 5 and result.heads == {0: (5, hashes[-1])}, result.problems
        # new events after them, in chain 0 and elsewhere; the global seq goes on after 5
        for chain in range(CHAINS):
            with session_scope(factory) as s:
                append(s, actor="worker:new", action="attempt", entity_type="delivery", entity_id=_entity(chain),
                       sealer=FOUR)  # fmt: skip
        assert _verify(factory).ok
        with session_scope(factory) as s:
            new = s.execute(select(AuditEvent.seq, AuditEvent.chain_seq).where(AuditEvent.chain == 0)).all()
            assert sorted(new)[-1] == (6, 6)  # chain 0 goes on from the migrated head
        # an anchor written before 0008 anchors chain 0
        (old_anchor,) = parse_anchors([f'{{"anchored_at": "2026-11-01T00:00:00Z", "hash": "{hashes[4]}", "seq": 5}}'])
        (old_ok_line,) = parse_anchors([f"OK: 5 events checked; head seq 5 hash {hashes[4]}"])
        assert old_anchor.heads == old_ok_line.heads == ((0, 5, hashes[4]),)
        with session_scope(factory) as s:
            assert check_anchors(s, [old_anchor, old_ok_line]) == []

        # tampering with an old event is still caught
        with session_scope(factory) as s:
            s.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(actor="worker:other"))
        assert _verify(factory).problems == ["chain 0 #3 (seq 3): content does not match its hash (event modified)"]
        with session_scope(factory) as s:
            s.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(actor="worker:old"))
        assert _verify(factory).ok
        # a format-1 event cannot be moved: its hash does not cover the chain, verify checks its place
        with session_scope(factory) as s:
            s.execute(update(AuditEvent).where(AuditEvent.seq == 5).values(chain=2, chain_seq=2))
        problems = _verify(factory).problems
        assert "chain 2 #2 (seq 5): a format-1 event (before 0008) out of its place (moved or renumbered)" in problems
        with session_scope(factory) as s:
            s.execute(update(AuditEvent).where(AuditEvent.seq == 5).values(chain=0, chain_seq=5))
            # ... nor renumbered within chain 0 (its seq and position then differ)
            s.execute(update(AuditEvent).where(AuditEvent.seq == 6).values(chain_seq=7))
            s.execute(update(AuditEvent).where(AuditEvent.seq == 5).values(chain_seq=6))
        problems = _verify(factory).problems
        assert "chain 0 #6 (seq 5): a format-1 event (before 0008) out of its place (moved or renumbered)" in problems
        with session_scope(factory) as s:  # an old anchor still catches a rewrite of chain 0's history
            s.execute(update(AuditEvent).where(AuditEvent.seq == 5).values(chain_seq=5, hash="f" * 64))
            assert check_anchors(s, [old_anchor]) == [
                "anchor chain 0 #5 (anchored 2026-11-01T00:00:00Z): the chain holds another hash there (rewritten)"
            ]
    finally:
        engine.dispose()


def test_an_append_is_at_most_three_statements(db_url: str) -> None:
    """The first append of a transaction: one statement locks the head (on PostgreSQL, the same
    statement takes the global seqs), then one INSERT and one UPDATE of the head (on PostgreSQL,
    one statement doing both: the events' unnest INSERT in a CTE, the head's UPDATE)."""
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    statements: list[str] = []
    try:
        _fill(factory, 1, AuditSealer())  # "d-0": its chain's head exists (a chain's first append creates it)

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        with session_scope(factory) as s:
            append(s, actor="w", action="attempt", entity_type="d", entity_id="d-0", sealer=AuditSealer())
        sent = [st for st in statements if st.split()[0].upper() not in ("BEGIN", "COMMIT")]
        if engine.dialect.name == "postgresql":
            assert len(sent) == 2
            assert "FOR UPDATE" in sent[0]
            assert "INSERT INTO audit_events" in sent[1] and "UPDATE audit_head" in sent[1]
        else:
            assert [st.split()[0].upper() for st in sent] == ["SELECT", "INSERT", "UPDATE"]
    finally:
        engine.dispose()


def test_anchor_lines_name_every_chain() -> None:
    anchor = Anchor(heads=((0, 3, "a" * 64), (1, 7, "b" * 64)), anchored_at="2026-12-01T00:00:00.000000Z")
    assert parse_anchors([anchor.to_json()]) == [anchor]
    ok_line = f"OK: 10 events checked in 2 chains; chain 0 head #3 hash {'a' * 64}; chain 1 head #7 hash {'b' * 64}"
    assert parse_anchors([ok_line])[0].heads == anchor.heads
    a = "a" * 64
    twice = {"heads": [{"chain": 0, "chain_seq": 1, "hash": a}, {"chain": 0, "chain_seq": 2, "hash": a}]}
    for bad in ('{"heads": []}', '{"heads": [{"chain": 0, "chain_seq": 1, "hash": "xyz"}]}', json.dumps(twice)):
        with pytest.raises(ValueError):
            parse_anchors([bad])


def test_downgrade_below_0008_is_refused_once_events_exist(sqlite_url: str) -> None:
    from alembic import command

    from gateway.storage.migrate import alembic_config

    engine = make_engine(sqlite_url)
    try:
        _fill(make_sessionmaker(engine), 1)
        with pytest.raises(RuntimeError, match="cannot downgrade below 0008"), engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0007")
        with engine.connect() as conn:  # nothing changed
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0008"
    finally:
        engine.dispose()
