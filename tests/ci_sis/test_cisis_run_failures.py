"""A validator that cannot run gives no verdict: it raises, it never reports a finding.

Content errors (not well-formed, a DOCTYPE, XSD violations, failed asserts) are findings; an engine
failure (an XSLT dynamic error in a kit schematron, Saxon failing) raises :class:`ValidationRunError`,
which the gateway's conformance gate turns into a held submission instead of a rejected one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ci_sis import ValidationRunError, Validator
from ci_sis._kit import Kit
from tests.support.cisis_kit import BOOM, STRICT, STRICT_MESSAGE, build_test_kit

pytestmark = pytest.mark.conformance


@pytest.fixture(scope="module")
def test_kit(kit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_kit(kit_dir, tmp_path_factory.mktemp("kit"))


@pytest.fixture(scope="module")
def test_validator(test_kit: Path) -> Validator:
    return Validator(Kit.locate(test_kit))


@pytest.fixture(scope="module")
def dlu(kit_dir: Path) -> bytes:
    return (kit_dir / "ExemplesCDA" / "DLU-EHPAD-DLU_2022.01.xml").read_bytes()


def test_a_schematron_that_cannot_run_raises_instead_of_rejecting_the_document(
    test_validator: Validator, dlu: bytes
) -> None:
    with pytest.raises(ValidationRunError, match=r"BOOM|engine failed"):
        test_validator.validate(dlu, BOOM)


def test_a_failed_assert_of_the_same_kit_is_still_a_finding(test_validator: Validator, dlu: bytes) -> None:
    report = test_validator.validate(dlu, STRICT)
    assert not report.ok
    assert [(f.stage, f.pattern, f.message) for f in report.errors] == [("schematron", "test", STRICT_MESSAGE)]


def test_a_doctype_is_a_finding_and_never_reaches_saxon(test_validator: Validator, dlu: bytes) -> None:
    # an external entity Saxon would resolve if it parsed the document: the DOCTYPE alone refuses it
    doctype = b'<!DOCTYPE ClinicalDocument [<!ENTITY x SYSTEM "file:///etc/hostname">]>\n'
    head, sep, rest = dlu.partition(b"<ClinicalDocument")
    report = test_validator.validate(head + doctype + sep + rest, BOOM)
    assert not report.ok
    assert [(f.stage, f.kind) for f in report.findings] == [("xsd", "xsd")]
    assert "DOCTYPE" in report.findings[0].message


def test_cli_exits_2_without_a_verdict_when_the_validator_cannot_run(
    test_kit: Path, kit_dir: Path, tmp_path: Path
) -> None:
    document = tmp_path / "dlu.xml"
    document.write_bytes((kit_dir / "ExemplesCDA" / "DLU-EHPAD-DLU_2022.01.xml").read_bytes())
    code = "from ci_sis.cli import app; app()"
    args = ["validate", str(document), "--volet", BOOM, "--kit", str(test_kit), "--json"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"}
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "could not run" in done.stderr
    assert done.stdout == ""  # no report: there is no verdict to print
