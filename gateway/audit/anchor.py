"""External anchors for the audit chain.

A hash chain proves that nothing changed *relative to its head*; whoever can write to the database
can rewrite events, recompute every hash (without the HMAC keys: plain SHA-256) and move the head.
An anchor is the head (``seq``, ``hash``, time) copied from time to time somewhere the database
user cannot write: an append-only file owned by another user, a remote syslog, a ticket. Verifying
against anchors then proves the chain still holds, at each anchored ``seq``, the very hash that was
anchored: history before an anchor cannot be rewritten unnoticed, even with the keys.

Anchor lines are JSON objects ``{"seq": …, "hash": …, "anchored_at": "…Z"}``, one per line; the
``OK: … head seq S hash H`` line printed by ``audit verify`` is accepted too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.storage.models import AuditEvent, AuditHead

__all__ = ["Anchor", "check_anchors", "current_anchor", "parse_anchors"]

_OK_LINE_RE = re.compile(r"head seq (?P<seq>[0-9]+) hash (?P<hash>[0-9a-f]{64})\b")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    anchored_at: str | None = None

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "hash": self.hash, "anchored_at": self.anchored_at}, sort_keys=True)


def current_anchor(session: Session) -> Anchor:
    """The chain head now, stamped with the current time (UTC)."""
    head = session.scalars(select(AuditHead)).one()
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return Anchor(seq=int(head.last_seq), hash=head.last_hash, anchored_at=at)


def parse_anchors(lines: Iterable[str]) -> list[Anchor]:
    """Anchors from JSON lines (or ``audit verify`` OK lines); ValueError names the bad line number."""
    out: list[Anchor] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        found = _OK_LINE_RE.search(line) if not line.startswith("{") else None
        try:
            if found is not None:
                anchor = Anchor(seq=int(found["seq"]), hash=found["hash"])
            else:
                doc = json.loads(line[line.index("{") :])
                anchor = Anchor(seq=int(doc["seq"]), hash=str(doc["hash"]), anchored_at=doc.get("anchored_at"))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"line {number}: not an audit anchor") from None
        if anchor.seq < 0 or not _HASH_RE.match(anchor.hash):
            raise ValueError(f"line {number}: not an audit anchor")
        out.append(anchor)
    if not out:
        raise ValueError("no audit anchor found")
    return out


def check_anchors(session: Session, anchors: Iterable[Anchor]) -> list[str]:
    """One problem per anchor the chain no longer holds (another hash at its seq, or no such seq)."""
    problems: list[str] = []
    for anchor in anchors:
        if anchor.seq == 0:
            continue  # an empty chain anchors nothing
        when = f" (anchored {anchor.anchored_at})" if anchor.anchored_at else ""
        found = session.scalars(select(AuditEvent.hash).where(AuditEvent.seq == anchor.seq)).one_or_none()
        if found is None:
            problems.append(f"anchor seq {anchor.seq}{when}: the chain has no such event (missing: truncated)")
        elif found != anchor.hash:
            problems.append(f"anchor seq {anchor.seq}{when}: the chain holds another hash there (rewritten)")
    return problems
