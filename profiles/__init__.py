"""FHIR conformance for what the gateway emits and accepts (FR Core, TDDUI, PDSm/MHD).

``validate(resource, profile=None) -> Report`` checks base FHIR R4 structure (fhir.resources
R4B models plus the R4 differences), base R4 invariants and the declarative constraints of
the profiles the gateway knows; ``check_rendition(content, tag)`` is the conformance gate for a
FHIR rendition. ``Report.to_operation_outcome()`` renders findings as a FHIR OperationOutcome.
A check that cannot run raises ``ValidationRunError`` (no verdict) instead of reporting an issue.
"""

from profiles._report import Issue, Report, ValidationRunError
from profiles._validator import RENDITION_TAGS, check_rendition, validate
from profiles.definitions import PROFILES as KNOWN_PROFILES

__all__ = [
    "KNOWN_PROFILES",
    "RENDITION_TAGS",
    "Issue",
    "Report",
    "ValidationRunError",
    "check_rendition",
    "validate",
]
