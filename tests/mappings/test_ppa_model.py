"""PPA content model: SERAFIN-PH tables faithful to the kit, and the business rules of a PPA."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mappings import ppa_model
from mappings.ppa import PpaRecord

FIXTURE = Path(__file__).parents[1] / "resources" / "records" / "ppa-ehpad.json"
SVS = "{urn:ihe:iti:svs:2008}"


def _record() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("name", "filename", "oid"),
    [
        ("J285", "JDV_J285_Besoins_SERAFIN.xml", ppa_model.BESOINS_OID),
        ("J284", "JDV_J284_PrestationsDirects_SERAFIN.xml", ppa_model.PRESTATIONS_DIRECTES_OID),
        ("J283", "JDV_J283_PrestationsIndirects_SERAFIN.xml", ppa_model.PRESTATIONS_INDIRECTES_OID),
    ],
)
def test_serafin_value_sets_match_the_kit(kit_dir: Path, name: str, filename: str, oid: str) -> None:
    value_set = ET.parse(kit_dir / "jeuxDeValeurs" / filename).getroot().find(f"{SVS}ValueSet")
    assert value_set is not None and value_set.get("id") == oid
    kit = {c.get("code"): (c.get("codeSystem"), c.get("displayName")) for c in value_set.iter(f"{SVS}Concept")}
    ours = ppa_model.value_set_codes(name)  # type: ignore[arg-type]
    assert sorted(ours) == sorted(kit)
    for code in ours:
        concept = ppa_model.besoin(code) if name == "J285" else ppa_model.prestation(code)
        assert (concept.system, concept.display) == kit[code]


def test_prestation_kind() -> None:
    assert ppa_model.prestation_kind("2.3.1.1") == "directe"
    assert ppa_model.prestation_kind("3.2.4.1") == "indirecte"
    with pytest.raises(KeyError):
        ppa_model.prestation_kind("1.2.1.3")  # a need, not a prestation


def test_fixture_is_valid() -> None:
    record = PpaRecord.model_validate(_record())
    assert record.ppa.status is ppa_model.PpaStatus.SIGNED
    assert [n.code for n in record.ppa.needs] == ["1.2.1.3", "1.3.4.1"]


def _invalid(mutate: Any, match: str) -> None:
    data = _record()
    mutate(data["ppa"])
    with pytest.raises(ValidationError, match=match):
        PpaRecord.model_validate(data)


def test_review_at_least_every_six_months() -> None:
    def later(ppa: dict[str, Any]) -> None:
        ppa["next_evaluation_on"] = "2024-08-23"  # elaborated 2024-02-20: 185 days later

    _invalid(later, "at least every six months")


def test_a_held_review_restarts_the_six_months() -> None:
    data = _record()
    data["ppa"]["reviews"] = [{"on": "2024-05-20", "synthesis": "Bilan positif.", "participants": ["ide"]}]
    data["ppa"]["next_evaluation_on"] = "2024-11-15"
    data["ppa"]["intermediate_review_on"] = None
    assert PpaRecord.model_validate(data).ppa.next_evaluation_on.isoformat() == "2024-11-15"


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("needs", 0, "code"), "2.1.1.1", "not a SERAFIN-PH need"),
        (("prestations", 0, "code"), "1.2.1.3", "not a SERAFIN-PH prestation"),
        (("goals", 0, "need_id"), "B9", "unknown need"),
        (("prestations", 0, "need_ids"), ["B9"], "unknown need"),
        (("prestations", 0, "goal_ids"), ["O9"], "unknown goal"),
        (("prestations", 0, "responsible"), "nobody", "unknown contributor"),
        (("referent",), "nobody", "not a contributor"),
        (("needs", 1, "id"), "B1", "duplicate"),
        (("period_end",), "2024-01-01", "period_end is before period_start"),
        (("expression", "expressed_on"), "2024-02-21", "the person speaks first"),
        (("intermediate_review_on",), "2024-09-01", "between elaborated_on and next_evaluation_on"),
        (("goals", 0, "state"), "completed", "achievement"),
    ],
)
def test_business_rules(path: tuple[Any, ...], value: Any, match: str) -> None:
    def mutate(ppa: dict[str, Any]) -> None:
        target = ppa
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        if path == ("goals", 0, "state"):
            target["achievement"] = None

    _invalid(mutate, match)


def test_status_needs_agreements() -> None:
    def unsigned(ppa: dict[str, Any]) -> None:
        ppa["agreements"] = [a for a in ppa["agreements"] if a["party"] == "structure"]

    _invalid(unsigned, "signed PPA carries the agreement of the person")

    def no_structure(ppa: dict[str, Any]) -> None:
        ppa["status"] = "validated"
        ppa["agreements"] = [a for a in ppa["agreements"] if a["party"] != "structure"]

    _invalid(no_structure, "validated PPA carries the structure's agreement")

    data = _record()
    data["ppa"]["status"] = "draft"
    data["ppa"]["agreements"] = []
    assert PpaRecord.model_validate(data).ppa.status is ppa_model.PpaStatus.DRAFT


def test_structure_agreement_names_who_gave_it() -> None:
    def anonymous(ppa: dict[str, Any]) -> None:
        ppa["agreements"][0]["by"] = None

    _invalid(anonymous, "names the professional")


def test_legal_representative_must_exist_when_mentioned() -> None:
    data = _record()
    data["person"]["legal_representative"] = None
    with pytest.raises(ValidationError, match="legal representative"):
        PpaRecord.model_validate(data)
    data["ppa"]["legal_representative_participated"] = None
    data["ppa"]["agreements"] = [a for a in data["ppa"]["agreements"] if a["party"] != "legal_representative"]
    PpaRecord.model_validate(data)


def test_unknown_fields_are_rejected() -> None:
    data = copy.deepcopy(_record())
    data["ppa"]["goals"][0]["colour"] = "blue"
    with pytest.raises(ValidationError, match="colour"):
        PpaRecord.model_validate(data)
