"""Property tests: every generated PPA gives a CDA N1 passing the kit, a TDDUI Bundle passing the
profiles, and a PDF that says the plan in words."""

from __future__ import annotations

import base64
import io
import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pypdf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

import profiles
from ci_sis import Validator, load_validator
from mappings import ppa_model
from mappings.base import RenderContext
from mappings.ppa import PPA, PpaRecord
from mappings.tddui import TASK_REASON, TDDUI

FIXTURE = Path(__file__).parents[1] / "resources" / "records" / "ppa-ehpad.json"
BASE = json.loads(FIXTURE.read_text(encoding="utf-8"))

# Short words (no automatic word splitting in the PDF), with accents, ligatures and XML specials.
_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyzéèêàâçôœûùïÉÀÇŒ'&<>\"-", min_size=1, max_size=10)
LABEL = st.lists(_word, min_size=1, max_size=8).map(" ".join)
TEXT = st.lists(LABEL, min_size=1, max_size=3).map("\n".join)
NEEDS = ppa_model.value_set_codes("J285")
PRESTATIONS = ppa_model.value_set_codes("J284") + ppa_model.value_set_codes("J283")


def _iso(day: date) -> str:
    return day.isoformat()


@st.composite
def ppa_records(draw: st.DrawFn) -> dict[str, Any]:
    data = json.loads(json.dumps(BASE))
    if draw(st.booleans()):  # an identity that may not carry its INS
        data["person"]["identity_status"] = "provisoire"
        data["person"]["ins"] = None
        data["birth_order"] = draw(st.integers(1, 999))
    data["stay"] = None if draw(st.booleans()) else data["stay"]

    elaborated = draw(st.dates(date(2020, 1, 1), date(2030, 12, 31)))
    expressed = elaborated - timedelta(days=draw(st.integers(0, 60)))
    next_eval = elaborated + timedelta(days=draw(st.integers(1, ppa_model.MAX_REVIEW_INTERVAL_DAYS)))
    start = elaborated + timedelta(days=draw(st.integers(0, 30)))
    end = None if draw(st.booleans()) else start + timedelta(days=draw(st.integers(0, 400)))
    if data["stay"] is not None:
        data["stay"]["start"] = _iso(expressed - timedelta(days=1))
        data["stay"]["admission_decided_on"] = None

    contributors = [
        {
            "key": f"k{i}",
            "professional": {"internal_id": f"P{i}", "family_name": draw(LABEL), "role": "G15_60"},
            "role": draw(LABEL),
        }
        for i in range(draw(st.integers(1, 3)))
    ]
    keys = [c["key"] for c in contributors]
    need_codes = draw(st.lists(st.sampled_from(NEEDS), min_size=1, max_size=4, unique=True))
    needs = [
        {"id": f"B{i}", "code": code, "description": draw(LABEL), "analysis": draw(st.none() | TEXT)}
        for i, code in enumerate(need_codes)
    ]
    need_ids = [n["id"] for n in needs]
    goals = []
    for i in range(draw(st.integers(1, 4))):
        state = draw(st.sampled_from([s.value for s in ppa_model.GoalState]))
        achievement = draw(st.sampled_from([a.value for a in ppa_model.Achievement]))
        goals.append(
            {
                "id": f"O{i}",
                "title": draw(LABEL),
                "description": draw(TEXT),
                "need_id": draw(st.sampled_from(need_ids)),
                "expected_result": draw(st.none() | LABEL),
                "due_date": draw(st.none() | st.just(_iso(next_eval))),
                "state": state,
                "achievement": achievement if state == "completed" or draw(st.booleans()) else None,
                "person_opinion": draw(st.none() | TEXT),
                "strategy": draw(st.none() | TEXT),
            }
        )
    prestations = [
        {
            "id": f"P{i}",
            "code": draw(st.sampled_from(PRESTATIONS)),
            "title": draw(LABEL),
            "need_ids": draw(st.lists(st.sampled_from(need_ids), min_size=1, max_size=2, unique=True)),
            "responsible": draw(st.none() | st.sampled_from(keys)),
            "start": draw(st.none() | st.just(_iso(start))),
            "frequency": draw(st.none() | LABEL),
        }
        for i in range(draw(st.integers(1, 4)))
    ]
    reviews = [
        {
            "on": _iso(elaborated + timedelta(days=draw(st.integers(0, (next_eval - elaborated).days)))),
            "kind": draw(st.sampled_from(["intermediate", "final"])),
            "participants": draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)),
            "person_present": draw(st.booleans()),
            "synthesis": draw(TEXT),
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    status = draw(st.sampled_from(["validated", "signed"]))
    agreements = [{"party": "structure", "agreed": True, "on": _iso(elaborated), "by": draw(st.sampled_from(keys))}]
    if status == "signed":
        agreements.append(
            {"party": "person", "agreed": True, "on": _iso(elaborated), "comment": draw(st.none() | TEXT)}
        )
    refusals = draw(st.lists(st.sampled_from(["dmp", "mssante", "sidoba"]), max_size=2, unique=True))
    data["ppa"] = {
        "id": draw(st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True)),
        "status": status,
        "period_start": _iso(start),
        "period_end": _iso(end) if end else None,
        "elaborated_on": _iso(elaborated),
        "next_evaluation_on": _iso(next_eval),
        "expression": {
            "own_words": draw(TEXT),
            "wishes": draw(st.lists(LABEL, max_size=3)),
            "life_project": draw(st.none() | TEXT),
            "expressed_on": _iso(expressed),
        },
        "needs": needs,
        "goals": goals,
        "prestations": prestations,
        "contributors": contributors,
        "referent": draw(st.sampled_from(keys)),
        "person_participated": draw(st.booleans()),
        "agreements": agreements,
        "sharing_refusals": [{"partner": p, "on": _iso(elaborated)} for p in refusals],
        "reviews": reviews,
    }
    return data


