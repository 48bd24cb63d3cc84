#!/usr/bin/env python3
"""Parsing PAM-FR ADT messages: hl7apy (parse_segments, version 2.5) against the small ER7 reader
the ``mllp`` source interprets with (connectors/hl7v2/message.py), and the whole ``interpret``.

    .venv/bin/python bench/bench_hl7_parse.py

Both read the same fields (tests/connectors/hl7v2/test_reader_vs_hl7apy.py). Prints ms per
message and the machine's load; asserts nothing about speed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hl7apy.parser import parse_segments  # noqa: E402

from connectors.base import InboundMessage  # noqa: E402
from connectors.hl7v2 import MllpSource, MllpSourceSettings  # noqa: E402
from connectors.hl7v2.message import parse  # noqa: E402
from tests.connectors.hl7v2.support import EXAMPLES  # noqa: E402


def _time(label: str, fn: object, count: int) -> None:
    started = time.perf_counter()
    for _ in range(count):
        fn()  # type: ignore[operator]
    ms = (time.perf_counter() - started) / count * 1000
    print(f"{label:<28} {ms:8.3f} ms/message  ({1000 / ms:,.0f} msg/s on one core)")


def main() -> None:
    raw = (EXAMPLES / "pam-fr-consent" / "NonConsentementConsultation_OppositionAlimentation.er7").read_bytes()
    text = raw.decode("utf-8").replace("\n", "\r")
    source = MllpSource(MllpSourceSettings(essms_finess="750000010", port=0))
    message = InboundMessage(external_id="x", content=text.encode(), media_type="application/hl7-v2+er7")
    _time("hl7apy parse_segments", lambda: parse_segments(text.strip("\r"), version="2.5"), 50)
    _time("ER7 reader (message.parse)", lambda: parse(text), 5000)
    _time("interpret (read + event)", lambda: source.interpret(message), 2000)
    load = os.getloadavg()
    print(f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
