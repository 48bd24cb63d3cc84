"""External anchors for the audit chains.

A hash chain proves that nothing changed *relative to its head*; whoever can write to the database
can rewrite events, recompute every hash (without the HMAC keys: plain SHA-256) and move the heads.
An anchor is every chain's head (chain, position, hash) and the time, copied from time to time
somewhere the database user cannot write: an append-only file owned by another user, a remote
syslog, a ticket. Verifying against anchors then proves each chain still holds, at each anchored
position, the very hash that was anchored: history before an anchor cannot be rewritten unnoticed,
even with the keys.

Anchor lines are JSON objects ``{"anchored_at": "…Z", "heads": [{"chain": C, "chain_seq": N,
"hash": H}, …]}``, one per line. Also accepted: the ``OK: …`` line printed by ``audit verify``
(``chain C head #N hash H`` for each chain), and the single-chain forms written before migration
0008 (``{"seq": N, "hash": H, …}`` and ``… head seq N hash H``), which anchor chain 0: the events
of that one chain became chain 0 with unchanged positions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.storage.models import AuditEvent, AuditHead

__all__ = ["Anchor", "check_anchors", "current_anchor", "parse_anchors"]

_OK_HEAD_RE = re.compile(r"\bchain (?P<chain>[0-9]+) head #(?P<seq>[0-9]+) hash (?P<hash>[0-9a-f]{64})\b")
_OLD_OK_LINE_RE = re.compile(r"head seq (?P<seq>[0-9]+) hash (?P<hash>[0-9a-f]{64})\b")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Anchor:
    """The heads of the chains at one moment: ``(chain, chain_seq, hash)`` each."""

    heads: tuple[tuple[int, int, str], ...]
    anchored_at: str | None = None

    def to_json(self) -> str:
        heads = [{"chain": c, "chain_seq": n, "hash": h} for c, n, h in self.heads]
        return json.dumps({"anchored_at": self.anchored_at, "heads": heads}, sort_keys=True)


def current_anchor(session: Session) -> Anchor:
    """Every chain's head now, stamped with the current time (UTC)."""
    rows = session.execute(select(AuditHead.id, AuditHead.last_seq, AuditHead.last_hash).order_by(AuditHead.id))
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return Anchor(heads=tuple((int(c), int(n), str(h)) for c, n, h in rows), anchored_at=at)


def _heads_of(doc: Any) -> tuple[tuple[int, int, str], ...]:
    if not isinstance(doc, dict):
        raise TypeError
    if "heads" in doc:
        heads = tuple((int(h["chain"]), int(h["chain_seq"]), str(h["hash"])) for h in doc["heads"])
    else:  # written before 0008: the one chain, now chain 0
        heads = ((0, int(doc["seq"]), str(doc["hash"])),)
    return heads


def parse_anchors(lines: Iterable[str]) -> list[Anchor]:
    """Anchors from JSON lines (or ``audit verify`` OK lines); ValueError names the bad line number."""
    out: list[Anchor] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if line.startswith("{"):
                doc = json.loads(line)
                anchor = Anchor(heads=_heads_of(doc), anchored_at=doc.get("anchored_at"))
            elif found := list(_OK_HEAD_RE.finditer(line)):
                anchor = Anchor(heads=tuple((int(m["chain"]), int(m["seq"]), m["hash"]) for m in found))
            elif old := _OLD_OK_LINE_RE.search(line):
                anchor = Anchor(heads=((0, int(old["seq"]), old["hash"]),))
            else:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"line {number}: not an audit anchor") from None
        chains = [c for c, _, _ in anchor.heads]
        if (
            not anchor.heads
            or len(set(chains)) != len(chains)
            or any(c < 0 or n < 0 or not _HASH_RE.match(h) for c, n, h in anchor.heads)
        ):
            raise ValueError(f"line {number}: not an audit anchor")
        out.append(anchor)
    if not out:
        raise ValueError("no audit anchor found")
    return out


def check_anchors(session: Session, anchors: Iterable[Anchor]) -> list[str]:
    """One problem per anchored head the chains no longer hold (another hash at that chain and
    position, or no such event)."""
    problems: list[str] = []
    for anchor in anchors:
        when = f" (anchored {anchor.anchored_at})" if anchor.anchored_at else ""
        for chain, position, digest in anchor.heads:
            if position == 0:
                continue  # an empty chain anchors nothing
            found = session.scalars(
                select(AuditEvent.hash).where(AuditEvent.chain == chain, AuditEvent.chain_seq == position)
            ).one_or_none()
            where = f"anchor chain {chain} #{position}{when}"
            if found is None:
                problems.append(f"{where}: the chain has no such event (missing: truncated)")
            elif found != digest:
                problems.append(f"{where}: the chain holds another hash there (rewritten)")
    return problems
