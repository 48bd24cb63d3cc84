"""``dui-gateway users`` and the demo's console user, then a login with what they made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gateway.storage.models import AuditEvent
from tests.gateway.console.conftest import World


def _cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", "from gateway.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_users_cli_creates_grants_and_lists(
    gateway_env: str, world: World, browser_for: Any, session_factory: Any
) -> None:
    env = {"NEW_PASSWORD": "un-mot-de-passe-long"}
    created = _cli("users", "create", "camille", "--name", "Camille", "--password-env", "NEW_PASSWORD", env_extra=env)
    assert created.returncode == 0, created.stderr
    granted = _cli("users", "grant", "camille", "--tenant", "og-a", "--role", "operateur")
    assert granted.returncode == 0, granted.stderr
    assert _cli("users", "grant", "camille", "--tenant", "og-a", "--role", "chef").returncode != 0
    assert _cli("users", "create", "dora", "--password-env", "UNSET_VARIABLE_X").returncode != 0
    listed = _cli("users", "list")
    assert "camille\tpassword\toperateur@og-a" in listed.stdout
    b = browser_for()
    reply = b.login("camille", "un-mot-de-passe-long")
    assert reply.status_code == 200 and "Flux de documents" in reply.text
    with session_factory() as session:
        actions = set(session.scalars(select(AuditEvent.action).where(AuditEvent.entity_type == "user")))
    assert {"user_created", "role_granted", "logged_in"} <= actions
    revoked = _cli("users", "revoke", "camille", "--tenant", "og-a", "--role", "operateur")
    assert revoked.returncode == 0
    assert b.get("/console/flux", allow_redirects=False).status_code == 303  # its session ended


def test_demo_console_user(gateway_env: str, world: World, tmp_path: Path, browser_for: Any) -> None:
    from gateway.demo import DEMO_CONSOLE_USER, provision_console_user
    from gateway.security.clients import create_tenant
    from gateway.settings import get_settings
    from gateway.storage.db import make_engine, make_sessionmaker, session_scope

    settings = get_settings()
    engine = make_engine(settings.database_url)
    with session_scope(make_sessionmaker(engine)) as session:
        create_tenant(session, code="demo", name="Démo")
    engine.dispose()
    user, password = provision_console_user(settings, tmp_path / "pw")
    again = provision_console_user(settings, tmp_path / "pw")
    assert again == (DEMO_CONSOLE_USER, password) and user == DEMO_CONSOLE_USER
    assert (tmp_path / "pw").stat().st_mode & 0o077 == 0
    reply = browser_for().login(user, password)
    assert reply.status_code == 200 and "Se déconnecter" in reply.text


def test_users_cli_disables_enables_and_unlocks_with_the_consoles_functions(
    gateway_env: str, world: World, browser_for: Any, session_factory: Any
) -> None:
    env = {"NEW_PASSWORD": "un-mot-de-passe-long"}
    assert _cli("users", "create", "gael", "--password-env", "NEW_PASSWORD", env_extra=env).returncode == 0
    assert _cli("users", "grant", "gael", "--tenant", "og-a", "--role", "lecteur").returncode == 0
    disabled = _cli("users", "disable", "gael")
    assert disabled.returncode == 0, disabled.stderr
    assert browser_for().login("gael", "un-mot-de-passe-long").status_code == 401
    assert _cli("users", "enable", "gael").returncode == 0
    for _ in range(3):  # console_lockout_threshold=3 in these tests
        browser_for().login("gael", "wrong-password-123")
    assert browser_for().login("gael", "un-mot-de-passe-long").status_code == 401
    unlocked = _cli("users", "unlock", "gael")
    assert unlocked.returncode == 0, unlocked.stderr
    assert browser_for().login("gael", "un-mot-de-passe-long").status_code == 200
    assert _cli("users", "disable", "nobody-here").returncode != 0
    with session_factory() as session:
        events = {
            e.action: e.detail for e in session.scalars(select(AuditEvent).where(AuditEvent.actor == "user:admin"))
        }
    assert events["user_disabled"]["after"]["active"] is False
    assert events["user_enabled"]["after"]["active"] is True
    assert events["unlocked"]["before"]["locked"] is True and events["unlocked"]["after"]["locked"] is False
