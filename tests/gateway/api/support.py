"""Helpers for the API tests: request bodies, row counts, and rows in the states the pipeline and
the delivery engine would leave a submission in."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.security.crypto import KeyRing, encrypt
from gateway.storage.db import session_scope
from gateway.storage.models import Attempt, AuditEvent, Delivery, Rendition, Submission
from tests.gateway.api.live import Api

TEST_FINESS = "750000010"  # the ESSMS of the ``tenant`` fixture (tests/gateway/conftest.py)
TEST_FINESS_2 = "750000028"  # a second valid FINESS (Luhn), given to ``other_tenant``
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
MAX_BODY = 64 * 1024


def note(finess: str, *, person_ref: str = "P-0001", text: str = "Chute le 3 mars, pas de fracture.") -> dict[str, Any]:
    """A request body for the test-only document type."""
    return {"document_type": "test-note", "record": {"person_ref": person_ref, "essms_finess": finess, "text": text}}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def count_rows(session_factory: sessionmaker[Session]) -> tuple[int, int]:
    """(submissions, audit events) currently in the database."""
    with session_factory() as session:
        subs = session.scalar(select(func.count()).select_from(Submission)) or 0
        events = session.scalar(select(func.count()).select_from(AuditEvent)) or 0
        return subs, events


def audit_events(session_factory: sessionmaker[Session], **where: str) -> list[AuditEvent]:
    with session_factory() as session:
        stmt = select(AuditEvent).order_by(AuditEvent.seq)
        for name, value in where.items():
            stmt = stmt.where(getattr(AuditEvent, name) == value)
        return list(session.scalars(stmt))


def add_outcome(
    session_factory: sessionmaker[Session],
    keyring: KeyRing,
    submission_id: str,
    *,
    content: bytes = b'<note xmlns="urn:test">x</note>',
    delivery_status: str = "dead",
    status: str = "failed",
) -> tuple[str, str]:
    """Put the submission in the state the pipeline and the engine leave it in: one rendition
    (encrypted as the pipeline does, AAD = rendition id), one delivery with two attempts.

    Returns (rendition id, delivery id).
    """
    now = datetime.now(UTC)
    with session_scope(session_factory) as session:
        sub = session.get(Submission, submission_id)
        assert sub is not None
        rid = str(uuid.uuid4())
        ct, key_id = encrypt(session, tenant_id=sub.tenant_id, plaintext=content, keyring=keyring, aad=rid.encode())
        session.add(
            Rendition(
                id=rid,
                submission_id=sub.id,
                kind="note",
                media_type="application/xml",
                document_id=f"1.2.250.1.999.1.1^{uuid.UUID(sub.id).hex}",
                set_id="1.2.250.1.999.1.1.42",
                version=1,
                content_ct=ct,
                data_key_id=key_id,
                sha256=hashlib.sha256(content).hexdigest(),
                size=len(content),
                created_at=now,
            )
        )
        did = str(uuid.uuid4())
        session.add(
            Delivery(
                id=did,
                submission_id=sub.id,
                tenant_id=sub.tenant_id,
                destination="dmp",
                connector="webhook",
                series_key=f"{sub.tenant_id}|dmp|{sub.person_ref}",
                seq=1,
                status=delivery_status,
                next_attempt_at=now - timedelta(seconds=1),
                attempt_count=2,
                last_error="HTTP 503 from peer",
                created_at=now,
                updated_at=now,
            )
        )
        session.flush()
        for n, outcome in ((1, "transient"), (2, "permanent")):
            session.add(
                Attempt(
                    id=str(uuid.uuid4()),
                    delivery_id=did,
                    number=n,
                    worker="test:1",
                    started_at=now,
                    finished_at=now,
                    outcome=outcome,
                    error="HTTP 503 from peer",
                )
            )
        sub.status = status
        sub.updated_at = now
    return rid, did


def post_note(client: Api, key: str, body: dict[str, Any], **headers: str) -> Any:
    return client.post(
        "/v1/submissions",
        data=json.dumps(body).encode(),
        headers={**bearer(key), "Content-Type": "application/json", **headers},
    )
