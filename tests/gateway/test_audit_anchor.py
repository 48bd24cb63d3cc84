"""An external anchor for the audit chain: ``audit anchor`` writes the head (seq, hash, time) where
the database user cannot write, and ``audit verify --anchor FILE`` checks the chain still holds it.

The attack it answers: someone with write access to the database rewrites history and recomputes
every hash and the head. Without HMAC keys ``verify`` alone cannot notice; the anchor can."""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select
from typer.testing import CliRunner

from gateway.audit import append
from gateway.audit.chain import AuditSealer, canonical_bytes
from gateway.audit.cli import app
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.models import AuditEvent, AuditHead

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def _fill(url: str, start: int, n: int) -> None:
    engine = make_engine(url)
    try:
        factory = make_sessionmaker(engine)
        for i in range(start, start + n):
            with session_scope(factory) as s:
                append(s, actor="client:c1", action="received", entity_type="submission", entity_id=f"s-{i}",
                       tenant_id="t-1", person_ref=f"ipp-{i}", at=T0 + timedelta(hours=i))  # fmt: skip
    finally:
        engine.dispose()


def _rewrite(url: str, *, change_seq: int | None = None, keep_up_to: int | None = None) -> None:
    """What an attacker with database access does: change or drop events, then recompute every hash
    and every chain's head so that the chains are consistent again (plain SHA-256 chain)."""
    engine = make_engine(url)
    sealer = AuditSealer()
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            if keep_up_to is not None:
                s.execute(delete(AuditEvent).where(AuditEvent.seq > keep_up_to))
            for head in s.scalars(select(AuditHead)):
                prev, position = "0" * 64, 0
                events = s.scalars(select(AuditEvent).where(AuditEvent.chain == head.id).order_by(AuditEvent.chain_seq))
                for ev in events:
                    if ev.seq == change_seq:
                        ev.person_ref = "someone-else"
                    ev.prev_hash = prev
                    digest = sealer.seal(canonical_bytes(ev), ev.key_id)
                    assert digest is not None
                    ev.hash = prev = digest
                    position = ev.chain_seq
                head.last_seq = position
                head.last_hash = prev
    finally:
        engine.dispose()


def _place(url: str, seq: int) -> str:
    """How an anchor problem names the event with this seq: chain and position."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            chain, position = conn.execute(
                select(AuditEvent.chain, AuditEvent.chain_seq).where(AuditEvent.seq == seq)
            ).one()
    finally:
        engine.dispose()
    return f"anchor chain {chain} #{position}"


def test_anchor_then_verify_against_it(gateway_env: str, tmp_path: Path) -> None:
    _fill(gateway_env, 0, 3)
    anchors = tmp_path / "anchors" / "audit.jsonl"
    runner = CliRunner()
    result = runner.invoke(app, ["anchor", "--output", str(anchors)])
    assert result.exit_code == 0, result.output
    line = json.loads(anchors.read_text().splitlines()[-1])
    assert line["anchored_at"].endswith("Z")
    assert sum(h["chain_seq"] for h in line["heads"]) == 3 and all(len(h["hash"]) == 64 for h in line["heads"])

    _fill(gateway_env, 3, 2)  # the chain goes on after the anchor
    assert runner.invoke(app, ["anchor", "--output", str(anchors)]).exit_code == 0
    assert len(anchors.read_text().splitlines()) == 2  # appended, never overwritten
    result = runner.invoke(app, ["verify", "--anchor", str(anchors)])
    assert result.exit_code == 0, result.output
    assert "2 anchors" in result.output

    # a rewritten (consistent) chain: plain verification is fooled, the anchor is not
    changed_chain = _place(gateway_env, 2).partition(" #")[0]  # its anchored head now has another hash
    _rewrite(gateway_env, change_seq=2)
    assert runner.invoke(app, ["verify"]).exit_code == 0
    result = runner.invoke(app, ["verify", "--anchor", str(anchors)])
    assert result.exit_code == 1, result.output
    problems = [line for line in result.output.splitlines() if line.startswith("PROBLEM")]
    assert problems and all(p.startswith(f"PROBLEM {changed_chain} #") and "rewritten" in p for p in problems)


def test_a_truncated_chain_fails_its_anchor(gateway_env: str, tmp_path: Path) -> None:
    _fill(gateway_env, 0, 4)
    anchors = tmp_path / "audit.jsonl"
    runner = CliRunner()
    assert runner.invoke(app, ["anchor", "--output", str(anchors)]).exit_code == 0
    last = _place(gateway_env, 4)  # the last event is the anchored head of its chain
    _rewrite(gateway_env, keep_up_to=2)
    assert runner.invoke(app, ["verify"]).exit_code == 0
    result = runner.invoke(app, ["verify", "--anchor", str(anchors)])
    assert result.exit_code == 1, result.output
    assert f"PROBLEM {last} (anchored " in result.output and "no such event (missing: truncated)" in result.output


def test_verify_accepts_the_ok_line_it_printed_as_an_anchor(gateway_env: str, tmp_path: Path) -> None:
    _fill(gateway_env, 0, 2)
    runner = CliRunner()
    printed = runner.invoke(app, ["verify"]).stdout.strip().splitlines()[-1]
    anchors = tmp_path / "kept-on-paper.txt"
    anchors.write_text(printed + "\n")
    assert runner.invoke(app, ["verify", "--anchor", str(anchors)]).exit_code == 0
    _rewrite(gateway_env, change_seq=1)
    assert runner.invoke(app, ["verify", "--anchor", str(anchors)]).exit_code == 1


def test_an_unreadable_anchor_file_is_a_usage_error(gateway_env: str, tmp_path: Path) -> None:
    _fill(gateway_env, 0, 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not an anchor\n")
    runner = CliRunner()
    assert runner.invoke(app, ["verify", "--anchor", str(bad)]).exit_code == 2
    assert runner.invoke(app, ["verify", "--anchor", str(tmp_path / "missing")]).exit_code == 2


def test_anchor_to_syslog(gateway_env: str) -> None:
    _fill(gateway_env, 0, 2)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    try:
        port = receiver.getsockname()[1]
        result = CliRunner().invoke(app, ["anchor", "--syslog", f"127.0.0.1:{port}"])
        assert result.exit_code == 0, result.output
        datagram = receiver.recv(4096).decode().rstrip("\x00")
    finally:
        receiver.close()
        logging.getLogger("dui_gateway.audit_anchor").handlers.clear()
    assert "dui-gateway-audit-anchor" in datagram
    payload = json.loads(datagram[datagram.index("{") :])
    assert sum(h["chain_seq"] for h in payload["heads"]) == 2


def test_anchor_record_also_ties_the_chains_in_the_trail(gateway_env: str) -> None:
    _fill(gateway_env, 0, 5)
    runner = CliRunner()
    result = runner.invoke(app, ["anchor", "--record"])
    assert result.exit_code == 0, result.output
    engine = make_engine(gateway_env)
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            mark = s.scalars(select(AuditEvent).where(AuditEvent.action == "heads_anchored")).one()
            heads = {c: (n, h) for c, n, h in mark.detail["heads"]}
            assert sum(n for n, _ in heads.values()) == 5  # every chain's head before the mark
            line = json.loads(result.stdout.strip().splitlines()[-1])
            assert {"chain": mark.chain, "chain_seq": mark.chain_seq, "hash": mark.hash} in line["heads"]
    finally:
        engine.dispose()
    assert runner.invoke(app, ["verify"]).exit_code == 0
