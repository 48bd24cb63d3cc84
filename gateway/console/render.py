"""Documents made readable: CDA through ``cda2html.xsl`` (text only, no markup of the document
reaches the page), FHIR JSON as nested tables (the narrative ``div`` is shown as text, never as
HTML: it comes from outside)."""

from __future__ import annotations

import json
from functools import lru_cache
from html import escape
from importlib import resources
from typing import Any

from lxml import etree
from markupsafe import Markup

__all__ = ["render_document"]


@lru_cache(maxsize=1)
def _cda_transform() -> etree.XSLT:
    text = resources.files("gateway.console").joinpath("cda2html.xsl").read_bytes()
    return etree.XSLT(etree.fromstring(text))


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)


def render_cda(content: bytes) -> Markup:
    doc = etree.fromstring(content, parser=_parser())
    result = _cda_transform()(etree.ElementTree(doc))
    return Markup(str(result))  # noqa: S704 - the style sheet copies text only (escaped by libxslt)


def _fhir_value(value: Any, depth: int = 0) -> str:
    if depth > 12:
        return "…"
    if isinstance(value, dict):
        rows = "".join(
            f'<tr><th scope="row">{escape(str(k))}</th><td>{_fhir_value(v, depth + 1)}</td></tr>'
            for k, v in value.items()
            if k != "div"
        )
        if "div" in value:  # narrative XHTML: shown as its text
            rows += f'<tr><th scope="row">div</th><td><pre>{escape(str(value["div"]))}</pre></td></tr>'
        return f'<table class="fhir">{rows}</table>'
    if isinstance(value, list):
        return "<ol>" + "".join(f"<li>{_fhir_value(v, depth + 1)}</li>" for v in value) + "</ol>"
    return escape(str(value))


def render_fhir(content: bytes) -> Markup:
    doc = json.loads(content)
    title = escape(str(doc.get("resourceType", "Ressource"))) if isinstance(doc, dict) else "Ressource"
    return Markup(f'<div class="fhir-doc"><h3>{title}</h3>{_fhir_value(doc)}</div>')  # noqa: S704 - escaped above


def render_document(content: bytes, media_type: str) -> Markup:
    """HTML for the console's document page; a document that cannot be read says so."""
    try:
        if "json" in media_type:
            return render_fhir(content)
        if "xml" in media_type:
            root = etree.fromstring(content, parser=_parser())
            if etree.QName(root).localname == "ClinicalDocument":
                return render_cda(content)
            return Markup("<pre>{}</pre>").format(content.decode("utf-8", "replace"))
    except (etree.XMLSyntaxError, ValueError, etree.XSLTApplyError):
        return Markup("<p>Le document n'a pas pu être mis en forme.</p>")
    return Markup("<p>Type de document non affichable ({}).</p>").format(media_type)
