"""Document type registry: document type code -> DocumentType."""

from __future__ import annotations

import threading

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


def public_codes() -> list[str]:
    """Document types clients may submit (internal ones, such as ``inbound-event``, excluded)."""
    return [c for c in codes() if not getattr(_REGISTRY.get(c), "internal", False)]


def codes() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


_loaded = False
_load_lock = threading.RLock()


def _load_builtins() -> None:
    """Import the shipped document types once (each module registers itself).

    Thread-safe: worker threads call this concurrently at start; none may see the registry
    before the imports are done (that rejected submissions with "unknown document type").
    The lock is re-entrant because an imported module may call back into the registry.
    """
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if _loaded:
            return
        import importlib

        for module in ("mappings.dlu", "mappings.ppa", "mappings.inbound_event"):
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:  # a document type not written yet
                if exc.name != module:
                    raise
        _loaded = True
