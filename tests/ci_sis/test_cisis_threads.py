"""The validator can be shared by a worker pool: Saxon use is serialised, results do not mix."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ci_sis import Validator

pytestmark = pytest.mark.conformance


def test_concurrent_validations_give_the_sequential_verdicts(validator: Validator, examples: Path) -> None:
    good = (examples / "DLU-EHPAD-FLUDT_2022.01.xml").read_bytes()
    bad = good.replace(b'code="28651-8"', b'code="00000-0"', 1)
    assert bad != good
    volet = "DLU-EHPAD-FLUDT_2022.01"
    expected = {good: validator.validate(good, volet), bad: validator.validate(bad, volet)}
    assert expected[good].ok and not expected[bad].ok
    jobs = [good, bad] * 12
    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = list(pool.map(lambda xml: validator.validate(xml, volet), jobs))
    for xml, report in zip(jobs, reports, strict=True):
        assert report == expected[xml]
