"""Document type registry: document type code -> DocumentType."""

from __future__ import annotations

from mappings.base import DocumentType

_REGISTRY: dict[str, DocumentType] = {}


def register(doc_type: DocumentType) -> DocumentType:
    """Register (or replace) a document type under its code."""
    _REGISTRY[doc_type.code] = doc_type
    return doc_type


def unregister(code: str) -> None:
    _REGISTRY.pop(code, None)


def get(code: str) -> DocumentType | None:
    _load_builtins()
    return _REGISTRY.get(code)


def codes() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


_loaded = False


def _load_builtins() -> None:
    """Import the shipped document types once (each module registers itself)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for module in ("mappings.dlu", "mappings.ppa"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a document type not written yet
            if exc.name != module:
                raise
