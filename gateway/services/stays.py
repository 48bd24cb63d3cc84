"""Stay events and indicators: record events (encrypted, idempotent, versioned), configure an
ESSMS's capacity and counting rules, compute its indicators (audited reads).

The caller owns the Session and commits; nothing here commits. Every read of stay events (they
are about persons) appends one audit event naming the ESSMS, the period and the person
references whose events were read.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway import audit
from gateway.errors import Conflict, FieldError, Forbidden, ValidationFailed
from gateway.security.clients import essms_of_tenant
from gateway.security.crypto import KeyRing, decrypt, encrypt
from gateway.storage.codec import facts_to_json
from gateway.storage.models import IndicatorReport, ReportingConfig, StayEventRow, Submission
from reporting import Capacity, Dataset, Period, Rules, StayEvent, compute
from reporting.events import InboundLike, NotAStayEvent, affected_range, from_inbound, from_json, latest, to_json
from reporting.indicators import TOTAL, compute_timeline, occupancy_by_period, occupancy_series

__all__ = [
    "Overview",
    "Recorded",
    "Reported",
    "check_essms",
    "dataset",
    "get_config",
    "load_events",
    "occupancy",
    "overview",
    "put_config",
    "record_event",
    "record_inbound",
    "record_report",
    "record_tddui_export",
    "report",
    "rules_from_json",
]


@dataclass(frozen=True)
class Recorded:
    """The outcome of recording one event version."""

    row: StayEventRow
    created: bool
    current: bool  # this version is the one the indicators use
    affected_from: datetime | None
    affected_to: datetime | None
    reported_periods: tuple[str, ...]  # already reported periods the event changes: send again


def check_essms(session: Session, *, tenant_id: str, finess: str) -> None:
    if finess not in essms_of_tenant(session, tenant_id):
        raise Forbidden(f"ESSMS with FINESS {finess} does not belong to this API client's organisation")


def _hash(event: StayEvent) -> str:
    canonical = json.dumps(to_json(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _versions(session: Session, *, tenant_id: str, finess: str, event_id: str) -> list[StayEventRow]:
    stmt = select(StayEventRow).where(
        StayEventRow.tenant_id == tenant_id,
        StayEventRow.essms_finess == finess,
        StayEventRow.event_id == event_id,
    )
    return sorted(session.scalars(stmt), key=lambda r: r.version)


def _decrypt_row(session: Session, row: StayEventRow, keyring: KeyRing) -> StayEvent:
    plain = decrypt(
        session, data_key_id=row.data_key_id, ciphertext=row.payload_ct, keyring=keyring, aad=row.id.encode()
    )
    return from_json(json.loads(plain))


def record_event(
    session: Session,
    *,
    tenant_id: str,
    event: StayEvent,
    keyring: KeyRing,
    actor: str,
    source: str = "api",
    now: datetime | None = None,
) -> Recorded:
    """Store one version of a stay event, encrypted, with its ``received`` audit event.

    The same (event id, version) with the same content is a replay (``created`` False); with
    other content it is a :class:`Conflict` (send a higher version to correct). A version lower
    than one already stored is kept for the record but does not change the indicators.
    """
    check_essms(session, tenant_id=tenant_id, finess=event.finess)
    request_hash = _hash(event)
    versions = _versions(session, tenant_id=tenant_id, finess=event.finess, event_id=event.event_id)
    same = next((r for r in versions if r.version == event.version), None)
    if same is not None:
        if same.request_hash != request_hash:
            raise Conflict(
                "this event id and version were already recorded with other content; send a higher version to correct",
                extra={
                    "errors": [{"pointer": "/version", "detail": "already used with other content", "code": "conflict"}]
                },
            )
        return Recorded(same, False, same.version == versions[-1].version, None, None, ())
    newest = versions[-1] if versions else None
    current = newest is None or event.version > newest.version
    now = now or datetime.now(UTC)
    row_id = str(uuid.uuid4())
    plaintext = json.dumps(to_json(event), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    ciphertext, data_key_id = encrypt(
        session, tenant_id=tenant_id, plaintext=plaintext, keyring=keyring, aad=row_id.encode()
    )
    row = StayEventRow(
        id=row_id,
        tenant_id=tenant_id,
        essms_finess=event.finess,
        event_id=event.event_id,
        version=event.version,
        kind=event.kind,
        person_ref=event.person_ref,
        occurred_at=event.at.astimezone(UTC),  # SQLite keeps wall time only: store UTC
        source=source,
        request_hash=request_hash,
        payload_ct=ciphertext,
        data_key_id=data_key_id,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        # Lost a race on the same (event id, version): the winner's row is committed now.
        winner = next(
            (r for r in _versions(session, tenant_id=tenant_id, finess=event.finess, event_id=event.event_id)
             if r.version == event.version),
            None,
        )  # fmt: skip
        if winner is None or winner.request_hash != request_hash:
            raise Conflict("this event id and version were recorded concurrently with other content") from None
        return Recorded(winner, False, True, None, None, ())
    affected_from: datetime | None = None
    affected_to: datetime | None = None
    reported: tuple[str, ...] = ()
    if current:
        old = _decrypt_row(session, newest, keyring) if newest is not None else None
        person_rows = session.scalars(
            select(StayEventRow).where(
                StayEventRow.tenant_id == tenant_id,
                StayEventRow.essms_finess == event.finess,
                StayEventRow.person_ref == event.person_ref,
            )
        )
        # only times are needed to bound the range: no decryption of the person's other events
        times = [
            StayEvent(r.event_id, "assessment", r.person_ref, r.essms_finess, _aware(r.occurred_at), gir=1)
            for r in person_rows
            if r.event_id != event.event_id
        ]
        affected_from, affected_to = affected_range(old, event, times)
        reported = _reported_between(
            session, tenant_id=tenant_id, finess=event.finess, lo=affected_from, hi=affected_to
        )
    audit.append(
        session,
        actor=actor,
        action="received",
        entity_type="stay_event",
        entity_id=row_id,
        tenant_id=tenant_id,
        person_ref=event.person_ref,
        detail={
            "essms_finess": event.finess,
            "kind": event.kind,
            "version": event.version,
            "source": source,
            "reported_periods_affected": list(reported),
        },
    )
    return Recorded(row, True, current, affected_from, affected_to, reported)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # SQLite drops the offset


def _reported_between(
    session: Session, *, tenant_id: str, finess: str, lo: datetime, hi: datetime | None
) -> tuple[str, ...]:
    stmt = select(IndicatorReport).where(IndicatorReport.tenant_id == tenant_id, IndicatorReport.essms_finess == finess)
    out = {
        r.period
        for r in session.scalars(stmt)
        if _aware(r.period_end) > lo and (hi is None or _aware(r.period_start) < hi)
    }
    return tuple(sorted(out))


def load_events(session: Session, *, tenant_id: str, finess: str, keyring: KeyRing) -> list[StayEvent]:
    """Every stored version of the ESSMS's stay events, decrypted (callers audit the read)."""
    # plain columns, not ORM entities: building 40,000 instances cost as much as decrypting them
    stmt = (
        select(StayEventRow.id, StayEventRow.data_key_id, StayEventRow.payload_ct)
        .where(StayEventRow.tenant_id == tenant_id, StayEventRow.essms_finess == finess)
        .order_by(StayEventRow.created_at, StayEventRow.id)
    )
    out = []
    for row_id, data_key_id, ciphertext in session.execute(stmt):
        plain = decrypt(session, data_key_id=data_key_id, ciphertext=ciphertext, keyring=keyring, aad=row_id.encode())
        out.append(from_json(json.loads(plain)))
    return out


