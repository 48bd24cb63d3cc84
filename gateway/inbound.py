"""Inbound flows: durable storage of what sources receive, then its interpretation by workers.

1. A source (listener or poller, :class:`connectors.base.Source`) hands each message to a
   :class:`DatabaseSink`, which commits it encrypted (tenant data key, AAD = row id) with an
   audit event and only then returns; the source acknowledges its peer after that. The same
   (source, external_id) stored twice keeps the first (a peer's resend is recognised).
   HTTP-pushed sources (:class:`connectors.base.HttpSource`) arrive through ``POST /inbound/{name}``.
2. Workers claim stored messages (``received``, with a lease) whose source is configured in
   their process, and call ``source.interpret`` (pure):
   - each :class:`~connectors.base.Acknowledgement` goes to ``outbox.acknowledge`` (a DSN, an
     MDN, an HL7 ACK, a webhook receipt moves a ``sent`` delivery to delivered or failed); one
     whose delivery is not known yet is tried again for ``UNKNOWN_ACK_GRACE`` (a receipt can
     overtake the recording of its send), then kept with a note;
   - each :class:`~connectors.base.InboundEvent` becomes a submission of the internal document
     type ``inbound-event``, mapped, routed and delivered like any document (to the DUI vendor).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connectors.base import InboundEvent, InboundMessage, Interpretation, StoredInbound
from gateway import audit, persons
from gateway.delivery import outbox
from gateway.errors import GatewayError
from gateway.security.crypto import DecryptionError, KeyUnavailable, decrypt, encrypt, encrypt_many
from gateway.services import stays
from gateway.storage.codec import facts_to_json
from gateway.storage.models import InboundMessage as InboundRow
from gateway.storage.models import Submission, Tenant
from mappings.inbound_event import INBOUND_EVENT, InboundEventRecord

if TYPE_CHECKING:
    from gateway.routing import ConfiguredSource
    from gateway.runtime import Runtime

__all__ = [
    "UNKNOWN_ACK_GRACE",
    "DatabaseSink",
    "InboundTooLarge",
    "SourceRunner",
    "give_credentials",
    "process_next_inbound",
]

_log = structlog.get_logger(__name__)

UNKNOWN_ACK_GRACE = timedelta(minutes=2)
_RETRY_UNKNOWN = timedelta(seconds=5)
_SAFE_HEADER_CHARS = 256
_DATA_KEY_TTL = 30.0  # seconds a batch insert reuses the tenant's current data key id


def _utcnow() -> datetime:
    return datetime.now(UTC)


class InboundTooLarge(ValueError):
    """A message larger than ``DUI_GATEWAY_INBOUND_MAX_BYTES`` is not stored."""


def _tenant_id(session: Session, tenant: str) -> str:
    row = session.scalars(select(Tenant).where(or_(Tenant.code == tenant, Tenant.id == tenant))).first()
    if row is None:
        raise LookupError(f"unknown tenant {tenant!r} for an inbound source")
    return row.id


class DatabaseSink:
    """The :class:`connectors.base.InboundSink` of one configured source."""

    def __init__(self, runtime: Runtime, configured: ConfiguredSource, *, clock: Callable[[], datetime] = _utcnow):
        self._runtime = runtime
        self._configured = configured
        self._clock = clock
        self._tenant_id: str | None = None
        self._data_key: tuple[str, float] | None = None  # (id, until): group commits skip the lookup

    def store(self, message: InboundMessage) -> StoredInbound:
        """Commit the message (encrypted) and its audit event; a known (source, external_id) is a duplicate."""
        if len(message.content) > self._runtime.settings.inbound_max_bytes:
            raise InboundTooLarge(
                f"message of {len(message.content)} bytes exceeds {self._runtime.settings.inbound_max_bytes}"
            )
        source = self._configured.name
        external_id = message.external_id.strip()[:255] or hashlib.sha256(message.content).hexdigest()
        now = as_aware(message.received_at) or self._clock()
        factory = self._runtime.session_factory
        with factory() as session:
            existing = session.scalar(
                select(InboundRow.id).where(InboundRow.source == source, InboundRow.external_id == external_id)
            )
        if existing is not None:
            return StoredInbound(id=str(existing), duplicate=True)
        row_id = str(uuid.uuid4())
        try:
            with factory() as session, session.begin():
                if self._tenant_id is None:
                    self._tenant_id = _tenant_id(session, self._configured.tenant)
                ciphertext, key_id = encrypt(
                    session,
                    tenant_id=self._tenant_id,
                    plaintext=message.content,
                    keyring=self._runtime.keyring,
                    aad=row_id.encode(),
                )
                headers = {str(k)[:64]: str(v)[:_SAFE_HEADER_CHARS] for k, v in list(message.headers.items())[:32]}
                session.add(
                    InboundRow(
                        id=row_id,
                        source=source,
                        tenant_id=self._tenant_id,
                        external_id=external_id,
                        media_type=message.media_type[:128],
                        headers=headers or None,
                        content_ct=ciphertext,
                        data_key_id=key_id,
                        size=len(message.content),
                        status="received",
                        received_at=now,
                    )
                )
                session.flush()
                audit.append(
                    session,
                    actor=f"source:{source}",
                    action="inbound_received",
                    entity_type="inbound",
                    entity_id=row_id,
                    tenant_id=self._tenant_id,
                    detail={"source": source, "size": len(message.content), "media_type": message.media_type[:128]},
                    at=now,
                    peer={"external_id": external_id},
                )
        except IntegrityError:
            with factory() as session:
                existing = session.scalar(
                    select(InboundRow.id).where(InboundRow.source == source, InboundRow.external_id == external_id)
                )
            if existing is None:
                raise
            return StoredInbound(id=str(existing), duplicate=True)
        self._runtime.wake_workers()
        return StoredInbound(id=row_id, duplicate=False)

    def store_many(self, messages: Sequence[InboundMessage]) -> list[StoredInbound | Exception]:
        """Commit several messages in one transaction (group commit): one answer per message, in
        order, each a :class:`StoredInbound` (committed, or already known: ``duplicate``) or the
        exception that kept that message out (too large). Raises when the transaction fails:
        then none of them is stored. One audit event records the batch (its inbound ids)."""
        limit = self._runtime.settings.inbound_max_bytes
        source = self._configured.name
        answers: list[StoredInbound | Exception | None] = [None] * len(messages)
        wanted: dict[str, int] = {}  # external id -> index of its first occurrence
        for index, message in enumerate(messages):
            if len(message.content) > limit:
                answers[index] = InboundTooLarge(f"message of {len(message.content)} bytes exceeds {limit}")
                continue
            external_id = message.external_id.strip()[:255] or hashlib.sha256(message.content).hexdigest()
            wanted.setdefault(external_id, index)
        fresh: dict[str, str] = {}
        if wanted:
            fresh = self._insert_batch(source, {ext: messages[i] for ext, i in wanted.items()})
            known = [ext for ext in wanted if ext not in fresh]
            existing: dict[str, str] = {}
            if known:
                with self._runtime.session_factory() as session:
                    existing = {
                        str(ext): str(row_id)
                        for ext, row_id in session.execute(
                            select(InboundRow.external_id, InboundRow.id).where(
                                InboundRow.source == source, InboundRow.external_id.in_(known)
                            )
                        )
                    }
            for index, message in enumerate(messages):
                if answers[index] is not None:
                    continue
                ext = message.external_id.strip()[:255] or hashlib.sha256(message.content).hexdigest()
                if ext in fresh and wanted[ext] == index:
                    answers[index] = StoredInbound(id=fresh[ext], duplicate=False)
                elif ext in fresh or ext in existing:
                    answers[index] = StoredInbound(id=fresh.get(ext) or existing[ext], duplicate=True)
                else:  # neither inserted nor found: cannot say it is stored
                    answers[index] = LookupError("the message could not be stored")
        if fresh:
            self._runtime.wake_workers()
        return [a if a is not None else LookupError("not stored") for a in answers]

    def _insert_batch(self, source: str, batch: dict[str, InboundMessage]) -> dict[str, str]:
        """INSERT ... ON CONFLICT DO NOTHING of the batch; the external ids inserted -> their row id."""
        now = self._clock()
        ids = {ext: str(uuid.uuid4()) for ext in batch}
        with self._runtime.session_factory() as session, session.begin():
            if self._tenant_id is None:
                self._tenant_id = _tenant_id(session, self._configured.tenant)
            tenant_id = self._tenant_id
            cached_key = self._data_key if self._data_key and self._data_key[1] > time.monotonic() else None
            ciphertexts, key_id = encrypt_many(
                session,
                tenant_id=tenant_id,
                items=[(m.content, ids[ext].encode()) for ext, m in batch.items()],
                keyring=self._runtime.keyring,
                data_key_id=cached_key[0] if cached_key else None,
            )
            if cached_key is None:  # a rotated key is used for new messages within _DATA_KEY_TTL
                self._data_key = (key_id, time.monotonic() + _DATA_KEY_TTL)
            values = []
            for (ext, message), ciphertext in zip(batch.items(), ciphertexts, strict=True):
                headers = {str(k)[:64]: str(v)[:_SAFE_HEADER_CHARS] for k, v in list(message.headers.items())[:32]}
                values.append(
                    {
                        "id": ids[ext],
                        "source": source,
                        "tenant_id": tenant_id,
                        "external_id": ext,
                        "media_type": message.media_type[:128],
                        "headers": headers or None,
                        "content_ct": ciphertext,
                        "data_key_id": key_id,
                        "size": len(message.content),
                        "status": "received",
                        "received_at": as_aware(message.received_at) or now,
                    }
                )
            # one statement, built and compiled once, sent as multi-row VALUES (insertmanyvalues)
            result = session.connection().execute(_insert_statement(session.get_bind().dialect.name), values)
            inserted = {str(ext): str(row_id) for row_id, ext in result}
            if inserted:
                audit.append(
                    session,
                    actor=f"source:{source}",
                    action="inbound_received",
                    entity_type="inbound",
                    entity_id=next(iter(inserted.values())),
                    tenant_id=tenant_id,
                    detail={
                        "source": source,
                        "count": len(inserted),
                        "inbound": sorted(inserted.values()),
                        "size": sum(len(batch[e].content) for e in inserted),
                    },
                    at=now,
                    peer={"external_ids": ",".join(sorted(inserted))[:2000]},
                )
        return inserted


@functools.cache
def _insert_statement(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (source, external_id) DO NOTHING RETURNING id, external_id."""
    table = InboundRow.__table__
    assert isinstance(table, Table)
    insert_fn = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert_fn(table)
        .on_conflict_do_nothing(index_elements=["source", "external_id"])
        .returning(table.c.id, table.c.external_id)
    )


