"""The profiles the ANS pipeline leaves optional (``profils/structurationMinimale``,
``profils/terminologies``): run on request, as warnings for documents from elsewhere and errors for
the gateway's own; the JDV_J07 value set the kit lacks is supplied from its ``jeuxDeValeurs``."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from ci_sis import Validator
from ci_sis._supplied import SUPPLIED, art_decor_voc

GOLDEN = Path(__file__).resolve().parents[1] / "resources" / "golden"
DLU = "DLU-EHPAD-DLU_2022.01"
FLUDT = "DLU-EHPAD-FLUDT_2022.01"
OPTIONAL = ("structurationMinimale", "terminologies")


def _optional(findings: object) -> list:  # type: ignore[type-arg]
    return [f for f in findings if any(name in f.schema for name in OPTIONAL)]  # type: ignore[attr-defined]


def test_the_missing_j07_document_is_built_from_the_kit(kit_dir: Path) -> None:
    ((literal, source),) = SUPPLIED.items()
    assert not (kit_dir / "schematrons/profils/structurationMinimale" / literal).exists()
    voc = etree.fromstring(art_decor_voc(kit_dir / source).encode())
    svs = etree.parse(str(kit_dir / source))
    svs_codes = [c.get("code") for c in svs.iter("{urn:ihe:iti:svs:2008}Concept")]
    assert voc.find("valueSet").get("id") == "1.2.250.1.213.1.1.5.471"
    assert [c.get("code") for c in voc.iter("concept")] == svs_codes
    assert len(svs_codes) > 100


@pytest.mark.parametrize(
    ("name", "volet"), [("DLU-EHPAD-DLU_2022.01.xml", DLU), ("DLU-EHPAD-FLUDT_2022.01.xml", FLUDT)]
)
def test_ans_examples_pass_the_optional_profiles(validator: Validator, examples: Path, name: str, volet: str) -> None:
    xml = (examples / name).read_bytes()
    report = validator.validate(xml, volet, optional="error")
    assert report.ok, [(f.location, f.message) for f in report.errors]
    assert any("structurationMinimale" in s for s in report.schemas)
    assert any("terminologies" in s for s in report.schemas)
    # off (the default) is the ANS pipeline's verdict, unchanged
    assert validator.validate(xml, volet).findings == validator.validate(xml, volet, optional="off").findings


def test_optional_findings_are_warnings_by_default_and_errors_on_request(validator: Validator, examples: Path) -> None:
    xml = (examples / "DLU-EHPAD-DLU_2022.01.xml").read_bytes()
    tree = etree.fromstring(xml)
    tree.find("{urn:hl7-org:v3}code").set("code", "NOT-A-J07-CODE")
    broken = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
    as_warning = _optional(validator.validate(broken, DLU, optional="warning").findings)
    assert any("1.2.250.1.213.1.1.5.471" in f.message and f.severity == "warning" for f in as_warning)
    as_error = validator.validate(broken, DLU, optional="error")
    assert any("1.2.250.1.213.1.1.5.471" in f.message for f in as_error.errors)


#: findings of the optional profiles on the gateway's own CDA (golden files): none. The three the
#: mapping had (participant id without root/extension when there is no médecin traitant; dose unit
#: "1", absent from the kit's UCUM list) are fixed in mappings/cda; any new one fails here
KNOWN_GATEWAY_FINDINGS: set[tuple[str, str]] = set()


def test_gateway_documents_against_the_optional_profiles(validator: Validator) -> None:
    found: set[tuple[str, str]] = set()
    for path in sorted(GOLDEN.glob("*.xml")):
        volet = FLUDT if path.name.endswith(".fludt.xml") else DLU
        report = validator.validate(path.read_bytes(), volet, optional="error")
        found |= {(f.schema.rsplit("/", 1)[-1], f.message) for f in _optional(report.errors)}
    assert found == KNOWN_GATEWAY_FINDINGS