def rules_from_json(data: Mapping[str, Any]) -> Rules:
    kw: dict[str, Any] = {}
    if "timezone" in data:
        ZoneInfo(str(data["timezone"]))  # raises on an unknown zone
        kw["timezone"] = str(data["timezone"])
    if "full_rate_absence_days" in data:
        kw["full_rate_absence_days"] = {str(k): int(v) for k, v in data["full_rate_absence_days"].items()}
    if "billing_stop_days" in data:
        kw["billing_stop_days"] = {str(k): int(v) for k, v in data["billing_stop_days"].items()}
    if "exit_day_counts" in data:
        kw["exit_day_counts"] = frozenset(str(v) for v in data["exit_day_counts"])
    if "age_bands" in data:
        kw["age_bands"] = tuple(int(v) for v in data["age_bands"])
    return Rules(**kw)


def _capacity_json(c: Capacity) -> dict[str, Any]:
    return {
        "accommodation": c.accommodation,
        "places": c.places,
        "valid_from": c.valid_from.isoformat(),
        "valid_to": c.valid_to.isoformat() if c.valid_to else None,
        "opening_days": c.opening_days,
    }


def put_config(
    session: Session,
    *,
    tenant_id: str,
    finess: str,
    capacities: Sequence[Capacity],
    rules: Mapping[str, Any],
    actor: str,
    now: datetime | None = None,
) -> ReportingConfig:
    """Replace the ESSMS's capacities and rules (not personal data; audited as a change)."""
    check_essms(session, tenant_id=tenant_id, finess=finess)
    try:
        parsed = rules_from_json(rules)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValidationFailed(
            "the counting rules are not valid", [FieldError("/rules", "invalid rules", "invalid_rules")]
        ) from exc
    now = now or datetime.now(UTC)
    row = session.get(ReportingConfig, finess)
    if row is None:
        row = ReportingConfig(essms_finess=finess, tenant_id=tenant_id, capacities=[], rules={}, updated_at=now)
        session.add(row)
    row.capacities = [_capacity_json(c) for c in capacities]
    row.rules = parsed.as_json()
    row.updated_at = now
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="configured",
        entity_type="essms",
        entity_id=finess,
        tenant_id=tenant_id,
        detail={"capacities": len(capacities)},
    )
    return row


