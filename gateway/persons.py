"""Who an inbound message is about: the person identifier index, unmatched persons, sharing choices.

- **Index** (``person_identifiers``): identifiers the gateway knows for a DUI person
  (``person_ref``), as a salted digest (no value in clear): each routed record's *qualified* INS
  (``urn:oid:<INS OID>|<matricule>``), every identifier an operator linked, identifiers an A40
  merge carried over. An inbound event naming ``identifiers`` is matched on them, INS first.
- **Unmatched persons** (``unmatched_persons``): an event no identifier matched is still
  delivered (``person_ref`` ``unmatched:<inbound id>``) *and* kept here, its identifiers
  encrypted, for an operator to link (``dui-gateway persons unmatched`` / ``link``, or
  ``GET /v1/unmatched-persons``); linking indexes them, so the next message matches.
- **Sharing choices** (``sharing_choices``): what a peer collected about the person's sharing
  (e.g. ZFA opposition to DMP feeding), per consent family, audited; routing adds the refused
  families to the record's own (:func:`stored_refusals`), so the next DLU is not sent there.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from sqlalchemy import Table, bindparam, select
from sqlalchemy.dialects.postgresql import insert as _pg_insert
from sqlalchemy.dialects.sqlite import insert as _sqlite_insert
from sqlalchemy.orm import Session

from gateway import audit
from gateway.security.crypto import KeyRing, decrypt, encrypt
from gateway.storage.models import PersonIdentifier, SharingChoice, Submission, UnmatchedPerson
from mappings.consent import ConsentFamily

__all__ = [
    "Unmatched",
    "UnmatchedSummary",
    "apply_sharing",
    "digest",
    "get_unmatched",
    "index_record",
    "keep_unmatched",
    "known_person",
    "link",
    "list_unmatched",
    "match",
    "remember",
    "stored_refusals",
    "summaries",
]

_log = structlog.get_logger(__name__)
_IDENTIFIERS = cast(Table, PersonIdentifier.__table__)
_CHOICES = cast(Table, SharingChoice.__table__)
# Core statements built once (building a statement per call costs more CPU than running it)
_INDEXED = select(_IDENTIFIERS.c.person_ref).where(
    _IDENTIFIERS.c.tenant_id == bindparam("tenant_id"), _IDENTIFIERS.c.digest == bindparam("digest")
)
# by "is PostgreSQL": an insert that does nothing when the identifier is already indexed
_INSERT_IDENTIFIER = {
    postgres: (_pg_insert if postgres else _sqlite_insert)(_IDENTIFIERS).on_conflict_do_nothing(
        index_elements=["tenant_id", "digest"]
    )
    for postgres in (True, False)
}
_REFUSED = select(_CHOICES.c.family).where(
    _CHOICES.c.tenant_id == bindparam("tenant_id"),
    _CHOICES.c.person_ref == bindparam("person_ref"),
    _CHOICES.c.refused.is_(True),
)
_INS_PREFIX = "urn:oid:1.2.250.1.213.1.4."


def _now() -> datetime:
    return datetime.now(UTC)


def _split(identifier: str) -> tuple[str, str]:
    system, _, value = identifier.rpartition("|")
    return system.strip()[:128], value.strip()


def digest(tenant_id: str, identifier: str) -> str:
    """The index key of ``system|value`` for a tenant (SHA-256; the value is never stored)."""
    system, value = _split(identifier)
    return hashlib.sha256(f"{tenant_id}\x1f{system}\x1f{value}".encode()).hexdigest()


def _ordered(identifiers: Iterable[str]) -> list[str]:
    ids = [i for i in identifiers if _split(i)[0] and _split(i)[1]]
    return sorted(ids, key=lambda i: not i.startswith(_INS_PREFIX))  # INS first


def match(session: Session, tenant_id: str, identifiers: Iterable[str]) -> str | None:
    """The person_ref of the first identifier the index knows (INS first), or None."""
    for identifier in _ordered(identifiers):
        found = session.scalar(
            select(PersonIdentifier.person_ref).where(
                PersonIdentifier.tenant_id == tenant_id, PersonIdentifier.digest == digest(tenant_id, identifier)
            )
        )
        if found is not None:
            return str(found)
    return None


def remember(
    session: Session,
    *,
    tenant_id: str,
    essms_finess: str,
    person_ref: str,
    identifiers: Iterable[str],
    origin: str,
    now: datetime | None = None,
) -> int:
    """Index ``identifiers`` for ``person_ref``; one already indexed for someone else is left
    (logged, never silently moved: identity vigilance). Returns how many were added."""
    added = 0
    connection = session.connection()
    insert = _INSERT_IDENTIFIER[connection.dialect.name == "postgresql"]
    for identifier in _ordered(identifiers):
        key = digest(tenant_id, identifier)
        existing = connection.execute(_INDEXED, {"tenant_id": tenant_id, "digest": key}).scalar()
        if existing is not None:
            if existing != person_ref:
                _log.warning("person_identifier_conflict", system=_split(identifier)[0])
            continue
        # a concurrent worker may index the same identifier first: then this insert does nothing
        # (one statement; a savepoint around a plain INSERT cost three)
        done = connection.execute(
            insert,
            {
                "id": str(uuid.uuid4()),
                "tenant_id": tenant_id,
                "digest": key,
                "system": _split(identifier)[0],
                "person_ref": person_ref,
                "essms_finess": essms_finess,
                "origin": origin,
                "created_at": now or _now(),
            },
        )
        if done.rowcount == 1:
            added += 1
    return added


def index_record(session: Session, *, tenant_id: str, essms_finess: str, person_ref: str, record: Any) -> int:
    """Index a routed record's person: its INS when the identity is qualifiée (``usable_ins``)."""
    person = getattr(record, "person", None)
    ins = getattr(person, "usable_ins", None)
    if ins is None:
        return 0
    return remember(
        session,
        tenant_id=tenant_id,
        essms_finess=essms_finess,
        person_ref=person_ref,
        identifiers=[f"urn:oid:{ins.oid}|{ins.matricule}"],
        origin="record",
    )


