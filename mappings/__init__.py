"""DUI record model and pure mappings to CDA R2 / FHIR R4 renditions."""

from mappings.base import (
    Code,
    DocumentType,
    ExchangeMetadata,
    MappingFailed,
    PreviousVersion,
    RecordFacts,
    RenderContext,
    Rendition,
)
from mappings.registry import codes, get, register, unregister

__all__ = [
    "Code",
    "DocumentType",
    "ExchangeMetadata",
    "MappingFailed",
    "PreviousVersion",
    "RecordFacts",
    "RenderContext",
    "Rendition",
    "codes",
    "get",
    "register",
    "unregister",
]
