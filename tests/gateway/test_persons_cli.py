"""``dui-gateway persons``: unmatched persons listed (identifiers decrypted for the operator) and
linked (indexed, audited) against a real database."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select
from typer.testing import CliRunner

from gateway import persons
from gateway.persons_cli import app
from gateway.security.crypto import KeyRing
from gateway.storage.db import make_engine, make_sessionmaker, session_scope
from gateway.storage.models import AuditEvent


def test_list_and_link(gateway_env: str, master_keys_spec: str, tenant: Any) -> None:
    engine = make_engine(gateway_env)
    factory = make_sessionmaker(engine)
    ring = KeyRing.parse(master_keys_spec)
    try:
        with session_scope(factory) as session:
            kept = persons.keep_unmatched(
                session,
                ring,
                tenant_id=tenant.id,
                essms_finess=tenant.finess,
                source="hospital-adt",
                inbound_id=str(uuid.uuid4()),
                submission_id=None,
                event_type="adt.hospitalised",
                identifiers=["urn:oid:1.2.250.1.999.1|IPP-1"],
            )
        runner = CliRunner()
        listed = runner.invoke(app, ["unmatched", "--tenant", tenant.code])
        assert listed.exit_code == 0, listed.output
        (entry,) = json.loads(listed.stdout)
        assert entry["id"] == kept and entry["identifiers"] == ["urn:oid:1.2.250.1.999.1|IPP-1"]

        linked = runner.invoke(app, ["link", kept, "RES-1", "--actor", "alice"])
        assert linked.exit_code == 0, linked.output
        assert json.loads(runner.invoke(app, ["unmatched"]).stdout) == []
        assert runner.invoke(app, ["link", kept, "RES-2"]).exit_code == 1  # already linked
        with session_scope(factory) as session:
            assert persons.match(session, tenant.id, ["urn:oid:1.2.250.1.999.1|IPP-1"]) == "RES-1"
            event = session.scalars(select(AuditEvent).where(AuditEvent.action == "person_linked")).one()
            assert event.actor == "user:alice"
    finally:
        engine.dispose()
