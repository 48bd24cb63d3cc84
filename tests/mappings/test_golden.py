"""Golden files: the CDA produced for each sample record, and exact handling of special characters.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/mappings/test_golden.py``
and review the diff.
"""

from __future__ import annotations

import os

import pytest
from lxml import etree

from mappings.dlu import render_dlu, render_fludt
from mappings.record import DluRecord
from tests.mappings.conftest import GOLDEN, SAMPLES, fixed_ctx, load_record

NS = {"h": "urn:hl7-org:v3"}


def _pretty(content: bytes) -> str:
    return etree.tostring(etree.fromstring(content), pretty_print=True, encoding="unicode")


def _check(path_name: str, content: bytes) -> None:
    path = GOLDEN / path_name
    actual = _pretty(content)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDEN=1"
    assert actual == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", SAMPLES)
def test_dlu_matches_golden(name: str) -> None:
    _check(f"{name}.dlu.xml", render_dlu(load_record(name), fixed_ctx()).content)


@pytest.mark.parametrize("name", [n for n in SAMPLES if load_record(n).transfer is not None])
def test_fludt_matches_golden(name: str) -> None:
    _check(f"{name}.fludt.xml", render_fludt(load_record(name), fixed_ctx()).content)


def _text_with_breaks(element: etree._Element) -> str:
    """Narrative text with <br/> read back as line breaks."""
    parts: list[str] = [element.text or ""]
    for child in element:
        if child.tag == f"{{{NS['h']}}}br":
            parts.append("\n")
        else:
            parts.append(_text_with_breaks(child))
        parts.append(child.tail or "")
    return "".join(parts)


def test_xml_special_characters_are_escaped_and_round_trip() -> None:
    record = load_record("xml_specials")
    content = render_dlu(record, fixed_ctx()).content
    # raw bytes: markup characters of the record never appear unescaped
    assert b"<Les Pins>" not in content and b"<la petite>" not in content
    assert 'EHPAD &lt;Les Pins&gt; &amp; "Les Chênes"'.encode() in content
    assert b"<b>" not in content
    tree = etree.fromstring(content)
    family = tree.find(".//h:patient/h:name/h:family", NS)
    assert family.text == "O'BRIEN & FILS"
    given_cl = tree.find(".//h:patient/h:name/h:given[@qualifier='CL']", NS)
    assert given_cl.text == '"Jo" <la petite>'
    assert tree.find("h:custodian//h:name", NS).text == 'EHPAD <Les Pins> & "Les Chênes"'
    (comment,) = tree.xpath(".//h:section[h:code/@code='55112-7']/h:text", namespaces=NS)
    expected = record.dlu.comment
    assert expected is not None
    assert _text_with_breaks(comment) == expected.replace("\r\n", "\n")
    problem = record.dlu.active_problems[0].label
    assert problem in [c.text for c in tree.iterfind(".//h:content", NS)]
    drug = tree.find(".//h:manufacturedMaterial/h:name", NS)
    assert drug.text == "Paracétamol 1 g <si douleur> & fièvre"


def test_accents_apostrophes_and_hyphens_survive() -> None:
    record = load_record("accented_names")
    tree = etree.fromstring(render_dlu(record, fixed_ctx()).content)
    name = tree.find(".//h:patient/h:name", NS)
    assert [c.text for c in name] == [
        "D'ORNANO-CASTELLÓ",
        "JEAN-BAPTISTE ÉLOI NOËL",
        "JEAN-BAPTISTE",
        "d'Ornano",
        "Jean-Baptiste",
    ]
    assert tree.find(".//h:patient/h:birthplace//h:county", NS).text == "2A004"
    author = tree.find("h:author//h:assignedPerson/h:name", NS)
    assert [c.text for c in author] == ["Maëlle", "Chaïb-Éléonore", "DR"]
    informant = tree.find("h:informant//h:relatedPerson/h:name/h:family", NS)
    assert informant.text == "O'Connor"
    assert tree.find("h:custodian//h:name", NS).text == "EHPAD « L'Oliveraie » d'Ajaccio"


def test_golden_records_are_the_samples() -> None:
    for name in SAMPLES:
        assert isinstance(load_record(name), DluRecord)
