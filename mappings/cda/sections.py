"""CDA section skeletons (templateIds, LOINC code, title) for the CI-SIS sections we emit."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from mappings.base import Code
from mappings.cda.datatypes import LOINC, add, cd, ii

__all__ = [
    "ACTIVE_PROBLEMS",
    "ADVANCE_DIRECTIVES",
    "ALLERGIES",
    "ATTACHED_DOCUMENTS",
    "CODED_RESULTS",
    "COMMENT",
    "DISPOSITIONS",
    "EVENT_OUTCOMES",
    "FUNCTIONAL_STATUS",
    "IMMUNIZATIONS",
    "MEDICAL_HISTORY",
    "MEDICATIONS",
    "PERSONAL_ITEMS",
    "PLAN_OF_CARE",
    "VITAL_SIGNS",
    "SectionSpec",
    "entry",
    "section",
]


@dataclass(frozen=True)
class SectionSpec:
    """A section model: its templateId chain (IHE/CCD first, CI-SIS last), LOINC code and default title."""

    template_ids: tuple[str, ...]
    code: Code
    title: str


def _loinc(code: str, display: str) -> Code:
    return Code(code, LOINC, display)


# FR-Dispositions (ED Disposition, IHE PCC)
DISPOSITIONS = SectionSpec(
    ("1.3.6.1.4.1.19376.1.5.3.1.1.13.2.10", "1.2.250.1.213.1.1.2.172"),
    _loinc("11302-7", "Etablissement de santé de préférence"),
    "Établissement de santé de préférence",
)
# FR-Problemes-actifs
ACTIVE_PROBLEMS = SectionSpec(
    ("2.16.840.1.113883.10.20.1.11", "1.3.6.1.4.1.19376.1.5.3.1.3.6", "1.2.250.1.213.1.1.2.132"),
    _loinc("11450-4", "Liste des problèmes actifs"),
    "Pathologies actives",
)
# FR-Antecedents-medicaux
MEDICAL_HISTORY = SectionSpec(
    ("1.3.6.1.4.1.19376.1.5.3.1.3.8", "1.2.250.1.213.1.1.2.134"),
    _loinc("11348-0", "Antécédents médicaux"),
    "Antécédents médicaux",
)
# FR-Allergies-et-hypersensibilites
ALLERGIES = SectionSpec(
    ("2.16.840.1.113883.10.20.1.2", "1.3.6.1.4.1.19376.1.5.3.1.3.13", "1.2.250.1.213.1.1.2.137"),
    _loinc("48765-2", "Allergies et hypersensibilités"),
    "Allergies et intolérances",
)
# FR-Traitements
MEDICATIONS = SectionSpec(
    ("2.16.840.1.113883.10.20.1.8", "1.3.6.1.4.1.19376.1.5.3.1.3.19", "1.2.250.1.213.1.1.2.143"),
    _loinc("10160-0", "Historique de la prise médicamenteuse"),
    "Traitements en cours",
)
# FR-Plan-de-soins
PLAN_OF_CARE = SectionSpec(
    ("2.16.840.1.113883.10.20.1.10", "1.3.6.1.4.1.19376.1.5.3.1.3.36", "1.2.250.1.213.1.1.2.158"),
    _loinc("18776-5", "Plan de soins"),
    "Soins palliatifs",
)
# FR-Directives-anticipees
ADVANCE_DIRECTIVES = SectionSpec(
    (
        "2.16.840.1.113883.10.20.1.1",
        "1.3.6.1.4.1.19376.1.5.3.1.3.34",
        "1.3.6.1.4.1.19376.1.5.3.1.3.35",
        "1.2.250.1.213.1.1.2.157",
    ),
    _loinc("42348-3", "Directives anticipées"),
    "Directives anticipées",
)
# FR-Resultats-evenements (Coded Event Outcomes)
EVENT_OUTCOMES = SectionSpec(
    ("1.3.6.1.4.1.19376.1.5.3.1.1.21.2.9", "1.3.6.1.4.1.19376.1.7.3.1.1.13.7", "1.2.250.1.213.1.1.2.163"),
    _loinc("42545-4", "Evènements observés"),
    "État du patient",
)
# FR-Resultats-examens (Coded Results)
CODED_RESULTS = SectionSpec(
    ("1.3.6.1.4.1.19376.1.5.3.1.3.27", "1.3.6.1.4.1.19376.1.5.3.1.3.28", "1.2.250.1.213.1.1.2.151"),
    _loinc("30954-2", "Résultats d'examens"),
    "Résultats d'examens",
)
# FR-Vaccinations
IMMUNIZATIONS = SectionSpec(
    ("2.16.840.1.113883.10.20.1.6", "1.3.6.1.4.1.19376.1.5.3.1.3.23", "1.2.250.1.213.1.1.2.147"),
    _loinc("11369-6", "Historique des vaccinations"),
    "Vaccinations",
)
# FR-Commentaire-non-code
COMMENT = SectionSpec(
    ("2.16.840.1.113883.10.12.201", "1.3.6.1.4.1.19376.1.4.1.2.16", "1.2.250.1.213.1.1.2.73"),
    _loinc("55112-7", "Commentaire"),
    "Commentaire",
)
# FR-Documents-ajoutes
ATTACHED_DOCUMENTS = SectionSpec(
    ("1.2.250.1.213.1.1.2.37",),
    _loinc("55107-7", "Documents ajoutés"),
    "Documents joints au DLU",
)
# FR-Signes-vitaux
VITAL_SIGNS = SectionSpec(
    (
        "2.16.840.1.113883.10.20.1.16",
        "1.3.6.1.4.1.19376.1.5.3.1.3.25",
        "1.3.6.1.4.1.19376.1.5.3.1.1.5.3.2",
        "1.2.250.1.213.1.1.2.75",
    ),
    _loinc("8716-3", "Signes vitaux"),
    "Signes vitaux",
)
# FR-Statut-fonctionnel
FUNCTIONAL_STATUS = SectionSpec(
    ("1.3.6.1.4.1.19376.1.7.3.1.1.13.5", "1.2.250.1.213.1.1.2.162"),
    _loinc("47420-5", "Évaluation du statut fonctionnel"),
    "Date et heure du dernier repas",
)
# FR-Prothese-et-objet-personnel
PERSONAL_ITEMS = SectionSpec(
    ("1.2.250.1.213.1.1.2.53",),
    _loinc("46264-8", "Dispositifs médicaux"),
    "Prothèses et objets personnels",
)


def section(
    body: etree._Element, spec: SectionSpec, *, section_id: str | None = None, title: str | None = None
) -> tuple[etree._Element, etree._Element]:
    """Append ``component/section`` to a structuredBody; returns (section, text)."""
    sec = add(add(body, "component"), "section")
    for root in spec.template_ids:
        add(sec, "templateId", root=root)
    if section_id is not None:
        ii(sec, section_id)
    cd(sec, "code", spec.code, system_name="LOINC")
    add(sec, "title", title or spec.title)
    text = add(sec, "text")
    return sec, text


def entry(sec: etree._Element, **attrs: str | None) -> etree._Element:
    """Append an ``entry`` to a section."""
    return add(sec, "entry", **attrs)
