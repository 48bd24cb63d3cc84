"""A small, strict reader of decoded ER7 messages: segments, fields, repetitions, components.

Positions are HL7's (1-based; ``MSH-1`` is the field separator, ``MSH-2`` the encoding
characters). Values are unescaped on access. Nothing here raises on odd content: a missing
segment, field or component reads as ``""``.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.hl7v2.er7 import unescape

__all__ = ["Message", "Segment", "parse"]


@dataclass(frozen=True)
class Segment:
    name: str
    fields: tuple[str, ...]  # fields[i] is field i (fields[0] is the name)

    def raw(self, index: int) -> str:
        return self.fields[index] if 0 < index < len(self.fields) else ""


@dataclass(frozen=True)
class Message:
    segments: tuple[Segment, ...]
    field_sep: str
    encoding: str

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        for segment in self.segments:
            if segment.name == name:
                return segment
        return None

    def _un(self, value: str) -> str:
        return unescape(value, field_sep=self.field_sep, encoding=self.encoding)

    def repetitions(self, segment: Segment | None, index: int) -> list[str]:
        """The raw repetitions of a field (components still joined)."""
        if segment is None:
            return []
        value = segment.raw(index)
        if segment.name == "MSH" and index == 2:
            return [value]
        return [r for r in value.split(self.encoding[1])] if value else []

    def component(self, value: str, comp: int = 1, sub: int = 0) -> str:
        """Component ``comp`` (1-based) of a raw field value, or its sub-component ``sub``."""
        parts = value.split(self.encoding[0])
        part = parts[comp - 1] if comp - 1 < len(parts) else ""
        if sub:
            subs = part.split(self.encoding[3])
            part = subs[sub - 1] if sub - 1 < len(subs) else ""
        return self._un(part).strip()

    def get(self, name: str, index: int, comp: int = 1, sub: int = 0) -> str:
        """``NAME-index.comp.sub`` of the first such segment, first repetition."""
        reps = self.repetitions(self.first(name), index)
        return self.component(reps[0], comp, sub) if reps else ""


def parse(text: str) -> Message:
    """Segments of a decoded message (``\\r``, ``\\n`` or ``\\r\\n`` separated)."""
    if not text.startswith("MSH") or len(text) < 8:
        raise ValueError("not an HL7 v2 message")
    sep = text[3]
    encoding = text[4:8]
    segments: list[Segment] = []
    for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        if not line.strip():
            continue
        name = line[:3]
        if name == "MSH":
            rest = line[4:].split(sep)
            fields = (name, sep, *rest)
        else:
            fields = tuple(line.split(sep))
        segments.append(Segment(name=name, fields=fields))
    return Message(segments=tuple(segments), field_sep=sep, encoding=encoding)