def get_config(session: Session, *, tenant_id: str, finess: str) -> tuple[list[Capacity], Rules]:
    check_essms(session, tenant_id=tenant_id, finess=finess)
    row = session.get(ReportingConfig, finess)
    if row is None or row.tenant_id != tenant_id:
        return [], Rules()
    caps = [
        Capacity(
            accommodation=c["accommodation"],
            places=int(c["places"]),
            valid_from=date.fromisoformat(c["valid_from"]),
            valid_to=date.fromisoformat(c["valid_to"]) if c.get("valid_to") else None,
            opening_days=c.get("opening_days"),
        )
        for c in row.capacities
    ]
    return caps, rules_from_json(row.rules)


def _audit_read(
    session: Session, *, tenant_id: str, finess: str, actor: str, what: str, events: Sequence[StayEvent]
) -> None:
    audit.append(
        session,
        actor=actor,
        action="read",
        entity_type="indicators",
        entity_id=finess,
        tenant_id=tenant_id,
        detail={
            "what": what,
            "essms_finess": finess,
            "events": len(events),
            "person_refs": sorted({e.person_ref for e in events}),
        },
    )


def dataset(session: Session, *, tenant_id: str, finess: str, period: Period, keyring: KeyRing, actor: str) -> Dataset:
    """The ESSMS's indicators for the period, from every stored version of its events (audited)."""
    caps, rules = get_config(session, tenant_id=tenant_id, finess=finess)
    events = load_events(session, tenant_id=tenant_id, finess=finess, keyring=keyring)
    _audit_read(
        session, tenant_id=tenant_id, finess=finess, actor=actor, what=f"indicators {period.code}", events=events
    )
    return compute(events, finess=finess, period=period, capacities=caps, rules=rules)


def occupancy(
    session: Session,
    *,
    tenant_id: str,
    finess: str,
    start: date,
    end: date,
    keyring: KeyRing,
    actor: str,
    accommodation: str | None = None,
) -> list[dict[str, Any]]:
    """Daily occupancy of the ESSMS over ``[start, end)`` for a chart (audited)."""
    if end <= start or (end - start).days > 3660:
        raise ValidationFailed(
            "the range must be 1 day to 10 years", [FieldError("query:to", "after 'from', 10 years at most", "range")]
        )
    caps, rules = get_config(session, tenant_id=tenant_id, finess=finess)
    events = load_events(session, tenant_id=tenant_id, finess=finess, keyring=keyring)
    _audit_read(session, tenant_id=tenant_id, finess=finess, actor=actor, what="occupancy", events=events)
    tl = compute_timeline(latest(events), rules)
    return occupancy_series(tl, finess=finess, start=start, end=end, capacities=caps, accommodation=accommodation)


