"""profiles/data/serafin.json is a faithful extract of the kit's SERAFIN-PH JDV files."""

from __future__ import annotations

import json
from pathlib import Path

from lxml import etree

import profiles

SVS = "{urn:ihe:iti:svs:2008}"
FILES = {
    "J283": "JDV_J283_PrestationsIndirects_SERAFIN.xml",
    "J284": "JDV_J284_PrestationsDirects_SERAFIN.xml",
    "J285": "JDV_J285_Besoins_SERAFIN.xml",
}


def test_serafin_extract_matches_the_kit(kit_dir: Path) -> None:
    data = json.loads((Path(profiles.__file__).parent / "data" / "serafin.json").read_text(encoding="utf-8"))
    assert set(data) == set(FILES)
    for name, filename in FILES.items():
        tree = etree.parse(str(kit_dir / "jeuxDeValeurs" / filename))
        valueset = tree.find(f".//{SVS}ValueSet")
        assert valueset is not None
        concepts = [[c.get("code"), c.get("codeSystem"), c.get("displayName")] for c in tree.iter(f"{SVS}Concept")]
        assert data[name]["oid"] == valueset.get("id")
        assert data[name]["concepts"] == concepts


def test_prestations_and_besoins_are_disjoint() -> None:
    from profiles.definitions.valuesets import SERAFIN_BESOINS, SERAFIN_PRESTATIONS

    assert "2.3.1.1" in SERAFIN_PRESTATIONS.codes and "3.2.4" in SERAFIN_PRESTATIONS.codes
    assert "1.2.1.3" in SERAFIN_BESOINS.codes
    assert not SERAFIN_PRESTATIONS.codes & SERAFIN_BESOINS.codes