@pytest.fixture(scope="module")
def validator(kit_dir: Path) -> Validator:
    return load_validator(kit_dir)


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=ppa_records(), seed=st.uuids())
def test_every_ppa_renders_conformant_documents(validator: Validator, data: dict[str, Any], seed: uuid.UUID) -> None:
    record = PpaRecord.model_validate(data)
    ctx = RenderContext(now=datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC), submission_id=seed)
    cda, fhir = PPA.render(record, ctx)

    report = validator.validate(cda.content, "CDA-N1")
    assert report.ok, [f.message for f in report.findings][:5]

    fhir_report = profiles.check_rendition(fhir.content, "fhir:tddui")
    assert fhir_report.ok, [i.message for i in fhir_report.issues if i.severity in ("error", "fatal")][:5]
    # every profile the bundle declares (Goal attente / projet de vie included) is known and checked
    assert [i.message for i in fhir_report.issues if i.code == "not-supported" or i.severity == "warning"] == []
    bundle = json.loads(fhir.content)
    declared = {p for e in bundle["entry"] for p in e["resource"].get("meta", {}).get("profile", [])}
    assert declared <= set(fhir_report.profiles)
    assert len([e for e in bundle["entry"] if e["resource"]["resourceType"] == "Goal"]) >= len(record.ppa.goals)
    # every review is a Task bilan (date, synthesis); every prestation links every need it answers
    tasks = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task"]
    bilans = [t for t in tasks if t["meta"]["profile"] == [TDDUI + "tddui-task-bilan"]]
    assert [(b["executionPeriod"]["start"], b["output"][0]["valueString"]) for b in bilans] == [
        (r.on.isoformat(), r.synthesis) for r in record.ppa.reviews
    ]
    urls = {
        e["resource"]["identifier"][0]["value"]: e["fullUrl"] for e in bundle["entry"] if "identifier" in e["resource"]
    }
    prefix = f"3{record.essms.finess}/{record.person.local_id}-BESO-"
    prestations = [t for t in tasks if t["meta"]["profile"] == [TDDUI + "tddui-task-prestation"]]
    for item, task in zip(record.ppa.prestations, prestations, strict=True):
        linked = [x["valueReference"]["reference"] for x in task["extension"] if x["url"] == TASK_REASON]
        assert linked == [urls[prefix + need_id] for need_id in item.need_ids]

    body = etree.fromstring(cda.content).find(".//{urn:hl7-org:v3}nonXMLBody/{urn:hl7-org:v3}text")
    assert body is not None
    reader = pypdf.PdfReader(io.BytesIO(base64.b64decode(body.text or "")))
    text = _words(" ".join(page.extract_text() for page in reader.pages))
    ppa = record.ppa
    assert _words(ppa.expression.own_words) in text
    for goal in ppa.goals:
        assert _words(goal.title) in text
    for need in ppa.needs:
        assert _words(need.description) in text
        assert ppa_model.besoin(need.code).display in text
    for item in ppa.prestations:
        assert _words(item.title) in text
