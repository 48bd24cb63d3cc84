"""The small ER7 reader the ``mllp`` source interprets with agrees with hl7apy (the project's HL7
library) on every field it uses, for the ANS examples and the hand-written messages. The reader
is used because it is about three orders of magnitude faster (bench/bench_hl7_parse.py)."""

from __future__ import annotations

import pytest
from hl7apy.parser import parse_segments

from connectors.hl7v2.message import parse
from tests.connectors.hl7v2.support import EXAMPLES, STRUCTURES, adt

SAMPLES = [p.read_bytes().decode("utf-8") for p in sorted((EXAMPLES / "pam-fr-consent").glob("*.er7"))] + [
    adt(t, local_id="RES-1", zfa_feeding="IO").decode("utf-8") for t in sorted(STRUCTURES)
]
# (segment, field) pairs interpret reads
FIELDS = [("MSH", 9), ("MSH", 10), ("EVN", 2), ("PID", 3), ("PID", 32), ("PV1", 2), ("PV1", 19), ("MRG", 1)]
FIELDS += [("ZBE", i) for i in (1, 2, 4, 5, 6, 7, 8, 9)] + [("ZFA", i) for i in (1, 9, 10, 11, 12)]
FIELDS += [("ZFM", i) for i in (1, 2, 3, 4)]


@pytest.mark.parametrize("text", SAMPLES, ids=[f"sample{i}" for i in range(len(SAMPLES))])
def test_same_fields_as_hl7apy(text: str) -> None:
    wire = text.replace("\r\n", "\r").replace("\n", "\r")
    theirs = {s.name: s for s in parse_segments(wire.strip("\r"), version="2.5")}
    ours = parse(wire)
    for name, index in FIELDS:
        segment = ours.first(name)
        if name not in theirs:
            assert segment is None
            continue
        assert segment is not None
        fields = [c for c in theirs[name].children if c.name == f"{name}_{index}"]
        expected = "~".join(f.to_er7() for f in fields)
        assert segment.raw(index) == expected, (name, index)
