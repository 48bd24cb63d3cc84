"""A validator that cannot run gives no verdict: it raises, it never reports a finding.

Content errors (not well-formed, a DOCTYPE, XSD violations, failed asserts) are findings; an engine
failure (an XSLT dynamic error in a kit schematron, Saxon failing) raises :class:`ValidationRunError`,
which the gateway's conformance gate turns into a held submission instead of a rejected one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ci_sis import ValidationRunError, Validator
from ci_sis._kit import Kit

pytestmark = pytest.mark.conformance

SCH = "http://purl.oclc.org/dsdl/schematron"
BOOM = "TEST-BOOM_2099.01"  # a volet whose schematron raises a dynamic error on every CDA document
STRICT = "TEST-STRICT_2099.01"  # a volet whose schematron has one assert that always fails


def _volet(assert_test: str) -> str:
    return (
        f'<schema xmlns="{SCH}" queryBinding="xslt2">\n'
        '  <ns prefix="cda" uri="urn:hl7-org:v3"/>\n'
        '  <pattern id="test">\n'
        '    <rule context="cda:ClinicalDocument">\n'
        f'      <assert test="{assert_test}">the test volet refuses every document</assert>\n'
        "    </rule>\n"
        "  </pattern>\n"
        "</schema>\n"
    )


@pytest.fixture(scope="module")
def test_kit(kit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kit made of the real kit's XSD and profile schematrons plus two test volets."""
    root = tmp_path_factory.mktemp("kit")
    shutil.copytree(kit_dir / "infrastructure", root / "infrastructure")
    (root / "jeuxDeValeurs").symlink_to(kit_dir / "jeuxDeValeurs", target_is_directory=True)
    schematrons = root / "schematrons"
    schematrons.mkdir()
    for name in ("profils", "include", "abstract"):
        if (kit_dir / "schematrons" / name).exists():
            (schematrons / name).symlink_to(kit_dir / "schematrons" / name, target_is_directory=True)
    (schematrons / f"CI-SIS_{BOOM}.sch").write_text(
        _volet("error(QName('urn:test', 'BOOM'), 'the engine failed')"), encoding="utf-8"
    )
    (schematrons / f"CI-SIS_{STRICT}.sch").write_text(_volet("false()"), encoding="utf-8")
    return root


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
    assert [(f.stage, f.pattern, f.message) for f in report.errors] == [
        ("schematron", "test", "the test volet refuses every document")
    ]


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
