"""Typed validation results: one :class:`Report` holding :class:`Finding` items."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Stage = Literal["xsd", "schematron"]
Severity = Literal["error", "warning", "info"]

_WARNING_ROLES = frozenset({"warning", "warn"})
_INFO_ROLES = frozenset({"info", "information", "informational", "note"})


def severity_of(role: str | None, flag: str | None = None) -> Severity:
    """Map a Schematron ``@role`` (or ``@flag``) to a severity; anything else is an error.

    The CI-SIS kit sets ``role="error"`` or ``role="warning"``; an assert without a role is an error,
    as in the ANS pipeline where every failed assert counts."""
    for value in (role, flag):
        if value:
            lowered = value.strip().lower()
            if lowered in _WARNING_ROLES:
                return "warning"
            if lowered in _INFO_ROLES:
                return "info"
    return "error"


@dataclass(frozen=True)
class Finding:
    """One problem: an XSD error, a failed ``assert`` or a fired ``report``."""

    stage: Stage
    message: str
    severity: Severity = "error"
    schema: str = ""  # schema file, relative to the kit (e.g. "schematrons/profils/IHE.sch")
    pattern: str = ""  # pattern id
    rule_context: str = ""
    kind: Literal["assert", "report", "xsd"] = "xsd"
    assert_id: str = ""  # @id of the assert/report when the schematron sets one
    test: str = ""
    location: str = ""  # XPath of the node, '/ClinicalDocument/component/...' (ANS notation)
    line: int | None = None  # XSD errors only
    diagnostics: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["diagnostics"] = list(self.diagnostics)
        return data


@dataclass(frozen=True)
class Report:
    """The verdict for one document against one volet."""

    volet: str
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    schemas: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when there is no error-level finding (warnings do not fail a document)."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "volet": self.volet,
            "ok": self.ok,
            "schemas": list(self.schemas),
            "error_count": len(self.errors),
            "findings": [f.to_dict() for f in self.findings],
        }
