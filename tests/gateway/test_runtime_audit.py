"""Services audit with the runtime's own settings, never with process-wide ones."""

from __future__ import annotations

import base64
import os

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway import audit
from gateway.audit.chain import AuditSealer
from gateway.runtime import Runtime
from gateway.security.crypto import KeyRing
from gateway.settings import Settings
from gateway.storage.models import AuditEvent


def test_sessions_of_a_runtime_seal_audit_events_with_its_keys(
    session_factory: sessionmaker[Session], keyring: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Process-wide settings that cannot even be built (prod profile without secrets): a service
    # that reached for them instead of its runtime's would fail here.
    monkeypatch.setenv("DUI_GATEWAY_PROFILE", "prod")
    from gateway.settings import get_settings

    get_settings.cache_clear()
    try:
        key = base64.b64encode(os.urandom(32)).decode()
        settings = Settings(profile="dev", audit_keys=f"ops2026:{key}")  # type: ignore[arg-type]
        rt = Runtime(
            settings=settings, engine=session_factory.kw["bind"], session_factory=session_factory, keyring=keyring
        )
        with rt.session_factory() as session:
            audit.append(session, actor="test", action="received", entity_type="submission", entity_id="s-1")
            session.commit()
        with rt.session_factory() as session:
            event = session.scalars(select(AuditEvent).where(AuditEvent.entity_id == "s-1")).one()
            assert event.key_id == "ops2026"
            sealer = AuditSealer.for_settings(settings)
            assert audit.verify(session, sealer=sealer).ok
            assert not audit.verify(session, sealer=AuditSealer()).ok  # unsealed verification must notice
    finally:
        get_settings.cache_clear()
