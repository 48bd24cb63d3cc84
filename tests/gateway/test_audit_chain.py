"""Audit hash chain: appends stay linear, and every kind of tampering is detected by verify.

These tests run with one chain (``AuditSealer(chains=1)``: seq and the position in the chain are
then the same); tests/gateway/test_audit_chains.py covers several chains."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import pytest
from sqlalchemy import delete, event, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit import AuditSealer, Entry, append, append_many, verify
from gateway.audit.chain import GENESIS_HASH, PLAIN_KEY_ID, canonical_bytes
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.models import AuditEvent, AuditHead

PLAIN = AuditSealer(chains=1)
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def _fill(factory: sessionmaker[Session], n: int, sealer: AuditSealer = PLAIN) -> None:
    for i in range(n):
        with session_scope(factory) as s:
            append(
                s,
                actor="client:c1",
                action=["received", "mapped", "routed", "attempt", "delivered"][i % 5],
                entity_type="submission",
                entity_id=f"sub-{i}",
                tenant_id="t1",
                person_ref=f"p-{i % 3}",
                detail={"i": i, "destination": "dmp", "ratio": 0.1 * i, "flags": [True, None]},
                at=T0 + timedelta(seconds=i),
                sealer=sealer,
            )


def _verify(factory: sessionmaker[Session], sealer: AuditSealer = PLAIN):
    with session_scope(factory) as s:
        return verify(s, sealer=sealer)


def test_untouched_chain_verifies(session_factory: sessionmaker[Session]) -> None:
    empty = _verify(session_factory)
    assert empty.ok and empty.checked == 0 and empty.head_hash == GENESIS_HASH
    _fill(session_factory, 6)
    result = _verify(session_factory)
    assert result.ok, result.problems
    assert result.checked == 6 and result.head_seq == 6
    with session_scope(session_factory) as s:
        events = s.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
        assert events[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in pairwise(events))
        assert events[2].recorded_at.replace(tzinfo=UTC) == T0 + timedelta(seconds=2)
        assert events[2].detail == {"i": 2, "destination": "dmp", "ratio": 0.1 * 2, "flags": [True, None]}


def test_modified_field_is_detected(session_factory: sessionmaker[Session]) -> None:
    _fill(session_factory, 5)
    with session_scope(session_factory) as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(outcome="failure"))
    result = _verify(session_factory)
    assert not result.ok
    assert result.problems == ["chain 0 #3 (seq 3): content does not match its hash (event modified)"]


@pytest.mark.parametrize(
    "column,value",
    [
        ("actor", "user:someone-else"),
        ("person_ref", "p-other"),
        ("detail", {"i": 999}),
        ("recorded_at", T0 + timedelta(days=1)),
        ("tenant_id", None),
    ],
)
def test_every_field_is_covered(sqlite_url: str, column: str, value: object) -> None:
    engine = make_engine(sqlite_url)
    factory = make_sessionmaker(engine)
    try:
        _fill(factory, 3)
        with session_scope(factory) as s:
            s.execute(update(AuditEvent).where(AuditEvent.seq == 2).values({column: value}))
        assert _verify(factory).problems == ["chain 0 #2 (seq 2): content does not match its hash (event modified)"]
    finally:
        engine.dispose()


def test_modified_event_with_recomputed_hash_breaks_the_next_link(session_factory: sessionmaker[Session]) -> None:
    _fill(session_factory, 5)
    with session_scope(session_factory) as s:
        ev = s.get(AuditEvent, 3)
        assert ev is not None
        ev.outcome = "failure"
        ev.hash = PLAIN.seal(canonical_bytes(ev), PLAIN_KEY_ID) or ""
    result = _verify(session_factory)
    assert not result.ok
    assert any(p.startswith("chain 0 #4 (seq 4): prev_hash does not match") for p in result.problems), result.problems
    assert not any(p.startswith("seq 3:") for p in result.problems)


def test_deleted_event_is_detected(session_factory: sessionmaker[Session]) -> None:
    _fill(session_factory, 5)
    with session_scope(session_factory) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq == 2))
    result = _verify(session_factory)
    assert not result.ok
    assert "chain 0 #3 (seq 3): events #2 are missing (deleted)" in result.problems
    assert any(p.startswith("chain 0 #3 (seq 3): prev_hash does not match") for p in result.problems)


def test_inserted_event_is_detected(session_factory: sessionmaker[Session]) -> None:
    _fill(session_factory, 5)
    # Insert a forged event in the middle: renumber 3..5 to 4..6 and slip a well-formed event in as 3,
    # correctly linked to event 2 and correctly hashed.
    with session_scope(session_factory) as s:
        for seq in (5, 4, 3):
            s.execute(update(AuditEvent).where(AuditEvent.seq == seq).values(seq=seq + 1, chain_seq=seq + 1))
        prev = s.get(AuditEvent, 2)
        assert prev is not None
        forged = AuditEvent(
            seq=3,
            chain=0,
            chain_seq=3,
            id="00000000-0000-4000-8000-000000000003",
            recorded_at=T0 + timedelta(seconds=2, milliseconds=500),
            tenant_id="t1",
            actor="user:intruder",
            action="read",
            entity_type="submission",
            entity_id="sub-x",
            person_ref="p-1",
            outcome="success",
            detail=None,
            prev_hash=prev.hash,
            key_id=PLAIN_KEY_ID,
        )
        forged.hash = PLAIN.seal(canonical_bytes(forged), PLAIN_KEY_ID) or ""
        s.add(forged)
        s.execute(update(AuditHead).values(last_seq=6))
    result = _verify(session_factory)
    assert not result.ok
    # the renumbered events no longer match their hashes, and event 4 (old 3) is not linked to the forgery
    assert "chain 0 #4 (seq 4): content does not match its hash (event modified)" in result.problems
    assert any(p.startswith("chain 0 #4 (seq 4): prev_hash does not match") for p in result.problems)


def test_appended_forgery_without_head_is_detected(session_factory: sessionmaker[Session]) -> None:
    _fill(session_factory, 3)
    with session_scope(session_factory) as s:
        last = s.get(AuditEvent, 3)
        assert last is not None
        forged = dict(
            seq=4,
            chain=0,
            chain_seq=4,
            id="00000000-0000-4000-8000-000000000004",
            recorded_at=T0 + timedelta(seconds=9),
            tenant_id=None,
            actor="user:intruder",
            action="read",
            entity_type="submission",
            entity_id="sub-x",
            person_ref=None,
            outcome="success",
            detail=None,
            prev_hash=last.hash,
            key_id=PLAIN_KEY_ID,
        )
        forged["hash"] = PLAIN.seal(canonical_bytes(AuditEvent(**forged)), PLAIN_KEY_ID)
        s.execute(insert(AuditEvent).values(**forged))
    result = _verify(session_factory)
    assert result.problems == [
        "chain 0 head: records #3 but the chain ends at #4 (events removed from or added at the tail)"
    ]


def test_truncated_tail_is_detected(session_factory: sessionmaker[Session]) -> None:
    _fill(session_factory, 5)
    with session_scope(session_factory) as s:
        s.execute(delete(AuditEvent).where(AuditEvent.seq >= 4))
    result = _verify(session_factory)
    assert result.problems == [
        "chain 0 head: records #5 but the chain ends at #3 (events removed from or added at the tail)"
    ]


def test_hmac_chain_cannot_be_recomputed_without_the_key(session_factory: sessionmaker[Session]) -> None:
    sealer = AuditSealer((("a1", os.urandom(32)),), chains=1)
    _fill(session_factory, 4, sealer)
    assert _verify(session_factory, sealer).ok
    # Without the key, the events do not verify at all.
    assert _verify(session_factory, PLAIN).problems[0] == "chain 0 #1 (seq 1): sealed with unknown audit key 'a1'"
    # An attacker with database access rewrites event 2 and recomputes the whole chain and head,
    # once as a plain SHA-256 chain and once with a key of their own under the same key id.
    for forger in (PLAIN, AuditSealer((("a1", os.urandom(32)),), chains=1)):
        with session_scope(session_factory) as s:
            prev = GENESIS_HASH
            for ev in s.scalars(select(AuditEvent).order_by(AuditEvent.seq)):
                if ev.seq == 2:
                    ev.outcome = "failure"
                ev.prev_hash = prev
                ev.key_id = forger.current_id
                ev.hash = forger.seal(canonical_bytes(ev), ev.key_id) or ""
                prev = ev.hash
            s.execute(update(AuditHead).values(last_hash=prev))
        result = _verify(session_factory, sealer)
        assert not result.ok
        assert len(result.problems) >= 4, result.problems  # every event is flagged


def test_key_rotation_keeps_old_events_verifiable(session_factory: sessionmaker[Session]) -> None:
    old = ("a1", os.urandom(32))
    new = ("a2", os.urandom(32))
    _fill(session_factory, 2, AuditSealer((old,), chains=1))
    _fill(session_factory, 2, AuditSealer((new, old), chains=1))
    assert _verify(session_factory, AuditSealer((new, old), chains=1)).ok
    with session_scope(session_factory) as s:
        assert s.scalars(select(AuditEvent.key_id).order_by(AuditEvent.seq)).all() == ["a1", "a1", "a2", "a2"]
    assert _verify(session_factory, AuditSealer((new,), chains=1)).problems == [
        "chain 0 #1 (seq 1): sealed with unknown audit key 'a1'",
        "chain 0 #2 (seq 2): sealed with unknown audit key 'a1'",
    ]


def test_non_utc_timestamps_are_stored_as_the_same_instant(session_factory: sessionmaker[Session]) -> None:
    paris = timezone(timedelta(hours=2))
    with session_scope(session_factory) as s:
        append(s, actor="worker:w1", action="attempt", entity_type="delivery", entity_id="d1",
               at=datetime(2026, 6, 1, 12, 0, tzinfo=paris), sealer=PLAIN)  # fmt: skip
    with session_scope(session_factory) as s:
        ev = s.get(AuditEvent, 1)
        assert ev is not None
        assert ev.recorded_at.replace(tzinfo=ev.recorded_at.tzinfo or UTC) == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert _verify(session_factory).ok


@pytest.mark.parametrize(
    "detail",
    [
        {"nom": "DUPONT"},
        {"patient": {"birth_date": "1950-01-01"}},
        {"given": ["Jean"]},
        {"firstName": "x"},
        {"name": "x"},
        {"date_of_birth": "x"},
        {"ins": "x"},
        {"note": "279035121518989"},  # NIR-shaped (test INS from the ANS samples)
        {"items": ["1790351215189"]},  # 13-character NIR without key
        {"x": float("nan")},
        {"x": object()},
    ],
)
def test_identity_data_is_refused_in_detail(sqlite_url: str, detail: dict) -> None:
    engine = make_engine(sqlite_url)
    try:
        with session_scope(make_sessionmaker(engine)) as s, pytest.raises(ValueError):
            append(s, actor="client:c", action="received", entity_type="submission", entity_id="s",
                   detail=detail, sealer=PLAIN)  # fmt: skip
    finally:
        engine.dispose()


def test_technical_detail_is_accepted(sqlite_url: str) -> None:
    detail = {"connector_name": "dmp", "finess": "750000010", "http_status": 503, "hostname": "peer.local",
              "document_id": "1.2.250.1.999.1.1.42", "attempt": 3}  # fmt: skip
    engine = make_engine(sqlite_url)
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            ev = append(s, actor="worker:w", action="attempt", entity_type="delivery", entity_id="d", detail=detail,
                        outcome="failure", sealer=PLAIN)  # fmt: skip
            assert ev.detail == detail
    finally:
        engine.dispose()


def test_invalid_arguments_are_refused(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            for kwargs in ({"outcome": "ok"}, {"action": "Bad Action"}, {"actor": ""}):
                args = {"actor": "client:c", "action": "received", "entity_type": "submission", "entity_id": "s"}
                args.update(kwargs)
                with pytest.raises(ValueError):
                    append(s, sealer=PLAIN, **args)  # type: ignore[arg-type]
    finally:
        engine.dispose()


def test_rolled_back_append_leaves_no_trace(session_factory: sessionmaker[Session]) -> None:
    _fill(session_factory, 2)
    with pytest.raises(RuntimeError), session_scope(session_factory) as s:
        append(s, actor="client:c", action="received", entity_type="submission", entity_id="s", sealer=PLAIN)
        raise RuntimeError("business step failed")
    _fill(session_factory, 1)
    result = _verify(session_factory)
    assert result.ok and result.checked == 3


def test_concurrent_appends_keep_one_linear_chain(db_url: str) -> None:
    """Several writers, each with its own engine (as separate processes would), append at once."""
    writers, per_writer = 4, 15
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def writer(n: int) -> None:
        engine = make_engine(db_url)
        factory = make_sessionmaker(engine)
        try:
            start.wait()
            for i in range(per_writer):
                with session_scope(factory) as s:
                    append(s, actor=f"worker:{n}", action="attempt", entity_type="delivery",
                           entity_id=f"d-{n}-{i}", sealer=PLAIN)  # fmt: skip
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
    engine = make_engine(db_url)
    try:
        factory = make_sessionmaker(engine)
        result = _verify(factory)
        assert result.ok, result.problems
        assert result.checked == writers * per_writer == result.head_seq
        with session_scope(factory) as s:
            actors = s.scalars(select(AuditEvent.actor)).all()
            assert {a: actors.count(a) for a in set(actors)} == {f"worker:{n}": per_writer for n in range(writers)}
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
               sealer=AuditSealer(chains=1))
engine.dispose()
print("done", flush=True)
"""