def stored_refusals(session: Session, tenant_id: str, person_ref: str) -> frozenset[str]:
    """Consent families the person refused through a stored sharing choice."""
    rows = session.connection().execute(_REFUSED, {"tenant_id": tenant_id, "person_ref": person_ref}).scalars()
    return frozenset(rows)


def apply_sharing(
    session: Session,
    *,
    tenant_id: str,
    person_ref: str,
    choices: Mapping[str, bool],
    actor: str,
    inbound_id: str | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Record ``choices`` (family -> refused) for the person, each change audited; unknown
    families are ignored. Returns the families whose choice changed."""
    moment = now or _now()
    changed: list[str] = []
    for value, refused in sorted(choices.items()):
        try:
            family = ConsentFamily(value)
        except ValueError:
            continue
        row = session.scalar(
            select(SharingChoice).where(
                SharingChoice.tenant_id == tenant_id,
                SharingChoice.person_ref == person_ref,
                SharingChoice.family == family.value,
            )
        )
        if row is not None and row.refused == bool(refused):
            continue
        if row is None:
            session.add(
                SharingChoice(
                    id=str(uuid.uuid4()),
                    tenant_id=tenant_id,
                    person_ref=person_ref,
                    family=family.value,
                    refused=bool(refused),
                    origin=actor[:64],
                    inbound_id=inbound_id,
                    updated_at=moment,
                )
            )
        else:
            row.refused = bool(refused)
            row.origin = actor[:64]
            row.inbound_id = inbound_id
            row.updated_at = moment
        session.flush()
        changed.append(family.value)
        audit.append(
            session,
            actor=actor,
            action="sharing_choice_changed",
            entity_type="person",
            entity_id=person_ref[:128],
            tenant_id=tenant_id,
            person_ref=person_ref,
            detail={"consent": family.value, "refused": bool(refused), "inbound": inbound_id},
            at=moment,
        )
    return changed


def keep_unmatched(
    session: Session,
    keyring: KeyRing,
    *,
    tenant_id: str,
    essms_finess: str,
    source: str,
    inbound_id: str,
    submission_id: str | None,
    event_type: str,
    identifiers: Sequence[str],
    now: datetime | None = None,
) -> str:
    """Keep an event whose person no identifier matched, for an operator."""
    row_id = str(uuid.uuid4())
    ciphertext, key_id = encrypt(
        session,
        tenant_id=tenant_id,
        plaintext=json.dumps(list(identifiers)).encode(),
        keyring=keyring,
        aad=row_id.encode(),
    )
    session.add(
        UnmatchedPerson(
            id=row_id,
            tenant_id=tenant_id,
            essms_finess=essms_finess,
            source=source[:64],
            inbound_id=inbound_id,
            submission_id=submission_id,
            event_type=event_type[:64],
            digests=[digest(tenant_id, i) for i in identifiers],
            identifiers_ct=ciphertext,
            data_key_id=key_id,
            status="open",
            created_at=now or _now(),
        )
    )
    session.flush()
    return row_id


@dataclass(frozen=True)
class Unmatched:
    id: str
    essms_finess: str
    source: str
    inbound_id: str
    submission_id: str | None
    event_type: str
    status: str
    person_ref: str | None
    created_at: datetime
    identifiers: tuple[str, ...]  # decrypted: for an authorised operator only, never logged

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "essms_finess": self.essms_finess,
            "source": self.source,
            "inbound_id": self.inbound_id,
            "submission_id": self.submission_id,
            "event_type": self.event_type,
            "status": self.status,
            "person_ref": self.person_ref,
            "created_at": self.created_at.isoformat(),
            "identifiers": list(self.identifiers),
        }


def list_unmatched(
    session: Session, keyring: KeyRing, *, tenant_id: str | None = None, status: str = "open", limit: int = 100
) -> list[Unmatched]:
    query = select(UnmatchedPerson).where(UnmatchedPerson.status == status)
    if tenant_id is not None:
        query = query.where(UnmatchedPerson.tenant_id == tenant_id)
    return [
        _unmatched(session, keyring, row)
        for row in session.scalars(query.order_by(UnmatchedPerson.created_at).limit(limit))
    ]


def _unmatched(session: Session, keyring: KeyRing, row: UnmatchedPerson) -> Unmatched:
    plain = decrypt(
        session, data_key_id=row.data_key_id, ciphertext=row.identifiers_ct, keyring=keyring, aad=row.id.encode()
    )
    return Unmatched(
        id=row.id,
        essms_finess=row.essms_finess,
        source=row.source,
        inbound_id=row.inbound_id,
        submission_id=row.submission_id,
        event_type=row.event_type,
        status=row.status,
        person_ref=row.person_ref,
        created_at=row.created_at,
        identifiers=tuple(json.loads(plain)),
    )


def get_unmatched(session: Session, keyring: KeyRing, *, tenant_id: str, unmatched_id: str) -> Unmatched | None:
    """One entry of the tenant, its identifiers decrypted (the caller audits the read), or None."""
    row = session.get(UnmatchedPerson, unmatched_id)
    if row is None or row.tenant_id != tenant_id:
        return None
    return _unmatched(session, keyring, row)


@dataclass(frozen=True)
class UnmatchedSummary:
    """An unmatched entry without the peer's identifiers (nothing decrypted): for lists."""

    id: str
    essms_finess: str
    source: str
    event_type: str
    status: str
    person_ref: str | None
    created_at: datetime
    linked_at: datetime | None
    identifier_count: int


def summaries(
    session: Session,
    *,
    tenant_id: str,
    status: str = "open",
    essms_any: Collection[str] | None = None,
    limit: int = 200,
) -> list[UnmatchedSummary]:
    """The tenant's entries in ``status``, oldest first, without their identifiers."""
    query = select(UnmatchedPerson).where(UnmatchedPerson.tenant_id == tenant_id, UnmatchedPerson.status == status)
    if essms_any is not None:
        query = query.where(UnmatchedPerson.essms_finess.in_(list(essms_any)))
    order = UnmatchedPerson.created_at if status == "open" else UnmatchedPerson.linked_at.desc()
    return [
        UnmatchedSummary(
            id=row.id,
            essms_finess=row.essms_finess,
            source=row.source,
            event_type=row.event_type,
            status=row.status,
            person_ref=row.person_ref,
            created_at=row.created_at,
            linked_at=row.linked_at,
            identifier_count=len(row.digests or []),
        )
        for row in session.scalars(query.order_by(order).limit(limit))
    ]


def known_person(session: Session, *, tenant_id: str, person_ref: str) -> bool:
    """Whether the tenant's DUI already sent something about ``person_ref`` (a submission) or the
    index holds identifiers for it: a guard against linking to a mistyped reference."""
    submitted = session.scalar(
        select(Submission.id).where(Submission.tenant_id == tenant_id, Submission.person_ref == person_ref).limit(1)
    )
    if submitted is not None:
        return True
    indexed = session.scalar(
        select(PersonIdentifier.id)
        .where(PersonIdentifier.tenant_id == tenant_id, PersonIdentifier.person_ref == person_ref)
        .limit(1)
    )
    return indexed is not None


def link(
    session: Session,
    keyring: KeyRing,
    *,
    unmatched_id: str,
    person_ref: str,
    actor: str,
    tenant_id: str | None = None,
    essms_any: Collection[str] | None = None,
) -> int:
    """An operator says who an unmatched event was about: its identifiers are indexed for
    ``person_ref``; every open entry with one of those identifiers is linked too (within
    ``essms_any`` when the operator's grant is limited to some ESSMS). One ``person_linked``
    audit event names every entry linked with its state before and after. Returns the number of
    entries linked. Raises LookupError for an unknown or closed entry (or one outside ``essms_any``).
    The API, the CLI and the console all link through here."""
    row = session.get(UnmatchedPerson, unmatched_id)
    if row is None or row.status != "open" or (tenant_id is not None and row.tenant_id != tenant_id):
        raise LookupError("no open unmatched person with this id")
    if essms_any is not None and row.essms_finess not in essms_any:
        raise LookupError("no open unmatched person with this id")
    plain = decrypt(
        session, data_key_id=row.data_key_id, ciphertext=row.identifiers_ct, keyring=keyring, aad=row.id.encode()
    )
    identifiers = json.loads(plain)
    now = _now()
    added = remember(
        session,
        tenant_id=row.tenant_id,
        essms_finess=row.essms_finess,
        person_ref=person_ref,
        identifiers=identifiers,
        origin="operator",
        now=now,
    )
    keys = set(row.digests or [])
    changes: list[dict[str, Any]] = []
    for other in session.scalars(
        select(UnmatchedPerson).where(UnmatchedPerson.tenant_id == row.tenant_id, UnmatchedPerson.status == "open")
    ):
        if essms_any is not None and other.essms_finess not in essms_any:
            continue
        if other.id == row.id or keys.intersection(other.digests or []):
            changes.append(
                {
                    "unmatched": other.id,
                    "before": {"status": other.status, "person_ref": other.person_ref},
                    "after": {"status": "linked", "person_ref": person_ref},
                }
            )
            other.status = "linked"
            other.person_ref = person_ref
            other.linked_at = now
    linked = len(changes)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="person_linked",
        entity_type="person",
        entity_id=person_ref[:128],
        tenant_id=row.tenant_id,
        person_ref=person_ref,
        detail={
            "unmatched": unmatched_id,
            "identifiers_indexed": added,
            "entries_linked": linked,
            "changes": changes,
        },
        at=now,
    )
    return linked