def as_aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- processing -------------------------------------------------------------------------------------
def _claim(session: Session, *, sources: list[str], worker_id: str, now: datetime, lease_seconds: float) -> str | None:
    query = (
        select(InboundRow.id, InboundRow.status, InboundRow.lease_owner)
        .where(
            InboundRow.source.in_(sources),
            or_(
                and_(
                    InboundRow.status == "received",
                    or_(InboundRow.lease_until.is_(None), InboundRow.lease_until <= now),
                ),
                and_(InboundRow.status == "processing", InboundRow.lease_until <= now),
            ),
        )
        .order_by(InboundRow.received_at)
    )
    postgres = session.get_bind().dialect.name == "postgresql"
    query = query.limit(1).with_for_update(skip_locked=True, of=InboundRow) if postgres else query.limit(4)
    for row_id, status, owner in session.execute(query).all():
        owner_cond = InboundRow.lease_owner.is_(None) if owner is None else InboundRow.lease_owner == owner
        done = session.execute(
            update(InboundRow)
            .where(InboundRow.id == row_id, InboundRow.status == status, owner_cond)
            .values(status="processing", lease_owner=worker_id, lease_until=now + timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            return str(row_id)
    return None


def _interpret(configured: ConfiguredSource, message: InboundMessage) -> Interpretation:
    try:
        result = configured.source.interpret(message)
    except Exception as exc:  # a source bug must not lose the message or loop: kept with a note
        _log.error("inbound_interpret_crashed", source=configured.name, error_type=type(exc).__name__)
        return Interpretation(note=f"the source could not interpret it ({type(exc).__name__})")
    if not isinstance(result, Interpretation):
        return Interpretation(note=f"the source returned {type(result).__name__}, not an Interpretation")
    return result


def _event_submission(
    session: Session, runtime: Runtime, *, row: InboundRow, event: InboundEvent, index: int, now: datetime
) -> str | None:
    """Store one event as an ``inbound-event`` submission (idempotent per message and index)."""
    key = f"inbound:{row.id}:{index}"
    found = session.scalar(
        select(Submission.id).where(Submission.tenant_id == row.tenant_id, Submission.idempotency_key == key)
    )
    if found is not None:
        return None
    person_ref = _person(session, row=row, event=event, now=now)
    try:
        record = InboundEventRecord(
            event_type=event.event_type,
            source=row.source,
            inbound_id=row.id,
            essms_finess=event.essms_finess,
            person_ref=person_ref,
            series=event.series,
            payload=json.loads(json.dumps(dict(event.payload), default=str)),
        )
    except (ValueError, TypeError) as exc:
        _log.warning("inbound_event_invalid", source=row.source, error_type=type(exc).__name__)
        return None
    body = record.model_dump_json().encode("utf-8")
    sub_id = str(uuid.uuid4())
    ciphertext, key_id = encrypt(
        session, tenant_id=row.tenant_id, plaintext=body, keyring=runtime.keyring, aad=sub_id.encode()
    )
    facts = INBOUND_EVENT.facts(record)
    session.add(
        Submission(
            id=sub_id,
            tenant_id=row.tenant_id,
            client_id=None,
            document_type=INBOUND_EVENT.code,
            essms_finess=event.essms_finess,
            person_ref=facts.person_ref,
            status="received",
            idempotency_key=key,
            request_hash=hashlib.sha256(body).hexdigest(),
            payload_ct=ciphertext,
            data_key_id=key_id,
            facts=facts_to_json(facts),
            correlation_id=uuid.uuid4().hex,
            created_at=now,
            updated_at=now,
        )
    )
    session.flush()
    audit.append(
        session,
        actor=f"source:{row.source}",
        action="received",
        entity_type="submission",
        entity_id=sub_id,
        tenant_id=row.tenant_id,
        person_ref=facts.person_ref,
        detail={"document_type": INBOUND_EVENT.code, "event_type": event.event_type, "inbound": row.id},
        at=now,
    )
    if person_ref is not None:
        _record_stay(session, runtime, row=row, event=dataclasses.replace(event, person_ref=person_ref))
    if person_ref is None and (event.identifiers or event.former_identifiers):
        persons.keep_unmatched(
            session,
            runtime.keyring,
            tenant_id=row.tenant_id,
            essms_finess=event.essms_finess,
            source=row.source,
            inbound_id=row.id,
            submission_id=sub_id,
            event_type=event.event_type,
            identifiers=[*event.identifiers, *event.former_identifiers],
            now=now,
        )
    return sub_id


def _record_stay(session: Session, runtime: Runtime, *, row: InboundRow, event: InboundEvent) -> None:
    """A matched resident's hospital movement (HL7 v2 ADT) also feeds the indicators' stay events
    (``reporting.events.from_inbound``); anything else is ignored there. A movement the stay
    model refuses (a conflicting correction, an ESSMS without reporting) is noted in the log
    without content and never blocks the event's delivery to the DUI vendor."""
    try:
        with session.begin_nested():
            stays.record_inbound(
                session, tenant_id=row.tenant_id, event=event, keyring=runtime.keyring, source=row.source
            )
    except GatewayError as exc:
        _log.warning("inbound_stay_event_refused", source=row.source, error_type=type(exc).__name__)


def _person(session: Session, *, row: InboundRow, event: InboundEvent, now: datetime) -> str | None:
    """The DUI person an event is about: the source's own match, else the identifier index (INS
    first, then the other identifiers, then those an A40 merged). A matched person's identifiers
    from the message are indexed (an A40 carries the merged ones over, audited), and sharing
    choices the peer collected are applied (audited)."""
    actor = f"source:{row.source}"
    person_ref = event.person_ref
    if person_ref is None and (event.identifiers or event.former_identifiers):
        person_ref = persons.match(session, row.tenant_id, [*event.identifiers, *event.former_identifiers])
    if person_ref is None:
        return None
    added = persons.remember(
        session,
        tenant_id=row.tenant_id,
        essms_finess=event.essms_finess,
        person_ref=person_ref,
        identifiers=[*event.identifiers, *event.former_identifiers],
        origin="merge" if event.former_identifiers else "message",
        now=now,
    )
    if event.former_identifiers:
        audit.append(
            session,
            actor=actor,
            action="identity_merged",
            entity_type="person",
            entity_id=person_ref[:128],
            tenant_id=row.tenant_id,
            person_ref=person_ref,
            detail={"inbound": row.id, "identifiers_indexed": added},
            at=now,
        )
    if event.sharing_refusals:
        persons.apply_sharing(
            session,
            tenant_id=row.tenant_id,
            person_ref=person_ref,
            choices=event.sharing_refusals,
            actor=actor,
            inbound_id=row.id,
            now=now,
        )
    return person_ref


def process_next_inbound(runtime: Runtime, *, worker_id: str, clock: Callable[[], datetime] = _utcnow) -> bool:
    """Claim one stored inbound message of a source configured here and act on it; False when idle."""
    if not runtime.sources:
        return False
    now = clock()
    with runtime.session_factory() as session, session.begin():
        row_id = _claim(
            session,
            sources=sorted(runtime.sources),
            worker_id=worker_id,
            now=now,
            lease_seconds=runtime.settings.lease_seconds,
        )
    if row_id is None:
        return False
    with runtime.session_factory() as session:
        row = session.get(InboundRow, row_id)
        assert row is not None
        configured = runtime.sources[row.source]
        try:
            content = decrypt(
                session,
                data_key_id=row.data_key_id,
                ciphertext=row.content_ct,
                keyring=runtime.keyring,
                aad=row.id.encode(),
            )
        except KeyUnavailable:
            content = None  # ours: try again later
        except DecryptionError:
            content = b""  # tampered: never readable
        message = InboundMessage(
            external_id=row.external_id,
            content=content or b"",
            media_type=row.media_type,
            headers=dict(row.headers or {}),
            received_at=outbox.as_utc(row.received_at),
        )
        received_at = outbox.as_utc(row.received_at)
        session.expunge(row)
    if content is None:
        _release(
            runtime,
            row_id,
            worker_id,
            status="received",
            now=now,
            lease=timedelta(seconds=runtime.settings.lease_seconds),
        )
        return True
    interpretation = (
        _interpret(configured, message) if content else Interpretation(note="content does not authenticate")
    )
    unknown = 0
    notes: list[str] = [interpretation.note] if interpretation.note else []
    for ack in interpretation.acknowledgements:
        with runtime.session_factory() as session, session.begin():
            result = outbox.acknowledge(
                session,
                ack,
                tenant_id=row.tenant_id,
                now=clock(),
                actor=f"source:{row.source}",
                inbound_id=row.id,
                destinations=configured.destinations,
            )
        if result.result == "unknown":
            unknown += 1
    if unknown and now - received_at < UNKNOWN_ACK_GRACE:
        # a receipt may overtake the recording of its send: look again shortly
        _release(runtime, row_id, worker_id, status="received", now=now, lease=_RETRY_UNKNOWN)
        return True
    if unknown:
        notes.append(f"{unknown} acknowledgement(s) for no known delivery")
    created: list[str] = []
    with runtime.session_factory() as session, session.begin():
        fresh = session.get(InboundRow, row_id)
        assert fresh is not None
        for index, event in enumerate(interpretation.events):
            sub_id = _event_submission(session, runtime, row=fresh, event=event, index=index, now=clock())
            if sub_id is not None:
                created.append(sub_id)
        done = session.execute(
            update(InboundRow)
            .where(InboundRow.id == row_id, InboundRow.status == "processing", InboundRow.lease_owner == worker_id)
            .values(
                status="processed" if (interpretation.acknowledgements or interpretation.events) else "ignored",
                note="; ".join(notes)[:2000] or None,
                lease_owner=None,
                lease_until=None,
                processed_at=clock(),
            )
            .execution_options(synchronize_session=False)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            return True
        audit.append(
            session,
            actor=f"worker:{worker_id}",
            action="inbound_processed",
            entity_type="inbound",
            entity_id=row_id,
            tenant_id=fresh.tenant_id,
            detail={
                "acknowledgements": len(interpretation.acknowledgements),
                "unknown_acknowledgements": unknown,
                "events": created,
            },
            at=clock(),
        )
    if created:
        runtime.wake_workers()
    return True


def _release(runtime: Runtime, row_id: str, worker_id: str, *, status: str, now: datetime, lease: timedelta) -> None:
    with runtime.session_factory() as session, session.begin():
        session.execute(
            update(InboundRow)
            .where(InboundRow.id == row_id, InboundRow.lease_owner == worker_id)
            .values(status=status, lease_owner=None, lease_until=now + lease)
            .execution_options(synchronize_session=False)
        )


def give_credentials(runtime: Runtime, configured: ConfiguredSource) -> None:
    """Hand the ESSMS's credentials to a source that declares a ``credentials_purpose``."""
    purpose = getattr(configured.source, "credentials_purpose", None)
    if not purpose or not hasattr(configured.source, "credentials"):
        return
    finess = str(getattr(getattr(configured.source, "settings", None), "essms_finess", None) or "*")
    try:
        with runtime.session_factory() as session:
            found = runtime.credentials.get(
                session, tenant_id=_tenant_id(session, configured.tenant), essms_finess=finess, purpose=str(purpose)
            )
    except LookupError:
        found = None
    if found is not None:
        configured.source.credentials = found
    else:
        _log.warning("source_without_credentials", source=configured.name, purpose=purpose)


class SourceRunner:
    """Runs every configured (non-HTTP) source's ``run`` loop in its own thread until stopped."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for name, configured in sorted(self._runtime.sources.items()):
            sink = DatabaseSink(self._runtime, configured)
            thread = threading.Thread(
                target=self._run, args=(name, configured, sink), name=f"dui-source-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _run(self, name: str, configured: ConfiguredSource, sink: DatabaseSink) -> None:
        structlog.contextvars.bind_contextvars(source=name)
        backoff = 1.0
        while not self._stop.is_set():
            try:
                give_credentials(self._runtime, configured)
                configured.source.run(sink, self._stop)
                return
            except Exception as exc:  # a source must not die for good: log the type, wait, run again
                _log.error("source_crashed", source=name, error_type=type(exc).__name__)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []


def sink_for(runtime: Runtime, name: str) -> tuple[Any, DatabaseSink]:
    """The configured source ``name`` and its sink (for the HTTP route)."""
    configured = runtime.sources[name]
    return configured.source, DatabaseSink(runtime, configured)
