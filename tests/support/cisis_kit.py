"""A CI-SIS kit for tests: the real kit's XSD and profile schematrons plus two test volets.

``BOOM`` raises an XSLT dynamic error on every CDA document (the validator cannot run: no verdict);
``STRICT`` has one assert that always fails (a finding, the document is not conformant)."""

from __future__ import annotations

import shutil
from pathlib import Path

BOOM = "TEST-BOOM_2099.01"
STRICT = "TEST-STRICT_2099.01"
STRICT_MESSAGE = "the test volet refuses every document"

_SCH = "http://purl.oclc.org/dsdl/schematron"


def _volet(assert_test: str) -> str:
    return (
        f'<schema xmlns="{_SCH}" queryBinding="xslt2">\n'
        '  <ns prefix="cda" uri="urn:hl7-org:v3"/>\n'
        '  <pattern id="test">\n'
        '    <rule context="cda:ClinicalDocument">\n'
        f'      <assert test="{assert_test}">{STRICT_MESSAGE}</assert>\n'
        "    </rule>\n"
        "  </pattern>\n"
        "</schema>\n"
    )


def build_test_kit(kit_dir: Path, root: Path) -> Path:
    """Copy the kit's infrastructure into ``root``, link its schematrons and value sets, add the test volets."""
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
