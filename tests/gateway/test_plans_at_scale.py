"""Claims and lookups keep their plans at national scale, with and without planner statistics.

A PostgreSQL schema of its own is filled with ``INSERT … SELECT generate_series``: 1,000,000
deliveries (of 200,000 routed submissions with their renditions) and 100,000 queued submissions.
Autovacuum is off on those tables, so the first pass runs on a database PostgreSQL has never
analysed (the "fresh database" of issue 15, where quadratic plans appeared); the second after
``ANALYZE``. Each pass runs the real code — the pipeline's claim and its series lookups, the
delivery claim (an expired lease and a due pending one), enqueue's next ``seq``, what a
destination holds, finish, receipts — records every statement it sends, and EXPLAINs each one
with its own parameters: no sequential scan of a big table anywhere, and no sort in a claim
(the queue is walked in index order). Everything runs in a transaction that is rolled back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session

from connectors.base import Acknowledgement, Receipt
from gateway import pipeline
from gateway.delivery import outbox
from gateway.storage.db import make_engine
from gateway.storage.models import Delivery, Submission

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BIG_TABLES = {"submissions", "deliveries", "renditions", "attempts", "receipts", "audit_events"}
ROUTED = 200_000
DELIVERIES_PER_SUBMISSION = 5
QUEUED = 100_000
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
DESTINATIONS = ["dest-0", "dest-1", "dest-2", "dest-3", "dest-4"]

_FILL = f"""
SET session_replication_role = replica;  -- no per-row foreign key triggers while filling
ALTER TABLE submissions SET (autovacuum_enabled = false);
ALTER TABLE deliveries SET (autovacuum_enabled = false);
ALTER TABLE renditions SET (autovacuum_enabled = false);
INSERT INTO tenants (id, code, name, created_at) VALUES ('t0', 't0', 'tenant', now());
INSERT INTO data_keys (id, tenant_id, version, master_key_id, wrapped_key, active, created_at)
  VALUES ('k0', 't0', 1, 'm', '\\x00', true, now());
-- routed submissions (history), then the queue: received, a few processing with a live lease
INSERT INTO submissions (id, tenant_id, document_type, essms_finess, person_ref, status, request_hash,
                         payload_ct, data_key_id, correlation_id, lease_owner, lease_until, created_at, updated_at)
SELECT md5('s' || i)::uuid::text, 't0', 'dlu', '750000001', 'p' || (i % 150000),
       CASE WHEN i <= {ROUTED} THEN 'routed' WHEN i % 1000 = 0 THEN 'processing' ELSE 'received' END,
       'h', '\\x00', 'k0', 'c',
       CASE WHEN i > {ROUTED} AND i % 1000 = 0 THEN 'w' END,
       CASE WHEN i > {ROUTED} AND i % 1000 = 0 THEN timestamptz '{NOW.isoformat()}' + interval '1 hour' END,
       timestamptz '{NOW.isoformat()}' - interval '1 second' * ({ROUTED + QUEUED} - i), now()
FROM generate_series(1, {ROUTED + QUEUED}) AS i;
INSERT INTO renditions (id, submission_id, kind, media_type, document_id, set_id, version, content_ct,
                        data_key_id, sha256, size, created_at)
SELECT md5('r' || i)::uuid::text, md5('s' || i)::uuid::text, 'cda', 'text/xml', 'd' || i, 'set' || (i % 150000),
       1 + i / 150000, '\\x00', 'k0', 'x', 1, now()
FROM generate_series(1, {ROUTED}) AS i;
-- 1,000,000 deliveries: mostly delivered; some pending (due and not yet), in flight (some leases
-- expired), sent (some receipts overdue), dead
INSERT INTO deliveries (id, submission_id, tenant_id, destination, connector, series_key, seq, status,
                        next_attempt_at, attempt_count, lease_owner, lease_until, ack_ref, receipt_due_at,
                        created_at, updated_at)
SELECT md5('d' || i)::uuid::text, md5('s' || (1 + i / {DELIVERIES_PER_SUBMISSION}))::uuid::text, 't0',
       'dest-' || (i % {DELIVERIES_PER_SUBMISSION}), 'webhook',
       'dlu:' || ((1 + i / {DELIVERIES_PER_SUBMISSION}) % 150000),
       1 + i / ({DELIVERIES_PER_SUBMISSION} * 150000),
       s.status,
       timestamptz '{NOW.isoformat()}' + CASE WHEN i % 2 = 0 THEN interval '-1 minute' ELSE interval '1 hour' END,
       CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END,
       CASE WHEN s.status = 'in_flight' THEN 'w' END,
       CASE WHEN s.status = 'in_flight' THEN timestamptz '{NOW.isoformat()}'
                 + CASE WHEN i % 2 = 0 THEN interval '-1 minute' ELSE interval '1 hour' END END,
       CASE WHEN s.status = 'sent' THEN 'ack' || i END,
       CASE WHEN s.status = 'sent' THEN timestamptz '{NOW.isoformat()}'
                 + CASE WHEN i % 2 = 0 THEN interval '-1 minute' ELSE interval '1 hour' END END,
       now(), now()
FROM generate_series(0, {ROUTED * DELIVERIES_PER_SUBMISSION - 1}) AS i,
     LATERAL (SELECT CASE WHEN i >= {ROUTED * DELIVERIES_PER_SUBMISSION} - 5000 THEN 'pending'
                          WHEN i % 10007 = 1 THEN 'in_flight'
                          WHEN i % 1009 = 3 THEN 'sent'
                          WHEN i % 997 = 5 THEN 'dead'
                          ELSE 'delivered' END AS status) AS s;
