"""Data for the console's indicators and linking pages: an ESSMS's stay events and capacities, and
inbound events about persons the gateway could not match (as the MLLP and SI-SdO sources keep them)."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy.orm import Session, sessionmaker

from gateway import persons
from gateway.security.crypto import KeyRing
from gateway.services import stays
from gateway.storage.db import session_scope
from reporting import Capacity, StayEvent

CAPACITIES = [Capacity("permanent", 2), Capacity("day_care", 1, opening_days=250)]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def stay_events(finess: str) -> list[StayEvent]:
    """Three persons in 2026 (hand-computed in the tests: January has 22 permanent days)."""
    return [
        StayEvent("a1", "admission", "P-A-001", finess, _at("2026-01-10T10:00:00+01:00"), accommodation="permanent",
                  sex="F", birth_date=date(1940, 5, 2)),
        StayEvent("x1", "exit", "P-A-001", finess, _at("2026-03-15T10:00:00+01:00"), exit_reason="home"),
        StayEvent("a2", "admission", "P-A-004", finess, _at("2026-02-01T10:00:00+01:00"), accommodation="permanent",
                  sex="M"),
        StayEvent("h2", "absence_start", "P-A-004", finess, _at("2026-04-01T09:00:00+02:00"),
                  absence_kind="hospitalisation"),
        StayEvent("r2", "absence_end", "P-A-004", finess, _at("2026-04-10T16:00:00+02:00")),
        StayEvent("a3", "admission", "P-A-005", finess, _at("2026-05-04T09:00:00+02:00"), accommodation="day_care"),
        StayEvent("x3", "exit", "P-A-005", finess, _at("2026-05-04T17:00:00+02:00"), exit_reason="home"),
    ]  # fmt: skip


def seed_indicators(session_factory: sessionmaker[Session], keyring: KeyRing, *, tenant_id: str, finess: str) -> None:
    with session_scope(session_factory) as session:
        stays.put_config(session, tenant_id=tenant_id, finess=finess, capacities=CAPACITIES, rules={}, actor="test")
        for event in stay_events(finess):
            stays.record_event(session, tenant_id=tenant_id, event=event, keyring=keyring, actor="test")


def seed_unmatched(
    session_factory: sessionmaker[Session], keyring: KeyRing, *, tenant_id: str, finess: str, source: str,
    identifiers: list[str], event_type: str = "adt.hospitalised",
) -> str:  # fmt: skip
    with session_scope(session_factory) as session:
        return persons.keep_unmatched(
            session,
            keyring,
            tenant_id=tenant_id,
            essms_finess=finess,
            source=source,
            inbound_id=str(uuid.uuid4()),
            submission_id=None,
            event_type=event_type,
            identifiers=identifiers,
        )
