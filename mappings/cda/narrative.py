"""Section narrative (``section/text``) builders: tables, paragraphs and referenced content.

Entries point to the narrative with ``text/reference/@value="#<ID>"``; :class:`Narrative`
hands out unique ``ID`` values (XML IDs must be unique in the document).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from mappings.cda.datatypes import add

__all__ = ["Cell", "Narrative", "Ref", "lines", "yes_no"]


@dataclass(frozen=True)
class Ref:
    """A table cell whose text an entry references: rendered as ``<content ID=...>``."""

    id: str
    text: str


Cell = str | Ref | None


def yes_no(value: bool | None) -> str:
    """French reading of a tri-state flag."""
    if value is None:
        return "non renseigné"
    return "oui" if value else "non"


def lines(parent: etree._Element, text: str) -> None:
    """Append free text to ``parent``, turning line breaks into ``<br/>``."""
    parts = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    last: etree._Element | None = None
    for index, part in enumerate(parts):
        if index:
            last = add(parent, "br")
        if last is None:
            parent.text = (parent.text or "") + part
        else:
            last.tail = (last.tail or "") + part


class Narrative:
    """Builds one section's ``text`` and allocates document-unique content IDs."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._count = 0

    def ref(self, text: str) -> Ref:
        """A referenced cell with a fresh ID."""
        self._count += 1
        return Ref(f"{self._prefix}-{self._count}", text)

    @staticmethod
    def table(text: etree._Element, headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> etree._Element:
        """Append a table; ``None`` cells stay empty."""
        table = add(text, "table", border="1")
        if headers:
            head_row = add(add(table, "thead"), "tr")
            for header in headers:
                add(head_row, "th", header)
        body = add(table, "tbody")
        for row in rows:
            tr = add(body, "tr")
            for cell in row:
                td = add(tr, "td")
                if isinstance(cell, Ref):
                    content = add(td, "content", ID=cell.id)
                    lines(content, cell.text)
                elif cell:
                    lines(td, cell)
        return table

    @staticmethod
    def paragraph(text: etree._Element, value: str, *, ref_id: str | None = None) -> etree._Element:
        """Append a paragraph (optionally a referenced ``content``)."""
        para = add(text, "paragraph")
        target = add(para, "content", ID=ref_id) if ref_id else para
        lines(target, value)
        return para
