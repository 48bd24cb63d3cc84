"""The gate and the CI-SIS profiles the ANS pipeline leaves optional (structurationMinimale,
terminologies): with ``cisis_optional_profiles`` their findings are errors for the gateway's own
documents and warnings for documents from elsewhere; off, the gate's verdict is the ANS pipeline's.
The gateway's own DLU (a record without a médecin traitant, doses counted in tablets) passes them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from gateway.conformance import check_rendition
from gateway.settings import Settings
from mappings.base import Rendition
from mappings.dlu import DLU as DLU_TYPE
from tests.mappings.conftest import fixed_ctx, load_record
from tests.support.shared import SHARED

pytestmark = pytest.mark.conformance

KIT = Path(os.environ.get("CISIS_KIT_DIR") or SHARED / "cisis-kit")
DLU = "DLU-EHPAD-DLU_2022.01"


def _settings(optional: bool) -> Settings:
    if not KIT.is_dir():
        pytest.skip("no CI-SIS kit")
    return Settings(_env_file=None, cisis_kit_dir=KIT, cisis_optional_profiles=optional)  # type: ignore[call-arg]


def _dlu(name: str) -> Rendition:
    (cda,) = [r for r in DLU_TYPE.render(load_record(name), fixed_ctx()) if r.kind == "cda"]
    return cda


def _with_unknown_type_code(rendition: Rendition) -> Rendition:
    """The document code outside JDV_J07 (a terminologies/structurationMinimale finding only)."""
    tree = etree.fromstring(rendition.content)
    tree.find("{urn:hl7-org:v3}code").set("code", "NOT-A-J07-CODE")
    content = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
    return Rendition(**{**rendition.__dict__, "content": content})


def _optional_findings(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (result,) = results
    return [f for f in result["report"]["findings"] if "profils/" in (f.get("schema") or "")]


@pytest.mark.parametrize("name", ["minimal", "rich"])
def test_the_gateways_own_dlu_passes_the_optional_profiles_as_errors(name: str) -> None:
    (result,) = check_rendition(_dlu(name), settings=_settings(True))
    assert result["ok"], result["report"]
    assert any("structurationMinimale" in s for s in result["report"]["schemas"])
    assert not [f for f in _optional_findings([result]) if f["severity"] == "error"]


def test_a_code_outside_its_value_set_is_an_error_for_own_documents_and_a_warning_for_others() -> None:
    broken = _with_unknown_type_code(_dlu("minimal"))
    settings = _settings(True)
    own = check_rendition(broken, settings=settings)
    assert not own[0]["ok"]
    assert any(f["severity"] == "error" for f in _optional_findings(own))
    other = check_rendition(broken, settings=settings, own=False)
    found = _optional_findings(other)
    assert found and all(f["severity"] != "error" for f in found)
    # off (the default): the ANS pipeline's verdict, the optional profiles are not run
    off = check_rendition(broken, settings=_settings(False))
    assert _optional_findings(off) == []
    assert not any("structurationMinimale" in s for s in off[0]["report"]["schemas"])
