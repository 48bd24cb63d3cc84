"""Engine test helpers: connectors that implement the Connector protocol, a settable clock,
a runtime builder and a submission writer that follows the intake's storage contract."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from connectors.base import Envelope, Health, PermanentError, Receipt, TransientError
from gateway.routing import RoutingTable, parse_config
from gateway.runtime import Runtime
from gateway.security.crypto import KeyRing, encrypt
from gateway.settings import Settings
from gateway.storage.codec import facts_to_json
from gateway.storage.db import session_scope
from gateway.storage.models import AuditEvent, Submission
from tests.support.doctype import NOTE, NoteRecord

T0 = datetime(2026, 1, 5, 8, 0, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand (thread-safe)."""

    def __init__(self, start: datetime = T0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now


class FakeSettings(BaseModel):
    pass


@dataclass
class Sent:
    envelope: Envelope
    at: float
    thread: str


class FakeConnector:
    """A destination that records what it gets; ``script`` items are played one per send:
    ``"ok"``, an exception instance to raise, or a callable run before answering."""

    name: ClassVar[str] = "fake"
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[BaseModel]] = FakeSettings
    send_timeout: float = 10.0

    def __init__(self, script: Iterable[Any] = (), *, default: Any = "ok", delay: float = 0.0) -> None:
        self.script = list(script)
        self.default = default
        self.delay = delay
        self.calls: list[Sent] = []  # every call, failed or not
        self.accepted: list[Sent] = []
        self._lock = threading.Lock()

    def send(self, envelope: Envelope) -> Receipt:
        with self._lock:
            step = self.script.pop(0) if self.script else self.default
            self.calls.append(Sent(envelope, time.monotonic(), threading.current_thread().name))
        if self.delay:
            time.sleep(self.delay)
        if callable(step) and not isinstance(step, BaseException):
            step = step(envelope)
        if isinstance(step, BaseException):
            raise step
        with self._lock:
            self.accepted.append(Sent(envelope, time.monotonic(), threading.current_thread().name))
            return Receipt(remote_id=f"remote-{len(self.accepted)}")

    def health(self) -> Health:
        return Health(ok=True)


class GateConnector(FakeConnector):
    """Blocks inside send() until the test opens the gate (to hold a delivery in flight)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entered = threading.Event()
        self.release = threading.Event()

    def send(self, envelope: Envelope) -> Receipt:
        self.entered.set()
        if not self.release.wait(30):
            raise TransientError("gate never opened")
        return super().send(envelope)


def transient(msg: str = "peer down") -> TransientError:
    return TransientError(msg)


def permanent(msg: str = "peer refused the document") -> PermanentError:
    return PermanentError(msg)


def engine_url(session_factory: sessionmaker[Session]) -> str:
    bind = session_factory.kw["bind"]
    return str(bind.url.render_as_string(hide_password=False))


def make_runtime(
    session_factory: sessionmaker[Session],
    keyring: KeyRing,
    *,
    routing: dict[str, Any] | None = None,
    connectors: dict[str, Any] | None = None,
    **overrides: Any,
) -> Runtime:
    values: dict[str, Any] = {
        "database_url": engine_url(session_factory),
        "lease_seconds": 60,
        "max_attempts": 5,
        "backoff_base_seconds": 2.0,
        "backoff_max_seconds": 600.0,
        "poll_interval_seconds": 0.02,
        "worker_concurrency": 2,
    }
    values.update(overrides)
    settings = Settings(**values)
    return Runtime(
        settings=settings,
        engine=session_factory.kw["bind"],
        session_factory=session_factory,
        keyring=keyring,
        destinations=dict(connectors or {}),
        routing=RoutingTable(config=parse_config(routing or {}, source="<test>"), source="<test>"),
    )


def webhook_routing(*names: str, category: str = "webhook") -> dict[str, Any]:
    """Every test-note document goes to each of ``names``."""
    return {
        "destinations": {n: {"connector": "fake", "category": category} for n in names},
        "rules": [{"document_types": ["test-note"], "destinations": list(names)}],
    }


def submit(
    session_factory: sessionmaker[Session],
    keyring: KeyRing,
    *,
    tenant_id: str,
    finess: str,
    person_ref: str = "person-1",
    text: str = "Chute dans la chambre, pas de blessure.",
    created_at: datetime = T0,
    document_type: str = "test-note",
    raw: dict[str, Any] | None = None,
    **fields: Any,
) -> str:
    """Store a submission as the intake does: status received, record JSON encrypted (AAD = id)."""
    body = raw if raw is not None else {"person_ref": person_ref, "essms_finess": finess, "text": text, **fields}
    facts = NOTE.facts(NoteRecord.model_validate(body)) if raw is None else None
    sub_id = str(uuid.uuid4())
    with session_scope(session_factory) as session:
        ciphertext, key_id = encrypt(
            session, tenant_id=tenant_id, plaintext=json.dumps(body).encode(), keyring=keyring, aad=sub_id.encode()
        )
        session.add(
            Submission(
                id=sub_id,
                tenant_id=tenant_id,
                document_type=document_type,
                essms_finess=finess,
                person_ref=person_ref,
                status="received",
                request_hash="0" * 64,
                payload_ct=ciphertext,
                data_key_id=key_id,
                facts=facts_to_json(facts) if facts is not None else None,
                correlation_id=uuid.uuid4().hex,
                created_at=created_at,
                updated_at=created_at,
            )
        )
    return sub_id


def audit_actions(session_factory: sessionmaker[Session], entity_id: str) -> list[str]:
    with session_factory() as session:
        return list(
            session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == entity_id).order_by(AuditEvent.seq))
        )


def audit_events(session_factory: sessionmaker[Session], entity_id: str, action: str) -> list[AuditEvent]:
    with session_factory() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.entity_id == entity_id, AuditEvent.action == action)
                .order_by(AuditEvent.seq)
            )
        )


@dataclass
class Drain:
    """Runs ``step`` until it returns falsy ``limit`` times in a row or ``max_steps`` is reached."""

    step: Callable[[], Any]
    max_steps: int = 1000
    results: list[Any] = field(default_factory=list)

    def run(self) -> list[Any]:
        for _ in range(self.max_steps):
            out = self.step()
            if not out:
                return self.results
            self.results.append(out)
        raise AssertionError("work never ran out")