def test_appends_from_two_processes_keep_one_linear_chain(db_url: str) -> None:
    """Two real processes (API + worker, say) append to the same database at the same time."""
    n = 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER_SCRIPT, db_url, name, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:  # release both at once
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
    engine = make_engine(db_url)
    try:
        factory = make_sessionmaker(engine)
        result = _verify(factory)
        assert result.ok, result.problems
        assert result.checked == 2 * n == result.head_seq
        with session_scope(factory) as s:
            actors = s.scalars(select(AuditEvent.actor).order_by(AuditEvent.seq)).all()
        assert actors.count("worker:p1") == actors.count("worker:p2") == n
    finally:
        engine.dispose()


def test_append_many_chains_in_order_with_one_insert(session_factory: sessionmaker[Session]) -> None:
    _fill(session_factory, 1)
    statements: list[str] = []
    engine = session_factory.kw["bind"]

    def count(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    entries = [
        Entry(actor="worker:w", action=action, entity_type="delivery", entity_id="d1", at=T0, detail={"n": n})
        for n, action in enumerate(["attempt", "delivered", "sent"])
    ]
    event.listen(engine, "before_cursor_execute", count)
    try:
        with session_scope(session_factory) as s:
            written = append_many(s, entries, sealer=PLAIN)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [e.seq for e in written] == [2, 3, 4]
    # one INSERT for the three events and one move of the head (on PostgreSQL, in one statement)
    assert sum("INSERT INTO audit_events" in st for st in statements) == 1
    assert sum("UPDATE audit_head" in st for st in statements) == 1
    result = _verify(session_factory)
    assert result.ok and result.checked == 4 and result.head_seq == 4, result.problems
    with session_scope(session_factory) as s:
        stored = s.scalars(select(AuditEvent).where(AuditEvent.seq > 1).order_by(AuditEvent.seq)).all()
        assert [(e.action, e.detail) for e in stored] == [
            ("attempt", {"n": 0}),
            ("delivered", {"n": 1}),
            ("sent", {"n": 2}),
        ]
    with pytest.raises(ValueError), session_scope(session_factory) as s:  # checked before anything is written
        append_many(
            s, [entries[0], Entry(actor="worker:w", action="Bad", entity_type="x", entity_id="y")], sealer=PLAIN
        )
    assert _verify(session_factory).checked == 4


def test_append_after_a_rolled_back_savepoint_continues_the_chain(session_factory: sessionmaker[Session]) -> None:
    # the head's values are kept per transaction: a savepoint rolled back takes its appends with it,
    # and the next append reads the head again instead of chaining to an event that is gone (its
    # position is reused; its global seq may not be: a PostgreSQL sequence is not rolled back)
    with session_scope(session_factory) as s:
        append(s, actor="client:c", action="received", entity_type="submission", entity_id="s1", sealer=PLAIN)
        savepoint = s.begin_nested()
        append(s, actor="client:c", action="mapped", entity_type="submission", entity_id="s1", sealer=PLAIN)
        savepoint.rollback()
        third = append(s, actor="client:c", action="routed", entity_type="submission", entity_id="s1", sealer=PLAIN)
        assert third.chain_seq == 2
        with s.begin_nested():
            append(s, actor="client:c", action="delivered", entity_type="submission", entity_id="s1", sealer=PLAIN)
        last = append(s, actor="client:c", action="sent", entity_type="submission", entity_id="s1", sealer=PLAIN)
        assert last.chain_seq == 4 and last.seq > third.seq
    result = _verify(session_factory)
    assert result.ok and result.checked == 4, result.problems