"""


@pytest.fixture(scope="module")
def big_engine(_pg_schemas: Any) -> Iterator[Engine]:
    url = _pg_schemas.new()
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            # the migration's indexes are built once after the fill (as fast as it gets), not row by row
            indexes = conn.execute(
                text(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                    "AND tablename IN ('submissions', 'deliveries', 'renditions') "
                    "AND indexname NOT LIKE 'pk_%' AND indexname NOT LIKE 'uq_%'"
                )
            ).all()
            assert len(indexes) > 10
            for name, _definition in indexes:
                conn.exec_driver_sql(f'DROP INDEX "{name}"')
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute(_FILL)  # no parameters: several statements, '%' is the operator
            for _name, definition in indexes:
                conn.exec_driver_sql(definition)
        yield engine
    finally:
        with engine.begin() as conn:  # free the space now rather than at the end of the session
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


class _Recorder:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[tuple[str, Any]] = []

    def __enter__(self) -> _Recorder:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        if not many and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            self.statements.append((statement, parameters))


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _outline(plan: dict[str, Any], depth: int = 0) -> str:
    """``Limit > LockRows > Index Scan(ix_…)``-style outline, for the failure message."""
    label = plan["Node Type"] + (f"({plan['Index Name']})" if "Index Name" in plan else "")
    label += f"[{plan['Relation Name']}]" if "Relation Name" in plan else ""
    children = [_outline(child, depth + 1) for child in plan.get("Plans", [])]
    return label + (" > " + " ; ".join(children) if children else "")


def _exercise(session: Session) -> None:
    """The statements of one document's way through the pipeline and the outbox, at scale."""
    sub_id = pipeline._claim(session, worker_id="plans", now=NOW, lease_seconds=60)
    assert sub_id is not None  # the oldest queued submission whose series is free
    sub = session.get(Submission, sub_id)
    assert sub is not None
    pipeline._previous_versions(session, sub)
    rows = outbox.enqueue(
        session,
        submission_id=sub.id,
        tenant_id=sub.tenant_id,
        series="dlu:42",
        destinations=[("dest-0", "webhook")],
        now=NOW,
    )
    assert rows[0].seq > 1
    claims = {"expired": 0, "due": 0}
    for _ in range(2):
        got = outbox.claim(
            session, worker_id="plans", now=NOW, lease_seconds=60, max_attempts=5, destinations=DESTINATIONS
        )
        assert isinstance(got, outbox.Claimed)
        claims["expired" if got.token.attempt > 1 else "due"] += 1
        outbox.held_versions(session, got.row)
        outbox.finish(
            session,
            got.token,
            outcome="success",
            receipt=Receipt(status="sent", remote_id="r", ack_ref=f"ack-{uuid.uuid4()}"),
            error=None,
            now=NOW,
            max_attempts=5,
            backoff=lambda n: 2.0,
            receipt_timeout_seconds=60,
        )
    assert claims["expired"] >= 1  # the expired leases come first
    assert outbox.expire_receipts(session, now=NOW, limit=5) == 5
    ack_ref = session.scalar(select(Delivery.ack_ref).where(Delivery.status == "sent").limit(1))
    assert ack_ref is not None
    result = outbox.acknowledge(
        session, Acknowledgement(ack_ref=ack_ref, kind="dsn", outcome="delivered"), tenant_id="t0", now=NOW, actor="t"
    )
    assert result.result == "applied"


def _check_plans(engine: Engine, *, analyzed: bool) -> list[str]:
    problems: list[str] = []
    with engine.connect() as conn:
        columns_with_statistics = conn.execute(
            text(
                "SELECT count(*) FROM pg_stats WHERE schemaname = current_schema() "
                "AND tablename IN ('submissions', 'deliveries', 'renditions')"
            )
        ).scalar_one()
        assert (columns_with_statistics > 0) is analyzed, "the first pass must run without planner statistics"
        conn.commit()
        session = Session(bind=conn)
        trans = conn.begin()
        try:
            with _Recorder(engine) as recorder:
                _exercise(session)
            session.flush()
            assert len(recorder.statements) > 20
            for statement, params in recorder.statements:
                plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", params).scalar_one()
                if isinstance(plan, str):
                    plan = json.loads(plan)
                root = plan[0]["Plan"]
                short = " ".join(statement.split())[:160]
                for node in _nodes(root):
                    if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in BIG_TABLES:
                        problems.append(f"Seq Scan on {node['Relation Name']}: {_outline(root)}: {short}")
                    if "SKIP LOCKED" in statement and node["Node Type"] in ("Sort", "Incremental Sort"):
                        problems.append(f"Sort in a claim: {_outline(root)}: {short}")
        finally:
            session.close()
            trans.rollback()
    return problems


def test_plans_without_statistics(big_engine: Engine) -> None:
    assert _check_plans(big_engine, analyzed=False) == []


def test_plans_after_analyze(big_engine: Engine) -> None:
    with big_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE submissions, deliveries, renditions")
    assert _check_plans(big_engine, analyzed=True) == []


def test_queue_is_as_big_as_announced(big_engine: Engine) -> None:
    with big_engine.connect() as conn:
        counts = dict(
            conn.execute(
                text(
                    "SELECT 'deliveries', count(*) FROM deliveries UNION ALL "
                    "SELECT 'queued', count(*) FROM submissions WHERE status IN ('received', 'processing')"
                )
            ).all()
        )
    assert counts == {"deliveries": ROUTED * DELIVERIES_PER_SUBMISSION, "queued": QUEUED}