@dataclass(frozen=True)
class Overview:
    """What the console's indicators page shows of one ESSMS: the chosen period's dataset and the
    occupancy of its year by month or quarter, per accommodation type (``all``: every type)."""

    dataset: Dataset
    chart_periods: list[Period]
    accommodations: list[str]
    occupancy: dict[str, list[dict[str, Any]]]


def overview(
    session: Session,
    *,
    tenant_id: str,
    finess: str,
    period: Period,
    by: str,
    keyring: KeyRing,
    actor: str,
) -> Overview:
    """The period's indicators and the occupancy of its year (``by`` ``month`` or ``quarter``), from
    one read of the events (audited like every read) and one timeline: the dataset is the API's
    (:func:`dataset`), the occupancy the API's daily series (:func:`occupancy`) summed per period."""
    year = Period.year(period.start.year)
    chart = year.months() if by == "month" else [Period.quarter(year.start.year, q) for q in range(1, 5)]
    caps, rules = get_config(session, tenant_id=tenant_id, finess=finess)
    events = load_events(session, tenant_id=tenant_id, finess=finess, keyring=keyring)
    _audit_read(
        session,
        tenant_id=tenant_id,
        finess=finess,
        actor=actor,
        what=f"indicators {period.code} (console)",
        events=events,
    )
    tl = compute_timeline(events, rules)  # it keeps the latest versions
    ds = compute(events, finess=finess, period=period, capacities=caps, rules=rules, timeline=tl)
    seen = {seg.accommodation for stay in tl.stays if stay.finess == finess for seg in stay.segments}
    accommodations = sorted(seen | {c.accommodation for c in caps} | set(ds.by_accommodation))
    occupancy: dict[str, list[dict[str, Any]]] = {}
    for acc in [None, *accommodations]:
        series = occupancy_series(tl, finess=finess, start=year.start, end=year.end, capacities=caps, accommodation=acc)
        occupancy[acc or TOTAL] = occupancy_by_period(series, chart)
    return Overview(dataset=ds, chart_periods=chart, accommodations=accommodations, occupancy=occupancy)


def record_report(
    session: Session,
    *,
    tenant_id: str,
    ds: Dataset,
    body: bytes,
    submission_id: str | None,
    now: datetime | None = None,
) -> IndicatorReport:
    """Remember that this period's dataset was reported (corrections to it are then flagged)."""
    tz = ZoneInfo(ds.rules.timezone)
    row = IndicatorReport(
        id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        essms_finess=ds.finess,
        period=ds.period.code,
        period_start=datetime.combine(ds.period.start, time(), tz).astimezone(UTC),
        period_end=datetime.combine(ds.period.end, time(), tz).astimezone(UTC),
        dataset_sha256=hashlib.sha256(body).hexdigest(),
        submission_id=submission_id,
        created_at=now or datetime.now(UTC),
    )
    session.add(row)
    session.flush()
    return row


def record_inbound(
    session: Session, *, tenant_id: str, event: InboundLike, keyring: KeyRing, source: str
) -> Recorded | None:
    """The seam for inbound sources (HL7 v2 ADT): a movement of a matched resident becomes a stay
    event (see :func:`reporting.events.from_inbound`); anything else is None (not a stay event,
    or an ESSMS of another tenant), so a worker can call it on every inbound event it stores."""
    try:
        stay_event = from_inbound(event)
    except NotAStayEvent:
        return None
    if stay_event.finess not in essms_of_tenant(session, tenant_id):
        return None
    return record_event(
        session,
        tenant_id=tenant_id,
        event=stay_event,
        keyring=keyring,
        actor=f"source:{source}"[:255],
        source=source[:32],
    )


@dataclass(frozen=True)
class Reported:
    submission_id: str
    dataset_sha256: str
    created: bool


