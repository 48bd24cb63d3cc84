"""Validation findings and their FHIR ``OperationOutcome`` rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["fatal", "error", "warning", "information"]

#: FHIR R4 IssueType codes used by the validator (http://hl7.org/fhir/issue-type).
IssueCode = Literal[
    "invalid",
    "structure",
    "required",
    "value",
    "invariant",
    "code-invalid",
    "not-found",
    "not-supported",
    "processing",
    "informational",
]


class ValidationRunError(Exception):
    """A check could not run (an engine failure, not a property of the resource): there is no verdict.

    The caller holds the resource and tries again later; it must not reject it. Problems of the
    resource itself are :class:`Issue` items of the :class:`Report`."""


@dataclass(frozen=True)
class Issue:
    """One finding: where (a FHIRPath-like ``expression``), what (``code``) and under which profile."""

    severity: Severity
    code: IssueCode
    expression: str
    message: str
    profile: str = ""
    rule: str = ""  # the constraint key (e.g. "fr-core-1", "card", "fixed", "binding")

    @property
    def path(self) -> str:
        return self.expression

    def to_fhir(self) -> dict[str, Any]:
        diagnostics = self.message if not self.profile else f"{self.message} (profile {self.profile})"
        out: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": diagnostics}
        if self.expression:
            out["expression"] = [self.expression]
        if self.rule:
            out["details"] = {"text": self.rule}
        return out


@dataclass
class Report:
    """The outcome of validating one resource (or Bundle): ``ok`` when nothing is ``error``/``fatal``."""

    issues: list[Issue] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)  # the profiles actually checked

    @property
    def ok(self) -> bool:
        return not any(i.severity in ("error", "fatal") for i in self.issues)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity in ("error", "fatal")]

    def add(self, issue: Issue) -> None:
        if issue not in self.issues:
            self.issues.append(issue)

    def extend(self, other: Report) -> None:
        for issue in other.issues:
            self.add(issue)
        for profile in other.profiles:
            if profile not in self.profiles:
                self.profiles.append(profile)

    def to_operation_outcome(self) -> dict[str, Any]:
        """FHIR R4 ``OperationOutcome`` JSON; an ``information`` issue when everything passed."""
        issues = [i.to_fhir() for i in self.issues]
        if not issues:
            checked = ", ".join(self.profiles) if self.profiles else "base FHIR R4"
            issues = [{"severity": "information", "code": "informational", "diagnostics": f"Valid ({checked})"}]
        return {"resourceType": "OperationOutcome", "issue": issues}

    def summary(self) -> str:
        counts = {s: sum(1 for i in self.issues if i.severity == s) for s in ("fatal", "error", "warning")}
        verdict = "valid" if self.ok else "invalid"
        return f"{verdict}: {counts['fatal'] + counts['error']} error(s), {counts['warning']} warning(s)"
