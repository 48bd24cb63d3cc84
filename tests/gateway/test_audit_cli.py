"""``dui-gateway audit verify`` and ``audit export`` against a real database."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from sqlalchemy import select, update
from typer.testing import CliRunner

from gateway.audit import append
from gateway.audit.cli import app
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.models import AuditEvent

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def _fill(url: str, n: int) -> None:
    engine = make_engine(url)
    try:
        factory = make_sessionmaker(engine)
        for i in range(n):
            with session_scope(factory) as s:
                append(s, actor="client:c1", action="received", entity_type="submission", entity_id=f"s-{i}",
                       tenant_id="t-1", person_ref=f"ipp-{i}", at=T0 + timedelta(hours=i))  # fmt: skip
    finally:
        engine.dispose()


def _where(url: str, seq: int) -> str:
    """How verify names the event with this seq: its chain and position (8 chains on PostgreSQL)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            chain, position = conn.execute(
                select(AuditEvent.chain, AuditEvent.chain_seq).where(AuditEvent.seq == seq)
            ).one()
    finally:
        engine.dispose()
    return f"chain {chain} #{position} (seq {seq})"


def test_verify_ok_then_tampered(gateway_env: str) -> None:
    _fill(gateway_env, 4)
    runner = CliRunner()
    result = runner.invoke(app, ["verify"])
    assert result.exit_code == 0, result.output
    ok_line = result.stdout.strip()
    assert ok_line.startswith("OK: 4 events checked in "), ok_line
    heads = re.findall(r"chain ([0-9]+) head #([0-9]+) hash ([0-9a-f]{64})", ok_line)
    assert sum(int(n) for _, n, _ in heads) == 4  # every chain's head: their positions add up to the events

    engine = make_engine(gateway_env)
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            s.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(actor="user:nobody"))
    finally:
        engine.dispose()
    result = runner.invoke(app, ["verify"])
    assert result.exit_code == 1
    assert f"PROBLEM {_where(gateway_env, 2)}: content does not match its hash (event modified)" in result.stdout
    assert "TAMPERED: 4 events checked" in result.stdout


def test_export_fhir_ndjson_with_time_window(gateway_env: str, tmp_path: Path) -> None:
    _fill(gateway_env, 5)
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--format", "fhir"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    for line in lines:
        FhirAuditEvent.model_validate(json.loads(line))
    out = tmp_path / "audit.ndjson"
    result = runner.invoke(
        app, ["export", "--since", "2026-05-01T09:00:00Z", "--until", "2026-05-01T11:00:00+00:00", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [d["recorded"] for d in docs] == ["2026-05-01T09:00:00.000Z", "2026-05-01T10:00:00.000Z"]
    assert "exported 2 events" in result.stderr
    assert runner.invoke(app, ["export", "--format", "csv"]).exit_code != 0
    assert runner.invoke(app, ["export", "--since", "yesterday"]).exit_code != 0


def test_hmac_keys_from_settings(gateway_env: str, monkeypatch) -> None:
    """DUI_GATEWAY_AUDIT_KEYS seals new events; verify needs the key and flags unsealed events."""
    from gateway.security.crypto import generate_master_key
    from gateway.settings import get_settings

    audit_key = f"audit-1:{generate_master_key()}"
    monkeypatch.setenv("DUI_GATEWAY_AUDIT_KEYS", audit_key)
    get_settings.cache_clear()
    _fill(gateway_env, 2)  # append() with the default sealer, built from the settings
    runner = CliRunner()
    result = runner.invoke(app, ["verify"])
    assert result.exit_code == 0, result.output

    monkeypatch.delenv("DUI_GATEWAY_AUDIT_KEYS")
    get_settings.cache_clear()
    _fill(gateway_env, 1)  # a process running without the key appends a plain event
    result = runner.invoke(app, ["verify"])
    assert result.exit_code == 1
    assert f"PROBLEM {_where(gateway_env, 1)}: sealed with unknown audit key 'audit-1'" in result.stdout

    monkeypatch.setenv("DUI_GATEWAY_AUDIT_KEYS", audit_key)
    get_settings.cache_clear()
    result = runner.invoke(app, ["verify"])
    assert result.exit_code == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]
    assert problems == [
        f"PROBLEM {_where(gateway_env, 3)}: not sealed with an audit key although audit keys are configured"
    ]
