"""CI-SIS CDA conformance: XSD + ISO Schematron compiled by our own compiler, run with saxonche.

from ci_sis import load_validator
report = load_validator().validate(xml_bytes, "DLU-EHPAD-DLU_2022.01")
report.ok, report.findings, report.to_dict()

Content problems are findings; ``ValidationRunError`` (engine or kit failure) means no verdict.
"""

from ._engine import ValidationRunError
from ._kit import KitNotFound, UnknownVolet
from ._report import Finding, Report
from ._schematron import SchematronError
from .validator import CompiledSchematron, Validator, compile_schematron, load_validator

__all__ = [
    "CompiledSchematron",
    "Finding",
    "KitNotFound",
    "Report",
    "SchematronError",
    "UnknownVolet",
    "ValidationRunError",
    "Validator",
    "compile_schematron",
    "load_validator",
]
