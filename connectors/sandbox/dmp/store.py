"""Durable state of the DMP simulator (SQLite, WAL): patients' DMPs, document entries, submission
sets and a log of what was answered."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["DmpStore", "StoredEntry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    patient_id TEXT PRIMARY KEY,          -- CX <INS>^^^&<oid>&ISO^NH
    status TEXT NOT NULL                  -- active | closed | unknown
);
CREATE TABLE IF NOT EXISTS entries (
    entry_uuid TEXT PRIMARY KEY,
    unique_id TEXT NOT NULL UNIQUE,
    patient_id TEXT NOT NULL,
    status TEXT NOT NULL,                 -- Approved | Deprecated
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    type_code TEXT NOT NULL,
    format_code TEXT NOT NULL,
    confidentiality TEXT NOT NULL,        -- JSON list of codes
    submission_set TEXT NOT NULL,
    replaces TEXT,                        -- entryUUID replaced (RPLC)
    route TEXT NOT NULL,                  -- xds | mhd
    received_at TEXT NOT NULL,
    metadata TEXT NOT NULL,               -- the ebRIM ExtrinsicObject (or DocumentReference JSON)
    content BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_entries_patient ON entries (patient_id, status);
CREATE TABLE IF NOT EXISTS submission_sets (
    unique_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,                -- success | failure | fault | http
    codes TEXT NOT NULL                   -- JSON list of error codes
);
"""


@dataclass(frozen=True)
class StoredEntry:
    entry_uuid: str
    unique_id: str
    patient_id: str
    status: str
    hash: str
    size: int
    type_code: str
    format_code: str
    confidentiality: tuple[str, ...]
    submission_set: str
    replaces: str | None
    route: str

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _now() -> str:
    return datetime.now(UTC).isoformat()


class DmpStore:
    """One SQLite connection behind a lock (the simulator's threads share it)."""

    def __init__(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- patients -------------------------------------------------------------------------
    def patient_status(self, patient_id: str) -> str | None:
        with self.lock:
            row = self._db.execute("SELECT status FROM patients WHERE patient_id = ?", (patient_id,)).fetchone()
        return str(row[0]) if row else None

    def set_patient(self, patient_id: str, status: str) -> None:
        """``status``: ``active`` (DMP open), ``closed`` (DMP fermé) or ``unknown`` (no DMP)."""
        if status not in ("active", "closed", "unknown"):
            raise ValueError(f"unknown patient status {status!r}")
        with self.lock:
            self._db.execute(
                "INSERT INTO patients (patient_id, status) VALUES (?, ?) "
                "ON CONFLICT (patient_id) DO UPDATE SET status = excluded.status",
                (patient_id, status),
            )

    # -- entries --------------------------------------------------------------------------
    _COLUMNS = (
        "entry_uuid, unique_id, patient_id, status, hash, size, type_code, format_code, confidentiality, "
        "submission_set, replaces, route"
    )

    @staticmethod
    def _entry(row: Sequence[Any]) -> StoredEntry:
        return StoredEntry(
            entry_uuid=row[0],
            unique_id=row[1],
            patient_id=row[2],
            status=row[3],
            hash=row[4],
            size=int(row[5]),
            type_code=row[6],
            format_code=row[7],
            confidentiality=tuple(json.loads(row[8])),
            submission_set=row[9],
            replaces=row[10],
            route=row[11],
        )

    def entry_by_unique_id(self, unique_id: str) -> StoredEntry | None:
        with self.lock:
            row = self._db.execute(f"SELECT {self._COLUMNS} FROM entries WHERE unique_id = ?", (unique_id,)).fetchone()  # noqa: S608 (constant column list)
        return self._entry(row) if row else None

    def entry(self, entry_uuid: str) -> StoredEntry | None:
        with self.lock:
            row = self._db.execute(
                f"SELECT {self._COLUMNS} FROM entries WHERE entry_uuid = ?",  # noqa: S608 (constant column list)
                (entry_uuid,),
            ).fetchone()
        return self._entry(row) if row else None

    def entries(self, patient_id: str | None = None) -> list[StoredEntry]:
        with self.lock:
            if patient_id is None:
                rows = self._db.execute(f"SELECT {self._COLUMNS} FROM entries ORDER BY received_at, rowid").fetchall()  # noqa: S608 (constant column list)
            else:
                rows = self._db.execute(
                    f"SELECT {self._COLUMNS} FROM entries WHERE patient_id = ? ORDER BY received_at, rowid",  # noqa: S608 (constant column list)
                    (patient_id,),
                ).fetchall()
        return [self._entry(r) for r in rows]

    def content(self, entry_uuid: str) -> bytes | None:
        with self.lock:
            row = self._db.execute("SELECT content FROM entries WHERE entry_uuid = ?", (entry_uuid,)).fetchone()
        return bytes(row[0]) if row else None

    def insert_entry(self, db: sqlite3.Connection, entry: StoredEntry, *, metadata: str, content: bytes) -> None:
        db.execute(
            f"INSERT INTO entries ({self._COLUMNS}, received_at, metadata, content) "  # noqa: S608 (constant column list)
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.entry_uuid,
                entry.unique_id,
                entry.patient_id,
                entry.status,
                entry.hash,
                entry.size,
                entry.type_code,
                entry.format_code,
                json.dumps(list(entry.confidentiality)),
                entry.submission_set,
                entry.replaces,
                entry.route,
                _now(),
                metadata,
                content,
            ),
        )

    def record_submission_set(self, db: sqlite3.Connection, unique_id: str, patient_id: str, source_id: str) -> None:
        db.execute(
            "INSERT OR IGNORE INTO submission_sets (unique_id, patient_id, source_id, received_at) VALUES (?, ?, ?, ?)",
            (unique_id, patient_id, source_id, _now()),
        )

    def log(self, action: str, outcome: str, codes: Sequence[str]) -> None:
        with self.lock:
            self._db.execute(
                "INSERT INTO answers (at, action, outcome, codes) VALUES (?, ?, ?, ?)",
                (_now(), action, outcome, json.dumps(list(codes))),
            )

    def answers(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = self._db.execute("SELECT n, at, action, outcome, codes FROM answers ORDER BY n").fetchall()
        return [{"n": r[0], "at": r[1], "action": r[2], "outcome": r[3], "codes": json.loads(r[4])} for r in rows]
