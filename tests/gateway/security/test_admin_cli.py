"""``dui-gateway tenants`` (OAuth clients, secret rotation, listing) and ``dui-gateway routing``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.routing_cli import app as routing_app
from gateway.security.cli import tenants_app
from gateway.security.oauth import authenticate_client
from gateway.settings import get_settings
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.models import AuditEvent

ROUTING_FILE = """\
destinations:
  hook:
    connector: webhook
    category: webhook
    settings: {url: "http://127.0.0.1:9/hook", signing: false}
  other:
    connector: webhook
    category: webhook
    settings: {url: "http://127.0.0.1:9/other", signing: false}
rules:
  - {name: all, document_types: [dlu], destinations: [hook]}
"""


def test_oauth_client_rotation_and_listing(gateway_env: str) -> None:
    runner = CliRunner()
    assert runner.invoke(tenants_app, ["create", "og-cli", "OG"]).exit_code == 0
    assert runner.invoke(tenants_app, ["add-essms", "og-cli", "750000010", "EHPAD"]).exit_code == 0
    made = runner.invoke(tenants_app, ["create-client", "og-cli", "DUI", "--oauth", "--essms", "750000010"])
    assert made.exit_code == 0, made.output
    key, secret = made.stdout.split()
    assert key.startswith("dgw_") and secret.startswith("dgs_") and secret not in made.stderr
    client_id = made.stderr.split("client_id ")[1].split(";")[0]
    bad = runner.invoke(tenants_app, ["create-client", "og-cli", "x", "--essms", "750000028"])
    assert bad.exit_code == 1 and "not ESSMS of this tenant" in bad.stderr
    rotated = runner.invoke(tenants_app, ["rotate-secret", client_id, "--grace-hours", "1"])
    assert rotated.exit_code == 0, rotated.output
    new_secret = rotated.stdout.strip()
    engine = make_engine(gateway_env)
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            assert authenticate_client(s, client_id=client_id, client_secret=secret) is not None
            assert authenticate_client(s, client_id=client_id, client_secret=new_secret) is not None
    finally:
        engine.dispose()
    listed = json.loads(runner.invoke(tenants_app, ["clients", "og-cli"]).stdout)
    assert listed[0]["essms"] == "750000010" and len(listed[0]["secrets"]) == 2
    assert secret not in json.dumps(listed)


def test_routing_set_show_history(gateway_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING_FILE)
    monkeypatch.setenv("DUI_GATEWAY_ROUTING_FILE", str(routing))
    get_settings.cache_clear()
    runner = CliRunner()
    shown = runner.invoke(routing_app, ["show"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["version"] == 0
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: both, document_types: [dlu], destinations: [hook, other]}\n")
    done = runner.invoke(routing_app, ["set", str(rules), "--comment", "second hook", "--actor", "alice"])
    assert done.exit_code == 0, done.output
    assert "version 1" in done.stdout
    rules.write_text("rules:\n  - {document_types: [dlu], destinations: [nowhere]}\n")
    refused = runner.invoke(routing_app, ["set", str(rules)])
    assert refused.exit_code == 1 and "nowhere" in refused.stderr
    shown = json.loads(runner.invoke(routing_app, ["show"]).stdout)
    assert shown["version"] == 1 and shown["rules"][0]["destinations"] == ["hook", "other"]
    history = json.loads(runner.invoke(routing_app, ["history"]).stdout)
    assert [(h["version"], h["actor"], h["comment"]) for h in history] == [(1, "user:alice", "second hook")]
    engine = make_engine(gateway_env)
    try:
        with make_sessionmaker(engine)() as s:
            events = [e for e in s.query(AuditEvent).all() if e.action == "routing_changed"]
            assert len(events) == 1 and events[0].actor == "user:alice"
    finally:
        engine.dispose()


def test_tenant_and_essms_edits_go_through_the_admin_service(gateway_env: str) -> None:
    runner = CliRunner()
    assert runner.invoke(tenants_app, ["create", "og-ed", "OG"]).exit_code == 0
    assert runner.invoke(tenants_app, ["add-essms", "og-ed", "750000010", "EHPAD", "--category", "500"]).exit_code == 0
    assert runner.invoke(tenants_app, ["rename", "og-ed", "OG renommé", "--actor", "alice"]).exit_code == 0
    done = runner.invoke(tenants_app, ["update-essms", "og-ed", "750000010", "--name", "EHPAD Les Pins"])
    assert done.exit_code == 0, done.output
    missing = runner.invoke(tenants_app, ["update-essms", "og-ed", "750000028", "--name", "x"])
    assert missing.exit_code == 1 and "no ESSMS" in missing.stderr
    engine = make_engine(gateway_env)
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            events = {e.action: e for e in s.query(AuditEvent).all()}
            assert events["tenant_updated"].actor == "user:alice"
            assert events["tenant_updated"].detail["after"] == {"tenant_name": "OG renommé"}
            assert events["essms_updated"].detail["before"] == {"essms_name": "EHPAD", "category": "500"}
            assert events["essms_updated"].detail["after"] == {"essms_name": "EHPAD Les Pins", "category": "500"}
    finally:
        engine.dispose()