def report(
    session: Session,
    *,
    tenant_id: str,
    finess: str,
    period: Period,
    keyring: KeyRing,
    actor: str,
    correlation_id: str = "",
    now: datetime | None = None,
) -> Reported:
    """Hand the period's dataset to the outbox: an ``indicator-dataset`` submission, routed and
    delivered (SIDOBA connector...) with retries and audit like any document.

    The same dataset reported twice is one submission (idempotency key = FINESS, period and the
    dataset's hash); a changed dataset (a correction arrived) is a new one, the next version of
    the period's series. The report is remembered so later corrections name this period.
    """
    from mappings.indicator_dataset import INDICATOR_DATASET, IndicatorDatasetRecord

    ds = dataset(session, tenant_id=tenant_id, finess=finess, period=period, keyring=keyring, actor=actor)
    record = IndicatorDatasetRecord(
        essms_finess=finess, period=period.code, layout_version=ds.layout_version, dataset=ds.as_json()
    )
    content = json.dumps(record.dataset, sort_keys=True, separators=(",", ":")).encode("utf-8")
    digest = hashlib.sha256(content).hexdigest()
    key = f"indicators:{finess}:{period.code}:{digest[:32]}"
    existing = session.scalar(
        select(Submission.id).where(Submission.tenant_id == tenant_id, Submission.idempotency_key == key)
    )
    if existing is not None:
        return Reported(existing, digest, False)
    now = now or datetime.now(UTC)
    body = record.model_dump_json().encode("utf-8")
    sub_id = str(uuid.uuid4())
    ciphertext, key_id = encrypt(session, tenant_id=tenant_id, plaintext=body, keyring=keyring, aad=sub_id.encode())
    facts = INDICATOR_DATASET.facts(record)
    session.add(
        Submission(
            id=sub_id,
            tenant_id=tenant_id,
            client_id=None,
            document_type=INDICATOR_DATASET.code,
            essms_finess=finess,
            person_ref=facts.person_ref,
            status="received",
            idempotency_key=key,
            request_hash=hashlib.sha256(body).hexdigest(),
            payload_ct=ciphertext,
            data_key_id=key_id,
            facts=facts_to_json(facts),
            correlation_id=correlation_id or uuid.uuid4().hex,
            created_at=now,
            updated_at=now,
        )
    )
    session.flush()
    record_report(session, tenant_id=tenant_id, ds=ds, body=content, submission_id=sub_id, now=now)
    audit.append(
        session,
        actor=actor,
        action="received",
        entity_type="submission",
        entity_id=sub_id,
        tenant_id=tenant_id,
        detail={"document_type": INDICATOR_DATASET.code, "essms_finess": finess, "period": period.code},
    )
    return Reported(sub_id, digest, True)


TDDUI_SOURCE = "tddui-export"


def record_tddui_export(
    session: Session, *, tenant_id: str, record: Any, version: int, keyring: KeyRing, actor: str
) -> list[Recorded]:
    """The stay events of an accepted ``tddui-export`` record (:func:`reporting.tddui.from_tddui_export`).

    ``version`` orders the exports of a person (the pipeline passes the submission's reception
    time in epoch seconds): each stay's admission and exit are recorded at that version, so a
    later export corrects an earlier one; the same export processed again is an idempotent
    replay. A ``tddui:`` event an earlier export gave for this person and this one no longer
    does (a stay deleted, an exit withdrawn) is withdrawn (a cancelled version). An export older
    than what is stored changes nothing that is current. Raises like :func:`record_event`.
    """
    from reporting.tddui import from_tddui_export

    finess = record.essms.finess
    person_ref = record.person.local_id
    _, rules = get_config(session, tenant_id=tenant_id, finess=finess)
    events = from_tddui_export(record, version=version, timezone=rules.timezone)
    fresh = {e.event_id for e in events}
    stored = session.scalars(
        select(StayEventRow).where(
            StayEventRow.tenant_id == tenant_id,
            StayEventRow.essms_finess == finess,
            StayEventRow.person_ref == person_ref,
            StayEventRow.source == TDDUI_SOURCE,
        )
    )
    newest: dict[str, StayEventRow] = {}
    for row in stored:
        if row.event_id not in newest or row.version > newest[row.event_id].version:
            newest[row.event_id] = row
    for event_id, row in sorted(newest.items()):
        if event_id in fresh or row.version >= version:
            continue
        if _decrypt_row(session, row, keyring).cancelled:
            continue
        events.append(
            StayEvent(
                event_id=event_id,
                kind=row.kind,
                person_ref=person_ref,
                finess=finess,
                at=_aware(row.occurred_at),
                version=version,
                cancelled=True,
            )
        )
    return [
        record_event(session, tenant_id=tenant_id, event=e, keyring=keyring, actor=actor, source=TDDUI_SOURCE)
        for e in events
    ]
