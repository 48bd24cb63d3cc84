"""The DUI record model: shapes, field-level errors, identity (RNIV) and chronology rules."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from mappings.record import (
    DluRecord,
    DuiRecord,
    Essms,
    IdentityStatus,
    Ins,
    Professional,
    exchange_identity,
    facts,
    finess_key_ok,
    luhn_ok,
    nir_key,
)
from tests.mappings.conftest import RECORDS, SAMPLES, fixed_ctx, load_record, record_json


def _errors(data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        DluRecord.model_validate(data)
    return [(tuple(e["loc"]), e["msg"]) for e in caught.value.errors()]


def _locs(data: dict[str, Any]) -> set[tuple[str | int, ...]]:
    return {loc for loc, _ in _errors(data)}


@pytest.mark.parametrize("name", SAMPLES)
def test_samples_are_valid_and_round_trip(name: str) -> None:
    record = load_record(name)
    again = DluRecord.model_validate_json(record.model_dump_json())
    assert again == record


def test_checksums() -> None:
    assert nir_key("2790351215189") == 89  # INS test identity PAT-TROIS DOMINIQUE
    assert nir_key("146062A005123") == 97 - 1460619005123 % 97  # Corsica: 2A counts as 19
    assert luhn_ok("01234567897") and not luhn_ok("01234567898")
    assert finess_key_ok("750803447") and not finess_key_ok("750803448")
    assert finess_key_ok("2A0000123")  # Corsican FINESS: format only


def test_nir_key_and_traits_are_checked() -> None:
    with pytest.raises(ValidationError, match="key is wrong: characters 14-15"):
        Ins(matricule="279035121518988")
    data = record_json("rich")
    bad_sex = copy.deepcopy(data)
    bad_sex["person"]["traits"]["sex"] = "M"
    assert any("sex (character 1) does not match traits.sex" in msg for _, msg in _errors(bad_sex))
    bad_month = copy.deepcopy(data)
    bad_month["person"]["traits"]["birth_date"] = "1979-04-28"
    assert any("birth month" in msg for _, msg in _errors(bad_month))


def test_errors_point_at_the_field() -> None:
    data = record_json("rich")
    data["essms"]["finess"] = "750803448"
    data["author"]["rpps"] = "0123456789"
    data["dlu"]["observed_state"][0]["code"] = "12345"
    data["dlu"]["attached_documents"][0]["code"] = "DLU_999"
    data["person"]["telecoms"][0]["value"] = "01 44 <53>"
    data["dlu"]["treatments"][0]["route"] = "oral"
    data["person"]["unknown"] = 1
    errors = dict(_errors(data))
    assert "FINESS number has a wrong key" in errors[("essms", "finess")]
    assert ("author", "rpps") in errors
    assert "not in JDV_ObservationEtatPatient_CISIS" in errors[("dlu", "observed_state", 0, "code")]
    assert "not in JDV_ChecklistDLU_CISIS" in errors[("dlu", "attached_documents", 0, "code")]
    assert ("person", "telecoms", 0, "value") in errors
    assert "JDV_RouteofAdministration" in errors[("dlu", "treatments", 0, "route")]
    assert ("person", "unknown") in errors


@pytest.mark.parametrize(
    ("status", "with_ins", "message"),
    [
        ("qualifiee", False, "requires the INS"),
        ("recuperee", False, "requires the INS"),
        ("provisoire", True, "cannot carry an INS"),
        ("validee", True, "cannot carry an INS"),
    ],
)
def test_rniv_status_and_ins_go_together(status: str, with_ins: bool, message: str) -> None:
    data = record_json("rich")
    data["person"]["identity_status"] = status
    if not with_ins:
        data["person"].pop("ins")
    assert any(message in msg for _, msg in _errors(data))


def test_doubtful_or_fictitious_identity_stays_provisional() -> None:
    data = record_json("minimal")
    data["person"]["doubtful"] = True
    DluRecord.model_validate(data)
    data["person"]["identity_status"] = "validee"
    assert any("must stay 'provisoire'" in msg for _, msg in _errors(data))
    data["person"]["identity_status"] = "provisoire"
    data["person"]["fictitious"] = True
    assert any("both doubtful and fictitious" in msg for _, msg in _errors(data))


def test_xml_forbidden_characters_are_rejected_with_their_code_point() -> None:
    data = record_json("minimal")
    data["dlu"]["comment"] = "bip\x07"
    data["person"]["traits"]["birth_family_name"] = "MARTIN\nDUPONT"
    errors = dict(_errors(data))
    assert "U+0007" in errors[("dlu", "comment")]
    assert "single line" in errors[("person", "traits", "birth_family_name")]


def test_chronology_is_checked_against_the_record_not_the_clock() -> None:
    data = record_json("rich")
    data["dlu"]["vaccinations"][0]["administered_on"] = "2024-05-03"  # after last_updated (2024-05-02)
    assert any("dlu.vaccinations.0.administered_on is after last_updated" in m for _, m in _errors(data))
    data = record_json("rich")
    data["dlu"]["medical_history"][0]["onset"] = "1970-01-01"  # before birth (1979)
    assert any("before person.traits.birth_date" in m for _, m in _errors(data))
    data = record_json("rich")
    data["transfer"]["last_meal"] = "2024-05-02T15:00:00+02:00"
    assert any("last_meal is after transfer_time" in m for _, m in _errors(data))
    data = record_json("rich")
    data["last_updated"] = "2024-05-02T10:00:00"
    assert ("last_updated",) in _locs(data)
    # a record dated far in the future is accepted: validators never read the clock
    data = record_json("minimal")
    data["last_updated"] = "2099-01-01T00:00:00+00:00"
    DluRecord.model_validate(data)


def test_a_dlu_needs_at_least_one_checklist_document() -> None:
    data = record_json("minimal")
    data["dlu"]["attached_documents"] = []
    assert ("dlu", "attached_documents") in _locs(data)


def test_models_are_frozen() -> None:
    record = load_record("minimal")
    with pytest.raises(ValidationError):
        record.person.local_id = "other"  # type: ignore[misc]


def test_professional_needs_an_identifier_and_a_known_role() -> None:
    with pytest.raises(ValidationError, match="needs an rpps or an internal_id"):
        Professional(family_name="X")
    with pytest.raises(ValidationError, match="JDV_J01"):
        Professional(rpps="01234567897", family_name="X", role="CHEF")


def test_essms_codes_come_from_the_value_sets() -> None:
    with pytest.raises(ValidationError, match="JDV_J02"):
        Essms(finess="750803447", name="X", facility_type_code="ZZ99")


def test_facts_carry_no_names_and_only_qualified_ins() -> None:
    rich = load_record("rich")
    found = facts(rich)
    assert found.person_ref == "EHPAD-2024-0042"
    assert found.essms_finess == "750803447"
    assert found.ins_qualified is True
    assert found.sharing_refused_with == frozenset()
    text = json.dumps([found.person_ref, found.essms_finess, dict(found.extra)])
    assert "PAT-TROIS" not in text and "1979" not in text

    not_qualified = load_record("not_qualified")
    assert not_qualified.person.identity_status is IdentityStatus.RECUPEREE
    assert facts(not_qualified).ins_qualified is False
    assert facts(not_qualified).sharing_refused_with == frozenset({"dmp"})


def test_dui_record_is_generic() -> None:
    data = record_json("minimal")
    base = DuiRecord.model_validate({k: data[k] for k in ("person", "essms", "author")})
    assert base.signer == base.author
    with pytest.raises(ValidationError):
        DuiRecord.model_validate({**{k: data[k] for k in ("person", "essms", "author")}, "dlu": {}})


def test_json_schema_documents_the_fields() -> None:
    schema = DluRecord.model_json_schema()
    person = schema["$defs"]["Person"]["properties"]
    assert "RNIV" in person["identity_status"]["description"] or "RNIV" in json.dumps(schema["$defs"]["IdentityStatus"])
    assert "INS" in person["ins"]["description"]
    assert schema["$defs"]["Ins"]["properties"]["matricule"]["pattern"]
    assert schema["additionalProperties"] is False


def test_one_identity_rule_for_the_exchange_metadata_of_every_document_type() -> None:
    from mappings.dlu import render_dlu
    from mappings.ppa import PpaRecord, render_cda

    ppa_data = json.loads((RECORDS / "ppa-ehpad.json").read_text(encoding="utf-8"))
    for record in (load_record("rich"), load_record("not_qualified"), PpaRecord.model_validate(ppa_data)):
        identity = exchange_identity(record, fixed_ctx())
        qualified = record.person.identity_status is IdentityStatus.QUALIFIEE and record.person.ins is not None
        assert identity.ins_transmissible is qualified is (record.person.usable_ins is not None)
        expected = record.person.ins.matricule if qualified else record.person.local_id  # type: ignore[union-attr]
        assert identity.patient_id == expected and identity.source_patient_id == record.person.local_id
        render = render_cda if isinstance(record, PpaRecord) else render_dlu
        meta = render(record, fixed_ctx()).metadata  # type: ignore[arg-type]
        assert meta is not None
        assert (meta.patient_id, meta.patient_id_system) == (identity.patient_id, identity.patient_id_system)
        assert {k: meta.extra[k] for k in identity.extra()} == identity.extra()
