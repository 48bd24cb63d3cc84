"""Value-set documents a kit schematron reads but the kit does not ship, built from the kit itself.

``profils/structurationMinimale`` checks ``ClinicalDocument/code`` against
``include/voc-1.2.250.1.213.1.1.5.471-DYNAMIC.xml`` (JDV_J07 XdsTypeCode, ART-DECOR format), which
the kit lacks; ``jeuxDeValeurs/JDV_J07_XdsTypeCode_CISIS.xml`` holds the same value set (same OID)
in IHE SVS format. The document is rebuilt from it in memory, never written into the kit.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

__all__ = ["supplied_documents"]

SVS = "{urn:ihe:iti:svs:2008}"

#: literal path in the schematron (relative to it) -> the kit's SVS file with the same value set
SUPPLIED = {
    "include/voc-1.2.250.1.213.1.1.5.471-DYNAMIC.xml": "jeuxDeValeurs/JDV_J07_XdsTypeCode_CISIS.xml",
}


def art_decor_voc(svs_file: Path) -> str:
    """The ART-DECOR ``valueSets/valueSet/conceptList/concept`` form of an IHE SVS value set."""
    svs = etree.parse(str(svs_file)).find(f".//{SVS}ValueSet")
    if svs is None:
        raise ValueError(f"{svs_file} holds no SVS ValueSet")
    root = etree.Element("valueSets")  # the schematron reads /*/valueSet/... in no namespace
    value_set = etree.SubElement(root, "valueSet", id=svs.get("id", ""), name=svs.get("displayName", ""))
    concepts = etree.SubElement(value_set, "conceptList")
    for concept in svs.iter(f"{SVS}Concept"):
        etree.SubElement(
            concepts,
            "concept",
            code=concept.get("code", ""),
            codeSystem=concept.get("codeSystem", ""),
            displayName=concept.get("displayName", ""),
        )
    return str(etree.tostring(root, encoding="unicode"))


def supplied_documents(sch: Path, kit_root: Path) -> dict[str, str]:
    """literal path -> XML text, for the documents ``sch`` reads that are missing next to it."""
    out: dict[str, str] = {}
    for literal, source in SUPPLIED.items():
        if (sch.parent / literal).is_file() or not (kit_root / source).is_file():
            continue
        if literal in sch.read_text(encoding="utf-8", errors="replace") or _in_includes(sch, literal):
            out[literal] = art_decor_voc(kit_root / source)
    return out


def _in_includes(sch: Path, literal: str) -> bool:
    include = sch.parent / "include"
    return include.is_dir() and any(
        literal in p.read_text(encoding="utf-8", errors="replace") for p in include.glob("*.sch")
    )
