"""An accepted ``tddui-export`` submission feeds the indicators: its stays become stay events in
the pipeline's own transaction (issue #11, "also derivable from the TDDUI export"); a later
export corrects an earlier one (a stay withdrawn, an exit added); the same export processed
again records nothing new; an export that fails the gate records nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gateway import pipeline
from gateway.services import stays
from gateway.storage.db import session_scope
from gateway.storage.models import StayEventRow, Submission
from reporting import Period, compute
from tests.gateway.engine.support import T0, Clock, make_runtime, submit

RECORD = Path(__file__).resolve().parents[2] / "resources" / "records" / "ppa-ehpad.json"


def _export(finess: str, stays_: list[dict[str, Any]]) -> dict[str, Any]:
    data = json.loads(RECORD.read_text(encoding="utf-8"))
    data.pop("stay", None)
    data.pop("ppa", None)
    data["essms"]["finess"] = finess
    data["stays"] = stays_
    return dict(data)


def _process(runtime: Any, sub_id: str, session_factory: Any) -> str:
    assert pipeline.process_next(runtime, worker_id="w1", clock=Clock())
    with session_scope(session_factory) as session:
        sub = session.get(Submission, sub_id)
        assert sub is not None
        return sub.status


def _rows(session_factory: Any) -> list[tuple[str, int, str]]:
    with session_scope(session_factory) as session:
        rows = session.scalars(select(StayEventRow).order_by(StayEventRow.event_id, StayEventRow.version))
        return [(r.event_id, r.version, r.source) for r in rows]


def test_accepted_exports_feed_versioned_stay_events(session_factory, keyring, tenant) -> None:
    runtime = make_runtime(session_factory, keyring)
    person = "EHPAD-2024-0042"
    first = _export(
        tenant.finess,
        [
            {"id": "S1", "start": "2026-01-10", "end": "2026-02-05", "encounter_class": "IMP"},
            {"id": "S2", "start": "2026-03-01", "encounter_class": "IMP"},
        ],
    )
    one = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref=person,
                 document_type="tddui-export", raw=first, created_at=T0)  # fmt: skip
    assert _process(runtime, one, session_factory) == "routed"
    v1 = int(T0.timestamp())
    assert _rows(session_factory) == [
        ("tddui:S1:admission", v1, "tddui-export"),
        ("tddui:S1:exit", v1, "tddui-export"),
        ("tddui:S2:admission", v1, "tddui-export"),
    ]
    # a later export: S1 was entered by mistake (gone), S2 ended
    second = _export(
        tenant.finess, [{"id": "S2", "start": "2026-03-01", "end": "2026-03-21", "encounter_class": "IMP"}]
    )
    later = T0 + timedelta(hours=2)
    two = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref=person,
                 document_type="tddui-export", raw=second, created_at=later)  # fmt: skip
    assert _process(runtime, two, session_factory) == "routed"
    v2 = int(later.timestamp())
    assert [r for r in _rows(session_factory) if r[1] == v2] == [
        ("tddui:S1:admission", v2, "tddui-export"),
        ("tddui:S1:exit", v2, "tddui-export"),
        ("tddui:S2:admission", v2, "tddui-export"),
        ("tddui:S2:exit", v2, "tddui-export"),
    ]
    with session_scope(session_factory) as session:
        events = stays.load_events(session, tenant_id=tenant.id, finess=tenant.finess, keyring=keyring)
        withdrawn = {e.event_id for e in events if e.cancelled}
        assert withdrawn == {"tddui:S1:admission", "tddui:S1:exit"}
        ds = stays.dataset(session, tenant_id=tenant.id, finess=tenant.finess, period=Period.parse("2026"),
                           keyring=keyring, actor="test")  # fmt: skip
    assert (ds.totals.entries, ds.totals.exits, ds.totals.days_realised) == (1, 1, 20)
    assert compute(events, finess=tenant.finess, period=Period.parse("2026-01")).totals.days_realised == 0

    # the same exports recorded again (a crash before the commit, a replay): idempotent; the older
    # one arriving last changes nothing current
    from mappings.tddui import TdduiExportRecord

    before = _rows(session_factory)
    with session_scope(session_factory) as session:
        for raw, version in ((second, v2), (first, v1)):
            out = stays.record_tddui_export(session, tenant_id=tenant.id, record=TdduiExportRecord.model_validate(raw),
                                            version=version, keyring=keyring, actor="test")  # fmt: skip
            assert not any(r.created and r.current for r in out)
    assert _rows(session_factory) == before


def test_a_rejected_export_records_no_stay_event(session_factory, keyring, tenant) -> None:
    runtime = make_runtime(session_factory, keyring)
    bad = _export(tenant.finess, [{"id": "S1", "start": "2026-01-10", "encounter_class": "IMP"}])
    bad["person"].pop("local_id")
    sub = submit(session_factory, keyring, tenant_id=tenant.id, finess=tenant.finess, person_ref="x",
                 document_type="tddui-export", raw=bad)  # fmt: skip
    assert _process(runtime, sub, session_factory) == "rejected"
    assert _rows(session_factory) == []
