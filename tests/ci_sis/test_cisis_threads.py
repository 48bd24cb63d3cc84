"""The validator can be shared by a worker pool: Saxon use is serialised, results do not mix."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ci_sis import Validator
from ci_sis import validator as validator_module
from ci_sis._engine import SaxonFailure
from ci_sis._kit import Kit
from ci_sis.validator import CompiledSchematron

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


def _counting_compiler(monkeypatch: pytest.MonkeyPatch, *, wait_for: int) -> list[Path]:
    """Wrap the real compile_schematron: record each call, and hold the first one until ``wait_for``
    calls have started (or 2 s have passed), so that threads racing for one schematron meet inside."""
    calls: list[Path] = []
    lock = threading.Lock()
    all_in = threading.Event()
    real = validator_module.compile_schematron

    def counting(sch: Path | str, **kwargs: Any) -> CompiledSchematron:
        with lock:
            calls.append(Path(sch))
            if len(calls) >= wait_for:
                all_in.set()
        all_in.wait(2.0)
        return real(sch, **kwargs)

    monkeypatch.setattr(validator_module, "compile_schematron", counting)
    return calls


def test_threads_starting_together_compile_each_schematron_once(
    kit_dir: Path, examples: Path, validator: Validator, monkeypatch: pytest.MonkeyPatch
) -> None:
    volet = "DLU-EHPAD-DLU_2022.01"
    xml = (examples / f"{volet}.xml").read_bytes()
    expected = validator.validate(xml, volet)
    calls = _counting_compiler(monkeypatch, wait_for=4)
    fresh = Validator(Kit.locate(kit_dir))  # nothing compiled yet
    start = threading.Barrier(4)

    def first_validation(_: int) -> object:
        start.wait()
        return fresh.validate(xml, volet)

    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = list(pool.map(first_validation, range(4)))
    schematrons = fresh.kit.schematrons(volet)
    assert sorted(calls) == sorted(p.resolve() for p in schematrons)  # each one once
    assert all(report == expected for report in reports)


def test_a_failed_compilation_is_not_cached(kit_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = Validator(Kit.locate(kit_dir))
    sch = fresh.kit.schematrons("DLU-EHPAD-DLU_2022.01")[0]
    real = validator_module.compile_schematron
    attempts: list[Path] = []

    def failing_once(path: Path | str, **kwargs: Any) -> CompiledSchematron:
        attempts.append(Path(path))
        if len(attempts) == 1:
            raise SaxonFailure("stylesheet compilation failed: injected")
        return real(path, **kwargs)

    monkeypatch.setattr(validator_module, "compile_schematron", failing_once)
    with pytest.raises(SaxonFailure):
        fresh.compiled(sch)
    compiled = fresh.compiled(sch)
    assert fresh.compiled(sch) is compiled
    assert len(attempts) == 2
