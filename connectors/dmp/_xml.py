"""Namespaces and the one hardened XML parser used for every inbound XML (both sides).

No DTD, no entity expansion, no network, no huge trees: a document carrying a DOCTYPE is refused
before parsing, so XXE and "billion laughs" never reach lxml's entity machinery.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

__all__ = ["MAX_DEPTH", "MAX_XML_BYTES", "NS", "UnsafeXml", "parse_xml", "q"]

MAX_XML_BYTES = 20 * 1024 * 1024
MAX_DEPTH = 64

NS = {
    "soap": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "xades": "http://uri.etsi.org/01903/v1.3.2#",
    "xop": "http://www.w3.org/2004/08/xop/include",
    "xdsb": "urn:ihe:iti:xds-b:2007",
    "lcm": "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0",
    "rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0",
    "rs": "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0",
    "query": "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0",
    "hl7": "urn:hl7-org:v3",
}


def q(prefix: str, local: str) -> str:
    """Clark notation ``{uri}local``."""
    return f"{{{NS[prefix]}}}{local}"


class UnsafeXml(ValueError):
    """Inbound XML refused: DOCTYPE/entities, too big, too deep or not well-formed."""


def _parser() -> Any:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        dtd_validation=False,
        load_dtd=False,
        huge_tree=False,
        remove_pis=True,
    )


def parse_xml(data: bytes, *, max_bytes: int = MAX_XML_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse untrusted XML bytes into an lxml element, or raise :class:`UnsafeXml`."""
    if len(data) > max_bytes:
        raise UnsafeXml(f"XML body of {len(data)} bytes exceeds {max_bytes}")
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise UnsafeXml("XML with a DOCTYPE or entity declaration is refused")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"malformed XML: {exc.msg}") from exc
    if root.getroottree().docinfo.doctype:
        raise UnsafeXml("XML with a DOCTYPE is refused")
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > max_depth:
            raise UnsafeXml(f"XML nesting deeper than {max_depth}")
        stack.extend((child, depth + 1) for child in element)
    return root
