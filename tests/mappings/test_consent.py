"""One closed consent vocabulary: the record's refusals (person and PPA) are consent families."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mappings.consent import ConsentFamily, read_refusals
from mappings.ppa import PPA, PpaRecord
from mappings.record import DluRecord, facts
from tests.mappings.conftest import record_json

PPA_FIXTURE = Path(__file__).parents[1] / "resources" / "records" / "ppa-ehpad.json"


def _ppa(refusals: list[Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PPA_FIXTURE.read_text(encoding="utf-8"))
    data["ppa"]["sharing_refusals"] = [{"partner": p, "on": data["ppa"]["elaborated_on"]} for p in refusals]
    return data


def _dlu(refusals: list[Any]) -> dict[str, Any]:
    data = record_json("rich")
    data["person"]["sharing_refusals"] = refusals
    return data


def test_the_values_the_api_accepts_today_are_the_families() -> None:
    assert [f.value for f in ConsentFamily] == ["dmp", "mssante", "viatrajectoire", "sidoba", "fhir"]


@pytest.mark.parametrize("spelling", ["DMP", " dmp", "dmp ", "Dmp\t"])
def test_case_and_spacing_variants_are_read_as_the_family(spelling: str) -> None:
    assert ConsentFamily(spelling) is ConsentFamily.DMP
    assert facts(DluRecord.model_validate(_dlu([spelling]))).sharing_refused_with == {ConsentFamily.DMP}
    assert PPA.facts(PpaRecord.model_validate(_ppa([spelling]))).sharing_refused_with == {ConsentFamily.DMP}


@pytest.mark.parametrize("value", ["mes", "hospital", "", 3])
def test_anything_else_is_refused_by_the_record_model(value: Any) -> None:
    with pytest.raises(ValidationError, match="sharing_refusals"):
        DluRecord.model_validate(_dlu([value]))
    with pytest.raises(ValidationError, match="partner"):
        PpaRecord.model_validate(_ppa([value]))


def test_a_variant_of_a_refusal_already_given_is_a_duplicate() -> None:
    with pytest.raises(ValidationError, match="duplicates"):
        DluRecord.model_validate(_dlu(["dmp", "DMP"]))
    with pytest.raises(ValidationError, match="sharing_refusals"):
        PpaRecord.model_validate(_ppa(["dmp", " dmp"]))


def test_person_and_ppa_refusals_are_merged_as_families() -> None:
    data = _ppa(["viatrajectoire"])
    data["person"]["sharing_refusals"] = ["mssante"]
    found = PPA.facts(PpaRecord.model_validate(data)).sharing_refused_with
    assert found == {ConsentFamily.MSSANTE, ConsentFamily.VIATRAJECTOIRE}
    assert all(isinstance(f, ConsentFamily) for f in found)


def test_stored_refusals_are_read_conservatively() -> None:
    known = read_refusals(["dmp", " MSSANTE "])
    assert known.families == {ConsentFamily.DMP, ConsentFamily.MSSANTE} and not known.unrecognised
    assert known.refuses(ConsentFamily.DMP) and not known.refuses(ConsentFamily.SIDOBA)
    unknown = read_refusals(["dmp", "mon-espace-sante"])
    assert unknown.unrecognised
    assert all(unknown.refuses(family) for family in ConsentFamily)
    assert not read_refusals([]).refuses(ConsentFamily.FHIR)
