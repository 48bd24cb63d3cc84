"""The gateway's own FHIR renditions pass the conformance gate: the PPA's TDDUI transaction
(sample record and property-generated people/ESSMS/authors) and the TDDUI export."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from pydantic import ValidationError

from mappings.base import RenderContext
from mappings.ppa import PpaRecord, render_fhir
from profiles import check_rendition
from profiles.definitions.tddui import PENDING_PROFILES
from tests.strategies import dui_parts

RECORDS = Path(__file__).resolve().parents[1] / "resources" / "records"
PENDING = {p.url for p in PENDING_PROFILES}
CTX = RenderContext(now=datetime(2026, 1, 5, 9, 0, tzinfo=UTC), submission_id=uuid.UUID(int=11))


def ppa_data() -> dict[str, Any]:
    return json.loads((RECORDS / "ppa-ehpad.json").read_text(encoding="utf-8"))


def assert_gate_passes(content: bytes) -> None:
    report = check_rendition(content, "fhir:tddui")
    assert report.ok, [(i.expression, i.message) for i in report.errors]
    unchecked = {i.profile for i in report.issues if i.code == "not-supported"}
    assert unchecked <= PENDING, unchecked  # every other declared TDDUI profile was really checked
    bundle = json.loads(content)
    declared = {p for e in bundle["entry"] for p in e["resource"].get("meta", {}).get("profile", [])}
    assert declared - PENDING <= set(report.profiles)


def test_ppa_sample_rendition_passes_the_tddui_gate() -> None:
    rendition = render_fhir(PpaRecord.model_validate(ppa_data()), CTX)
    assert "fhir:tddui" in rendition.conformance
    assert_gate_passes(rendition.content)
    report = check_rendition(rendition.content, "fhir:tddui")
    checked = set(report.profiles)
    for name in ("tddui-patient-ins", "tddui-careplan-projet-personnalise", "tddui-task-prestation", "tddui-bundle"):
        assert f"https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/{name}" in checked


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(parts=dui_parts())
def test_ppa_renditions_for_generated_people_pass_the_tddui_gate(parts: dict[str, Any]) -> None:
    data = ppa_data()
    for key in ("person", "essms", "author"):
        data[key] = json.loads(parts[key].model_dump_json(exclude_none=True))
    if not parts["person"].ins_usable:
        data["birth_order"] = 1  # TDDUI needs the rang de naissance when the INS is not sent
    try:
        record = PpaRecord.model_validate(data)
    except ValidationError:
        assume(False)  # e.g. a person born after the PPA's dates
        raise
    assert_gate_passes(render_fhir(record, CTX).content)


def _entries(profile_name: str) -> list[tuple[int, dict[str, Any]]]:
    bundle = json.loads(render_fhir(PpaRecord.model_validate(ppa_data()), CTX).content)
    url = f"https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/{profile_name}"
    return [(i, e["resource"]) for i, e in enumerate(bundle["entry"]) if url in e["resource"]["meta"]["profile"]]


def test_task_prestation_rejects_a_besoin_code_as_prestation() -> None:
    from profiles import validate

    (_, task), *_ = _entries("tddui-task-prestation")
    index = next(i for i, item in enumerate(task["input"]) if item["type"]["coding"][0]["code"] == "typePrestation")
    task["input"][index]["valueCodeableConcept"]["coding"][0]["code"] = "1.2.1.3"  # a J285 besoin
    found = {(i.expression, i.rule) for i in validate(task).errors}
    assert (f"Task.input[{index}].valueCodeableConcept.coding[0].code", "binding") in found


def test_pending_goal_profiles_state_what_the_ppa_mapping_still_lacks() -> None:
    from profiles._paths import Node
    from profiles._rules import check_profile
    from profiles.definitions.tddui import TDDUI_GOAL_ATTENTE, TDDUI_GOAL_PROJET_VIE

    (_, attente), *_ = _entries("tddui-goal-attente")
    found = {(i.expression, i.rule) for i in check_profile([TDDUI_GOAL_ATTENTE], Node("Goal", attente))}
    assert {("Goal.identifier", "card"), ("Goal.extension", "card")} <= found
    complete = dict(
        attente,
        identifier=[{"value": "3750803447/EHPAD-2024-0042-ATT-1"}],
        extension=[
            {
                "url": "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-careplan-reference",
                "valueReference": {"reference": "CarePlan/pp-1"},
            }
        ],
    )
    assert check_profile([TDDUI_GOAL_ATTENTE], Node("Goal", complete)) == []
    (_, projet_vie), *_ = _entries("tddui-goal-projet-vie")
    found = {(i.expression, i.rule) for i in check_profile([TDDUI_GOAL_PROJET_VIE], Node("Goal", projet_vie))}
    assert ("Goal.identifier", "card") in found
