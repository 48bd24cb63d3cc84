"""Property-based: every valid generated record gives a DLU (and FLUDT) the CI-SIS kit accepts.

Example counts stay modest by default; raise them with ``DUI_HYPOTHESIS_EXAMPLES=500``.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from mappings.base import RenderContext
from mappings.dlu import DLU, render_dlu, render_fludt
from mappings.record import DluRecord
from tests.mappings.conftest import DLU_VOLET, FLUDT_VOLET
from tests.strategies import dlu_records

EXAMPLES = int(os.environ.get("DUI_HYPOTHESIS_EXAMPLES", "25"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
NS = {"h": "urn:hl7-org:v3"}

contexts = st.builds(
    RenderContext,
    now=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)).map(
        lambda d: d.replace(microsecond=0)
    ),
    submission_id=st.uuids(),
)


def _findings(validator: Any, content: bytes, volet: str) -> list[str]:
    return [f"{f.location}: {f.message}" for f in validator.validate(content, volet).findings]


@PROPERTY
@given(record=dlu_records(with_transfer=True), ctx=contexts)
def test_generated_records_give_conformant_dlu_and_fludt(validator: Any, record: DluRecord, ctx: RenderContext) -> None:
    dlu = render_dlu(record, ctx)
    fludt = render_fludt(record, ctx)
    assert _findings(validator, dlu.content, DLU_VOLET) == []
    assert _findings(validator, fludt.content, FLUDT_VOLET) == []


@PROPERTY
@given(record=dlu_records(), ctx=contexts)
def test_ins_appears_exactly_when_the_identity_is_qualified(record: DluRecord, ctx: RenderContext) -> None:
    for rendition in DLU.render(record, ctx):
        if rendition.kind == "fhir":
            continue
        ids = etree.fromstring(rendition.content).findall("h:recordTarget/h:patientRole/h:id", NS)
        roots = [i.get("root") for i in ids]
        ins = record.person.ins
        if record.person.ins_usable and ins is not None:
            assert roots[0] == ins.oid and ids[0].get("extension") == ins.matricule
        else:
            assert all(not r.startswith("1.2.250.1.213.1.4.") for r in roots)
            if ins is not None:
                assert ins.matricule.encode() not in rendition.content
        assert ids[-1].get("extension") == record.person.local_id


@PROPERTY
@given(record=dlu_records(), seed=st.uuids())
def test_rendering_is_a_pure_function(record: DluRecord, seed: uuid.UUID) -> None:
    ctx = RenderContext(now=datetime(2030, 1, 1, tzinfo=UTC), submission_id=seed)
    assert [r.content for r in DLU.render(record, ctx)] == [r.content for r in DLU.render(record, ctx)]
    assert DluRecord.model_validate_json(record.model_dump_json()) == record
