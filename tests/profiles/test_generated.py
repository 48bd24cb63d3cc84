"""The generated constraint data is pinned: it is what the generator makes from the IG packages
and the transcribed differentials, whose content is pinned too (a transcription changes only on
purpose, with its digest)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "profiles" / "sources"
PACKAGES = Path(os.environ.get("FHIR_IG_DIR", ROOT.parent / "shared" / "fhir-ig")) / "packages"
KIT = Path(os.environ.get("CISIS_KIT_DIR", ROOT.parent / "shared" / "cisis-kit"))


def test_generated_data_is_what_the_generator_makes() -> None:
    if not PACKAGES.is_dir() or not (KIT / "jeuxDeValeurs").is_dir():
        pytest.skip("the IG packages and the CI-SIS kit are needed to regenerate")
    sys.path.insert(0, str(ROOT / "scripts"))
    from gen_profiles import OUTPUT, build

    assert OUTPUT.read_text(encoding="utf-8") == build(PACKAGES, KIT), "run scripts/gen_profiles.py"


def test_ig_versions_are_recorded() -> None:
    data = json.loads((ROOT / "profiles" / "data" / "generated.json").read_text(encoding="utf-8"))
    sources = [s["source"] for s in data["sources"]]
    assert sources[:2] == ["hl7.fhir.fr.core#2.2.0-ballot-2", "ans.fhir.fr.tddui#2.0.0"]
    assert any(s.startswith("ans.fhir.fr.tddui#2.2.0") for s in sources)
    assert any(s.startswith("ihe.iti.mhd#4.2.4") for s in sources)
    versions = {p["url"].rsplit("/", 1)[1]: p["version"] for p in data["profiles"]}
    assert versions["tddui-patient"] == versions["tddui-careplan-projet-personnalise"] == "2.2.0"
    assert versions["fr-core-patient"] == "2.2.0-ballot-2"
    assert any(s.startswith("ans.fhir.fr.sdo#4.0.5") for s in sources)
    assert {versions[n] for n in ("sdo-document-reference", "esms-document-reference", "esms-consent", "sdo-task")} == {
        "4.0.5"
    }
    assert any(s.startswith("ans.fhir.fr.pdsm#3.1.1") for s in sources)
    pdsm = ("pdsm-comprehensive-provide-document-bundle", "pdsm-submissionset-comprehensive")
    assert {versions[n] for n in (*pdsm, "pdsm-comprehensive-document-reference", "pdsm-simplified-publish")} == {
        "3.1.1"
    }
    mhd = ("Minimal", "UnContained.Comprehensive", "Comprehensive")
    assert {
        versions[f"IHE.MHD.{m}.{t}"] for m in mhd for t in ("ProvideBundle", "SubmissionSet", "DocumentReference")
    } == {"4.2.4-current"}


def test_pdsm_chains_to_its_ihe_mhd_parents() -> None:
    """The PDSm profiles the gateway emits are generated, and their IHE MHD parents apply."""
    from profiles import definitions

    pdsm = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
    mhd = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD."
    chain = [p.url for p in definitions.chain(pdsm + "pdsm-comprehensive-provide-document-bundle")]
    assert chain[1:] == [
        mhd + "Comprehensive.ProvideBundle",
        mhd + "UnContained.Comprehensive.ProvideBundle",
        mhd + "Minimal.ProvideBundle",
    ]
    chain = [p.url for p in definitions.chain(pdsm + "pdsm-comprehensive-document-reference")]
    assert chain[-1] == mhd + "Minimal.DocumentReference"
    chain = [p.url for p in definitions.chain(pdsm + "pdsm-submissionset-comprehensive")]
    assert chain[-2:] == [
        mhd + "Minimal.SubmissionSet",
        "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.List",
    ]
    tddui = "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-document-reference"
    assert [p.url for p in definitions.chain(tddui)] == [tddui, mhd + "SimplifiedPublish.DocumentReference"]


def test_sdo_code_lists_the_mapping_writes_from_are_the_generated_ones() -> None:
    """The SDO mapping picks statut/motif codes from ``profiles.definitions.sdo``; the validator
    checks them against the transcribed JDV_J252/J251: both must be the same lists."""
    from profiles.definitions.sdo import MOTIF_ESMS, STATUT_ESMS, TRE_R357, TRE_R358

    data = json.loads((ROOT / "profiles" / "data" / "generated.json").read_text(encoding="utf-8"))
    nos = "https://mos.esante.gouv.fr/NOS/"
    statut = data["valuesets"][
        nos + "JDV_J252-StatutPersonnePriseChargeESMS/FHIR/JDV-J252-StatutPersonnePriseChargeESMS"
    ]
    motif = data["valuesets"][
        nos + "JDV_J251-MotifStatutPersonnePriseChargeESMS/FHIR/JDV-J251-MotifStatutPersonnePriseChargeESMS"
    ]
    assert (set(statut["codes"]), statut["systems"]) == (set(STATUT_ESMS), [TRE_R357])
    assert (set(motif["codes"]), motif["systems"]) == (set(MOTIF_ESMS), [TRE_R358])


def test_transcriptions_are_pinned() -> None:
    manifest = json.loads((SOURCES / "MANIFEST.json").read_text(encoding="utf-8"))
    for folder, spec in manifest["transcriptions"].items():
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (SOURCES / folder).glob("*.json")}
        assert files == spec["sha256"], f"{folder}: transcription changed, update its digest on purpose"


def test_every_binding_has_a_code_list_or_is_declared_unavailable() -> None:
    data = json.loads((ROOT / "profiles" / "data" / "generated.json").read_text(encoding="utf-8"))
    used = {r["valueset"] for p in data["profiles"] for r in p["rules"] if r["kind"] == "binding"}
    assert used == set(data["valuesets"])
    unavailable = sorted(url for url, vs in data["valuesets"].items() if not vs["available"])
    assert unavailable == [
        # SDO: JDV_J250/J253 (NOS, not in the CI-SIS kit) and the IG's placeholder JDV_JXX
        "https://mos.esante.gouv.fr/NOS/JDV_J250-MotifStatutPersonnePriseChargeUnite/FHIR/JDV-J250-MotifStatutPersonnePriseChargeUnite",
        "https://mos.esante.gouv.fr/NOS/JDV_J253-StatutPersonnePriseChargeUnite/FHIR/JDV-J253-StatutPersonnePriseChargeUnite",
        "https://mos.esante.gouv.fr/NOS/JDV_JXX-typeDroitPrestation/FHIR/JDV_JXX-typeDroitPrestation",
        "https://smt.esante.gouv.fr/fhir/ValueSet/jdv-j367-type-projet-personnalise-ms",
        "https://smt.esante.gouv.fr/fhir/ValueSet/jdv-j384-role-membre-famille-ms",
    ]
