"""CDA R2 data types and element helpers (lxml), shared by every CDA document type.

Everything here is pure: it only builds elements from values passed in.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date, datetime

from lxml import etree

from mappings.base import Code

__all__ = [
    "NS",
    "XSI",
    "CdaNamespace",
    "Ids",
    "add",
    "addr",
    "cd",
    "ii",
    "name",
    "new_document",
    "stable_uuid",
    "telecom",
    "ts",
    "ts_value",
]

NS = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
_NSMAP = {None: NS, "xsi": XSI}

LOINC = "2.16.840.1.113883.6.1"
SNOMED = "2.16.840.1.113883.6.96"
CIM10 = "2.16.840.1.113883.6.3"
TA_ASIP = "1.2.250.1.213.1.1.4.322"


class CdaNamespace:
    """Qualified names in the HL7 v3 namespace."""

    @staticmethod
    def q(tag: str) -> str:
        return f"{{{NS}}}{tag}"


def new_document() -> etree._Element:
    """A ``ClinicalDocument`` root element with the HL7 v3 and xsi namespaces declared."""
    return etree.Element(CdaNamespace.q("ClinicalDocument"), nsmap=_NSMAP)


def add(parent: etree._Element, tag: str, text: str | None = None, /, **attrs: str | None) -> etree._Element:
    """Append ``<tag attrs>text</tag>`` to ``parent``; ``None`` attributes are skipped.

    ``xsi_type`` sets ``xsi:type``. Text is escaped by lxml, so any XML-safe string round-trips.
    """
    element = etree.SubElement(parent, CdaNamespace.q(tag))
    for key, value in attrs.items():
        if value is None:
            continue
        if key == "xsi_type":
            element.set(f"{{{XSI}}}type", value)
        elif key == "ID":
            element.set("ID", value)
        else:
            element.set(key, value)
    if text is not None:
        element.text = text
    return element


def ts_value(value: datetime | date) -> str:
    """HL7 TS: ``YYYYMMDD`` for a date, ``YYYYMMDDHHMMSS+ZZZZ`` for an aware datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("CDA timestamps need a UTC offset")
        return value.strftime("%Y%m%d%H%M%S%z")
    return value.strftime("%Y%m%d")


def ts(parent: etree._Element, tag: str, value: datetime | date | None, null_flavor: str = "UNK") -> etree._Element:
    """A TS element, or one with ``nullFlavor`` when ``value`` is None."""
    if value is None:
        return add(parent, tag, nullFlavor=null_flavor)
    return add(parent, tag, value=ts_value(value))


def ii(parent: etree._Element, root: str, extension: str | None = None, tag: str = "id") -> etree._Element:
    """An instance identifier."""
    return add(parent, tag, root=root, extension=extension)


def cd(
    parent: etree._Element,
    tag: str,
    code: Code,
    *,
    system_name: str | None = None,
    xsi_type: str | None = None,
    original_ref: str | None = None,
) -> etree._Element:
    """A coded element (CD/CE/CV); ``original_ref`` adds ``originalText/reference`` to the narrative."""
    element = add(
        parent,
        tag,
        xsi_type=xsi_type,
        code=code.code,
        displayName=code.display or None,
        codeSystem=code.system,
        codeSystemName=system_name,
    )
    if original_ref is not None:
        original = add(element, "originalText")
        add(original, "reference", value=f"#{original_ref}")
    return element


_TELECOM_SCHEME = {"phone": "tel:", "fax": "fax:", "email": "mailto:", "url": ""}
_TELECOM_USE = {"home": "H", "work": "WP", "mobile": "MC", "emergency": "EC"}


def telecom(parent: etree._Element, system: str, value: str, use: str | None = None) -> etree._Element:
    """A TEL element from a (system, value, use) contact point."""
    compact = value.replace(" ", "").replace(".", "") if system in ("phone", "fax") else value
    return add(
        parent,
        "telecom",
        value=f"{_TELECOM_SCHEME[system]}{compact}",
        use=_TELECOM_USE.get(use) if use else None,
    )


def addr(
    parent: etree._Element,
    lines: Iterable[str] = (),
    postal_code: str | None = None,
    city: str | None = None,
    country: str | None = None,
    *,
    use: str | None = None,
) -> etree._Element:
    """An AD element; an empty address gets ``nullFlavor="NASK"``."""
    lines = list(lines)
    if not (lines or postal_code or city or country):
        return add(parent, "addr", nullFlavor="NASK")
    element = add(parent, "addr", use=use)
    for line in lines:
        add(element, "streetAddressLine", line)
    if postal_code:
        add(element, "postalCode", postal_code)
    if city:
        add(element, "city", city)
    if country:
        add(element, "country", country)
    return element


def name(
    parent: etree._Element,
    family: str,
    given: str | None = None,
    *,
    prefix: str | None = None,
    suffix: str | None = None,
) -> etree._Element:
    """A simple PN element (prefix, given, family, suffix)."""
    element = add(parent, "name")
    if prefix:
        add(element, "prefix", prefix)
    if given:
        add(element, "given", given)
    add(element, "family", family)
    if suffix:
        add(element, "suffix", suffix)
    return element


def stable_uuid(seed: uuid.UUID, *path: object) -> str:
    """A deterministic UUID (upper case, as in the CI-SIS examples) for an element of a document."""
    return str(uuid.uuid5(seed, "/".join(str(part) for part in path))).upper()


class Ids:
    """Deterministic ids for the entries of one document: UUIDs derived from a seed and a counter."""

    def __init__(self, seed: uuid.UUID, scope: str) -> None:
        self._seed = seed
        self._scope = scope
        self._count = 0

    def next(self) -> str:
        self._count += 1
        return stable_uuid(self._seed, self._scope, self._count)
