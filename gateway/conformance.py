"""The conformance gate: every rendition's declared checks (CI-SIS for CDA, FHIR profiles) run
before anything is routed; a document that fails is rejected with a report, one whose checks
cannot run here is held (never sent unchecked).

Reports quote the offending values (an XSD pattern error quotes a birth date): they are
redacted before being stored (:func:`redact_report`).
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any, Literal

from lxml import etree

import ci_sis
import profiles
from gateway.settings import Settings
from mappings.base import Rendition

__all__ = ["REDACTED", "GateUnavailable", "check_rendition", "gate_problems", "redact_report"]


class GateUnavailable(Exception):
    """A conformance tag cannot be checked here (validator missing, kit absent, unknown tag)."""


_validators: dict[str, ci_sis.Validator] = {}
_validators_lock = threading.Lock()


def _cisis_validator(settings: Settings) -> ci_sis.Validator:
    kit = settings.cisis_kit_dir
    if kit is None or not Path(kit).is_dir():
        raise GateUnavailable("CI-SIS kit not configured (CISIS_KIT_DIR) or missing")
    key = str(Path(kit).resolve())
    with _validators_lock:
        if key not in _validators:
            try:
                _validators[key] = ci_sis.load_validator(Path(kit))
            except ci_sis.KitNotFound as exc:
                raise GateUnavailable(f"CI-SIS kit unusable: {exc}") from exc
        return _validators[key]


def _optional_mode(settings: Settings, *, own: bool) -> Literal["off", "warning", "error"]:
    if not settings.cisis_optional_profiles:
        return "off"
    return "error" if own else "warning"


def check_rendition(rendition: Rendition, *, settings: Settings, own: bool = True) -> list[dict[str, Any]]:
    """Run every conformance check a rendition declares; one result dict per tag.

    With ``settings.cisis_optional_profiles``, a CDA is also checked against the profiles the ANS
    pipeline leaves optional (``structurationMinimale``, ``terminologies``: every coded element
    against the value set its volet binds): their findings are errors for the gateway's own
    documents (``own``, the default: it never emits a code outside its value set) and warnings for
    documents from elsewhere. Raises :class:`GateUnavailable` when a tag cannot be checked here.
    """
    optional = _optional_mode(settings, own=own)
    results: list[dict[str, Any]] = []
    for tag in rendition.conformance:
        scheme, _, arg = tag.partition(":")
        if scheme == "cisis" and arg:
            validator = _cisis_validator(settings)
            try:
                report = validator.validate(rendition.content, arg, optional=optional)
            except GateUnavailable:
                raise
            except Exception as exc:
                # the type only: a validator's message may quote the document
                raise GateUnavailable(f"CI-SIS check {tag!r} could not run: {type(exc).__name__}") from exc
            results.append({"tag": tag, "ok": bool(report.ok), "report": report.to_dict()})
        elif scheme == "fhir":
            if tag not in profiles.RENDITION_TAGS:
                raise GateUnavailable(f"profiles has no check for conformance tag {tag!r}")
            try:
                fhir_report = profiles.check_rendition(rendition.content, tag)
            except Exception as exc:
                raise GateUnavailable(f"FHIR check {tag!r} could not run: {type(exc).__name__}") from exc
            results.append({"tag": tag, "ok": bool(fhir_report.ok), "report": fhir_report.to_operation_outcome()})
        else:
            raise GateUnavailable(f"no checker for conformance tag {tag!r}")
    return results


# -- reports without the document's values ------------------------------------------------------
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
REDACTED = "[redacted]"


def _document_values(content: bytes, media_type: str) -> set[str]:
    """Every text and attribute value of a rendition (XML) or string leaf (JSON)."""
    values: set[str] = set()
    if "json" in media_type:
        try:
            stack: list[Any] = [json.loads(content)]
        except ValueError:
            return values
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, str | int | float) and not isinstance(item, bool):
                values.add(str(item).strip())
        return values
    try:
        root = etree.fromstring(content, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return values
    for element in root.iter():
        values.update(v.strip() for v in element.attrib.values())
        for text in (element.text, element.tail):
            if text and text.strip():
                values.add(text.strip())
    return values


def redact_report(report: Any, content: bytes, media_type: str) -> Any:
    """The report with every quoted value that comes from the document masked.

    Validator messages quote the offending value (an XSD pattern error quotes the birth date,
    a length error the name): rejection reports are stored in clear and returned by the API.
    """
    values = {v for v in _document_values(content, media_type) if v}

    def mask(match: re.Match[str]) -> str:
        inner = match.group(1) if match.group(1) is not None else match.group(2)
        if inner.strip() in values:
            quote = match.group(0)[0]
            return f"{quote}{REDACTED}{quote}"
        return match.group(0)

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return _QUOTED.sub(mask, item) if values else item
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [walk(v) for v in item]
        return item

    return walk(report)


def gate_problems(settings: Settings, tags: list[str] | None = None) -> list[str]:
    """What prevents the gate from checking ``tags`` (default: both families); empty when ready."""
    wanted = tags if tags is not None else ["cisis:*", "fhir:*"]
    problems: list[str] = []
    if any(t.startswith("cisis:") for t in wanted):
        try:
            _cisis_validator(settings)
        except GateUnavailable as exc:
            problems.append(str(exc))
    return problems
