"""The value sets shipped in mappings/data/valuesets.json are a faithful extract of the kit."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from lxml import etree

from mappings import valuesets

SVS = {"s": "urn:ihe:iti:svs:2008"}


def _extract(kit_dir: Path, names: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in names:
        value_set = etree.parse(str(kit_dir / "jeuxDeValeurs" / f"{name}.xml")).find(".//s:ValueSet", SVS)
        assert value_set is not None
        out[name] = {
            "oid": value_set.get("id"),
            "concepts": [
                [c.get("code"), c.get("codeSystem"), c.get("displayName")]
                for c in value_set.iterfind(".//s:Concept", SVS)
            ],
        }
    return out


def test_package_data_matches_the_kit(kit_dir: Path) -> None:
    path = resources.files("mappings").joinpath("data/valuesets.json")
    shipped = json.loads(path.read_text(encoding="utf-8"))
    fresh = _extract(kit_dir, list(shipped))
    if os.environ.get("UPDATE_GOLDEN") == "1":
        Path(str(path)).write_text(json.dumps(fresh, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        shipped = fresh
    assert shipped == fresh


def test_value_sets_used_by_the_dlu_are_there() -> None:
    assert valuesets.OBSERVATION_ETAT_PATIENT.oid == "1.2.250.1.213.1.1.5.514"
    assert len(valuesets.OBSERVATION_ETAT_PATIENT.codes()) == 15
    # the four DLU sub-blocks partition the observed-state value set
    parts = [valuesets.ETAT_PSYCHIQUE, valuesets.HANDICAP_DEFICIT, valuesets.DEPLACEMENT, valuesets.AUTRE_RISQUE]
    union = [code for part in parts for code in part.codes()]
    assert sorted(union) == sorted(valuesets.OBSERVATION_ETAT_PATIENT.codes())
    assert valuesets.CHECKLIST_DLU.get("DLU_006").system == "1.2.250.1.213.1.1.4.322"
    assert "SA17" in valuesets.FACILITY_TYPE
    assert "ESSMS" in valuesets.PRACTICE_SETTING
    assert "74207-2" in valuesets.TYPE_CODE
