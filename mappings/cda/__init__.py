"""Shared CDA R2 builders: data types, header, narrative, sections and entries (lxml, pure)."""

from mappings.cda import datatypes, entries, header, narrative, sections

__all__ = ["datatypes", "entries", "header", "narrative", "sections"]
