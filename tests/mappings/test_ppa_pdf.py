"""The PPA's PDF/A-2b: structure checked with pikepdf, words checked with pypdf's text extraction."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pikepdf
import pypdf
import pytest

from mappings.pdf import french_date, render_ppa_pdf, srgb_icc_profile
from mappings.ppa import PpaRecord

RESOURCES = Path(__file__).parents[1] / "resources"
FIXTURE = RESOURCES / "records" / "ppa-ehpad.json"
GOLDEN = RESOURCES / "records" / "ppa-ehpad.pdf.sha256"
CREATED = datetime(2024, 3, 1, 8, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def record() -> PpaRecord:
    return PpaRecord.model_validate(json.loads(FIXTURE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def pdf(record: PpaRecord) -> bytes:
    return render_ppa_pdf(record, record.ppa, version=2, created=CREATED, seed="1.2.250.1.999.1.1.1.42.11")


def _text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    raw = "\n".join(page.extract_text() for page in reader.pages)
    return re.sub(r"\s+", " ", raw)


def test_pdfa_identification_and_output_intent(pdf: bytes) -> None:
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert not doc.is_encrypted
        assert str(doc.Root.Lang) == "fr-FR"
        intents = doc.Root.OutputIntents
        assert len(intents) == 1
        assert intents[0].S == pikepdf.Name.GTS_PDFA1
        icc = intents[0].DestOutputProfile
        assert icc.N == 3
        assert icc.read_bytes() == srgb_icc_profile()
        assert icc.read_bytes()[36:40] == b"acsp"  # ICC signature
        metadata = doc.Root.Metadata
        assert "/Filter" not in metadata  # PDF/A: metadata stream is not compressed
        with doc.open_metadata(set_pikepdf_as_editor=False, update_docinfo=False) as xmp:
            assert xmp["pdfaid:part"] == "2"
            assert xmp["pdfaid:conformance"] == "B"
            assert xmp["dc:title"] == "Projet personnalisé d'accompagnement (version 2)"
            assert xmp["pdf:Producer"] == str(doc.docinfo.Producer)
            assert xmp["xmp:CreateDate"].startswith("2024-03-01T08:30:00")
        assert str(doc.docinfo.CreationDate) == "D:20240301083000+00'00'"
        assert str(doc.docinfo.Title) == "Projet personnalisé d'accompagnement (version 2)"
        ids = doc.trailer.ID
        assert bytes(ids[0]) == bytes(ids[1]) == hashlib.sha256(b"1.2.250.1.999.1.1.1.42.11").digest()[:16]


def test_all_fonts_embedded_no_javascript_no_actions(pdf: bytes) -> None:
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert "/Names" not in doc.Root and "/OpenAction" not in doc.Root and "/AA" not in doc.Root
        seen = 0
        for page in doc.pages:
            assert "/AA" not in page.obj and "/Annots" not in page.obj
            for font in page.Resources.Font.values():
                seen += 1
                assert font.Subtype == pikepdf.Name.TrueType
                assert "/FontFile2" in font.FontDescriptor, f"font {font.BaseFont} not embedded"
                assert "/ToUnicode" in font
        assert seen >= 2
        for obj in doc.objects:
            if isinstance(obj, pikepdf.Dictionary):
                assert obj.get("/S") != pikepdf.Name.JavaScript
                assert "/JS" not in obj


def test_says_the_plan_in_plain_french(pdf: bytes, record: PpaRecord) -> None:
    text = _text(pdf)
    ppa = record.ppa
    assert "Ce que la personne exprime" in text
    assert "Je veux continuer à marcher jusqu'au parc avec ma fille le dimanche." in text
    for wish in ppa.expression.wishes:
        assert wish in text
    for need in ppa.needs:
        assert need.description in text
    assert "Besoins pour la mobilité (1.2.1.3)" in text  # the SERAFIN-PH label, not only the code
    for goal in ppa.goals:
        assert goal.title in text and goal.description in text
    assert "objectif en cours, en amélioration" in text
    for item in ppa.prestations:
        assert item.title in text
    assert "Prestation directe au sens SERAFIN-PH" in text
    assert "Prestation indirecte au sens SERAFIN-PH : Transports liés à l'autonomie et la participation sociale" in text
    assert "Prochaine évaluation le 20 août 2024" in text
    assert "Anne LEROY — Infirmière coordinatrice" in text
    assert "refuse que ce projet soit partagé avec ViaTrajectoire" in text
    assert "Signé par la personne (version 2)" in text


def test_deterministic_and_golden(record: PpaRecord, pdf: bytes) -> None:
    again = render_ppa_pdf(record, record.ppa, version=2, created=CREATED, seed="1.2.250.1.999.1.1.1.42.11")
    assert again == pdf
    other = render_ppa_pdf(record, record.ppa, version=2, created=CREATED, seed="another document")
    assert other != pdf
    digest = hashlib.sha256(pdf).hexdigest()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(digest + "\n", encoding="ascii")
    assert GOLDEN.read_text(encoding="ascii").strip() == digest, "PDF bytes changed: UPDATE_GOLDEN=1 if intended"


def test_no_clock_inside(record: PpaRecord) -> None:
    later = render_ppa_pdf(
        record, record.ppa, version=2, created=datetime(2030, 1, 1, tzinfo=UTC), seed="1.2.250.1.999.1.1.1.42.11"
    )
    with pikepdf.open(io.BytesIO(later)) as doc:
        assert str(doc.docinfo.CreationDate) == "D:20300101000000+00'00'"


@pytest.mark.parametrize(
    ("day", "words"),
    [("2024-05-01", "1er mai 2024"), ("2024-08-20", "20 août 2024"), ("2025-12-31", "31 décembre 2025")],
)
def test_french_date(day: str, words: str) -> None:
    assert french_date(datetime.fromisoformat(day).date()) == words
