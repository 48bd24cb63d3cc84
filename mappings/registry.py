"""Document type registry: document type code -> DocumentType.

Document types are declared like connectors, in the ``dui_gateway.document_types`` entry-point
group of an installed distribution (name: the document type code; value: ``module:OBJECT``, a
:class:`~mappings.base.DocumentType` instance or a class to instantiate without arguments)::

    [project.entry-points."dui_gateway.document_types"]
    dlu = "mappings.dlu:DLU"

They are imported on the first lookup, once per process, under a lock: worker threads that start
together never see a half-filled registry. A document type that fails to import, or whose code is
not its entry-point name, raises :class:`DocumentTypeLoadError` (the gateway then refuses to start).
:func:`register` and :func:`unregister` add or remove one at run time (tests); an explicit
registration wins over an entry point with the same code. Reinstall after adding an entry point.
"""

from __future__ import annotations

import threading
from importlib.metadata import entry_points

from mappings.base import DocumentType

__all__ = ["ENTRY_POINT_GROUP", "DocumentTypeLoadError", "codes", "get", "register", "unregister"]

ENTRY_POINT_GROUP = "dui_gateway.document_types"

#: what every document type declares (see the DocumentType protocol)
_REQUIRED = ("code", "record_model", "type_code", "class_code", "facts", "render")


class DocumentTypeLoadError(Exception):
    """An installed document type entry point cannot be loaded or does not describe itself."""


_REGISTRY: dict[str, DocumentType] = {}
_lock = threading.RLock()  # re-entrant: an imported module may call back into the registry
_loaded = False


def register(doc_type: DocumentType) -> DocumentType:
    """Register (or replace) a document type under its code."""
    with _lock:
        _REGISTRY[doc_type.code] = doc_type
    return doc_type


def unregister(code: str) -> None:
    with _lock:
        _REGISTRY.pop(code, None)


def get(code: str) -> DocumentType | None:
    _load_entry_points()
    return _REGISTRY.get(code)


def public_codes() -> list[str]:
    """Document types clients may submit (internal ones, such as ``inbound-event``, excluded)."""
    return [c for c in codes() if not getattr(_REGISTRY.get(c), "internal", False)]


def codes() -> list[str]:
    _load_entry_points()
    with _lock:
        return sorted(_REGISTRY)


def _load_entry_points() -> None:
    """Import every installed document type once (double-checked under the lock)."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        found: dict[str, DocumentType] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = ep.load()
                doc_type = loaded() if isinstance(loaded, type) else loaded
            except Exception as exc:
                raise DocumentTypeLoadError(
                    f"document type {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
                ) from exc
            missing = [name for name in _REQUIRED if not hasattr(doc_type, name)]
            if missing:
                raise DocumentTypeLoadError(f"document type {ep.name!r} ({ep.value}) lacks {', '.join(missing)}")
            if doc_type.code != ep.name:
                raise DocumentTypeLoadError(
                    f"entry point {ep.name!r} ({ep.value}) names a document type whose code is {doc_type.code!r}"
                )
            found[ep.name] = doc_type
        for code, doc_type in found.items():
            _REGISTRY.setdefault(code, doc_type)
        _loaded = True
