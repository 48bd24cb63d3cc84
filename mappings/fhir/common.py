"""Small pure helpers shared by the FHIR R4 builders: ids, codings, narrative, datatypes."""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from mappings.base import Code
from mappings.record import Address, CodedConcept, Telecom

__all__ = [
    "Ids",
    "Json",
    "address",
    "code",
    "codeable",
    "coding",
    "fhir_date",
    "fhir_datetime",
    "narrative",
    "system_uri",
    "telecoms",
]

Json = dict[str, Any]

#: OIDs of code systems that have a canonical FHIR URI (others are sent as urn:oid:)
_SYSTEM_URIS = {
    "2.16.840.1.113883.6.1": "http://loinc.org",
    "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "2.16.840.1.113883.6.3": "http://hl7.org/fhir/sid/icd-10",
    "2.16.840.1.113883.6.73": "http://www.whocc.no/atc",
    "2.16.840.1.113883.5.111": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
    "2.16.840.1.113883.5.25": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
    "2.16.840.1.113883.6.8": "http://unitsofmeasure.org",
    "1.2.250.1.213.1.1.4.322": "https://smt.esante.gouv.fr/fhir/CodeSystem/terminologie-cisis",
}


def system_uri(oid: str) -> str:
    """The FHIR system URI for a code system OID (``urn:oid:`` when it has no canonical URI)."""
    return _SYSTEM_URIS.get(oid, f"urn:oid:{oid}")


def coding(system: str, code_value: str, display: str = "") -> Json:
    """A Coding; ``system`` is a URI, or an OID turned into one."""
    uri = system if ":" in system else system_uri(system)
    out: Json = {"system": uri, "code": code_value}
    if display:
        out["display"] = display
    return out


def code(value: Code | CodedConcept) -> Json:
    """A Coding from a value-set concept or a record's coded concept."""
    return coding(value.system, value.code, value.display)


def codeable(text: str | None = None, *codings: Json) -> Json:
    """A CodeableConcept with optional codings and text."""
    out: Json = {}
    if codings:
        out["coding"] = list(codings)
    if text:
        out["text"] = text
    return out


class Ids:
    """Deterministic ids: ``uuid5(submission_id, "<scope>/<key>")``, as ``urn:uuid:`` fullUrls."""

    def __init__(self, seed: uuid.UUID, scope: str) -> None:
        self.seed = seed
        self.scope = scope

    def uuid(self, key: str) -> str:
        return str(uuid.uuid5(self.seed, f"{self.scope}/{key}"))

    def url(self, key: str) -> str:
        return f"urn:uuid:{self.uuid(key)}"


def fhir_date(value: date) -> str:
    return value.isoformat() if not isinstance(value, datetime) else value.date().isoformat()


def fhir_datetime(value: datetime | date) -> str:
    """An R4 dateTime/instant; aware datetimes keep their offset, dates stay dates."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("FHIR instants need a UTC offset")
        return value.isoformat()
    return value.isoformat()


def address(value: Address | None) -> list[Json]:
    if value is None:
        return []
    out: Json = {}
    if value.lines:
        out["line"] = list(value.lines)
    if value.city:
        out["city"] = value.city
    if value.postal_code:
        out["postalCode"] = value.postal_code
    out["country"] = value.country or "FRA"
    text = ", ".join([*value.lines, " ".join(p for p in (value.postal_code, value.city) if p)])
    if text.strip(", "):
        out["text"] = text.strip(", ")
    return [out]


_TELECOM_USE = {"home": "home", "work": "work", "mobile": "mobile"}  # R4 has no "emergency" use


def telecoms(items: Iterable[Telecom]) -> list[Json]:
    out: list[Json] = []
    for item in items:
        point: Json = {"system": item.system, "value": item.value}
        if item.use in _TELECOM_USE:
            point["use"] = _TELECOM_USE[item.use]
        out.append(point)
    return out


def narrative(title: str, lines: Iterable[str]) -> Json:
    """A generated XHTML narrative: a title and a list (escaped)."""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    body = f"<p>{html.escape(title)}</p>" + (f"<ul>{items}</ul>" if items else "")
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}
