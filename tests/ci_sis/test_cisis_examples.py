"""The kit's own examples are conformant, and the CLI reports it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ci_sis import KitNotFound, UnknownVolet, Validator, load_validator

pytestmark = pytest.mark.conformance

EXAMPLES = [
    ("DLU-EHPAD-DLU_2022.01.xml", "DLU-EHPAD-DLU_2022.01"),
    ("DLU-EHPAD-FLUDT_2022.01.xml", "DLU-EHPAD-FLUDT_2022.01"),
    ("DLU-EHPAD-FLUDR_2022.01.xml", "DLU-EHPAD-FLUDR_2022.01"),
    ("DOC_NON_STRUCTURE_CDA-R2-N1.xml", "CDA-N1"),
    ("IPS-FR_2024.01_DLU.xml", "IPS-FR_2024.01"),
]


@pytest.mark.parametrize(("name", "volet"), EXAMPLES)
def test_kit_example_has_no_finding(validator: Validator, examples: Path, name: str, volet: str) -> None:
    report = validator.validate((examples / name).read_bytes(), volet)
    assert report.findings == ()
    assert report.ok
    assert report.schemas[0] == "infrastructure/cda/CDA_extended.xsd"
    assert "schematrons/profils/CI-SIS_ModelesDeContenusCDA.sch" in report.schemas
    assert "schematrons/profils/CI-SIS_Modeles_ANS.sch" in report.schemas


def test_volets_lists_dlu_models_and_n1(validator: Validator) -> None:
    names = validator.volets()
    for volet in ("DLU-EHPAD-DLU_2022.01", "DLU-EHPAD-FLUDT_2022.01", "DLU-EHPAD-FLUDR_2022.01", "CDA-N1"):
        assert volet in names


def test_load_validator_is_cached_per_kit(kit_dir: Path) -> None:
    assert load_validator(kit_dir) is load_validator(str(kit_dir))


def test_missing_kit_raises(tmp_path: Path) -> None:
    with pytest.raises(KitNotFound):
        load_validator(tmp_path)


def test_unknown_volet_raises(validator: Validator, examples: Path) -> None:
    with pytest.raises(UnknownVolet):
        validator.validate((examples / "DLU-EHPAD-DLU_2022.01.xml").read_bytes(), "NOPE_2099.01")


def test_not_well_formed_document_is_rejected(validator: Validator) -> None:
    report = validator.validate(b"<ClinicalDocument xmlns='urn:hl7-org:v3'>", "DLU-EHPAD-DLU_2022.01")
    assert not report.ok
    assert report.findings[0].stage == "xsd"
    assert "well-formed" in report.findings[0].message


def test_xsd_error_is_reported(validator: Validator, examples: Path) -> None:
    xml = (examples / "DLU-EHPAD-FLUDT_2022.01.xml").read_bytes()
    broken = xml.replace(b"<realmCode", b"<realmKode", 1)
    assert broken != xml
    report = validator.validate(broken, "DLU-EHPAD-FLUDT_2022.01")
    assert not report.ok
    xsd = [f for f in report.findings if f.stage == "xsd"]
    assert xsd and "realmKode" in xsd[0].message
    assert json.loads(json.dumps(report.to_dict()))["ok"] is False


def _cli(*args: str, env_kit: Path) -> subprocess.CompletedProcess[str]:
    code = "from ci_sis.cli import app; app()"
    env = {"CISIS_KIT_DIR": str(env_kit), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_validate_exit_codes(kit_dir: Path, examples: Path, tmp_path: Path) -> None:
    good = examples / "DLU-EHPAD-FLUDT_2022.01.xml"
    ok = _cli("validate", str(good), "--volet", "DLU-EHPAD-FLUDT_2022.01", env_kit=kit_dir)
    assert ok.returncode == 0, ok.stderr
    assert "CONFORMANT" in ok.stdout
    bad = tmp_path / "bad.xml"
    bad.write_bytes(good.read_bytes().replace(b'code="28651-8"', b'code="00000-0"'))
    ko = _cli("validate", str(bad), "--volet", "DLU-EHPAD-FLUDT_2022.01", "--json", env_kit=kit_dir)
    assert ko.returncode == 1, ko.stderr
    data = json.loads(ko.stdout)
    assert data["ok"] is False and data["error_count"] >= 1
    listed = _cli("volets", env_kit=kit_dir)
    assert listed.returncode == 0 and "DLU-EHPAD-DLU_2022.01" in listed.stdout.split()
