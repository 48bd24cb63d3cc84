"""Content of a projet personnalisé d'accompagnement (PPA), as a DUI describes it.

The PPA is co-built with the person (self-determination) by a pluri-professional team, reviewed
at least every six months, and expressed with the SERAFIN-PH nomenclature: needs (besoins,
JDV_J285) answered by direct (JDV_J284) or indirect (JDV_J283) prestations, all on the code
system ``1.2.250.1.213.3.3.60``. See ``shared/specs/ppa.md``; the FHIR shape follows ANS TDDUI 2.2+
(CarePlan, Goal, ServiceRequest, Task, Consent).

Members of the team are referenced inside the PPA by a short ``key`` (``Contributor.key``); goals,
needs and prestations reference each other by their ``id``. Validators only compare fields of the
record with each other (never with the clock).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from mappings.base import Code
from mappings.consent import ConsentFamily
from mappings.record import Label, Professional, Text

__all__ = [
    "SERAFIN_SYSTEM_FHIR",
    "SERAFIN_SYSTEM_OID",
    "Achievement",
    "Agreement",
    "Contributor",
    "GoalState",
    "Need",
    "PersonExpression",
    "PpaGoal",
    "PpaStatus",
    "Prestation",
    "ProjetPersonnalise",
    "Review",
    "SharingRefusal",
    "besoin",
    "prestation",
    "prestation_kind",
]

SERAFIN_SYSTEM_OID = "1.2.250.1.213.3.3.60"
"""TRE SERAFIN-PH code system (besoins and prestations)."""
SERAFIN_SYSTEM_FHIR = "https://smt.esante.gouv.fr/terminologie-SERAFINPH"
"""The same code system as the ANS terminology server names it (compose.include.system of JDV_J285 in FHIR)."""

MAX_REVIEW_INTERVAL_DAYS = 184
"""A PPA is reviewed at least every six months: the next evaluation is at most 184 days after the last one."""

# SERAFIN-PH value sets, extracted from the CI-SIS kit's jeuxDeValeurs/JDV_J28[3-5]_*_SERAFIN.xml
# (tests/mappings/test_ppa_model.py checks them against the kit). code -> display name.
_J285_BESOINS: dict[str, str] = {  # 1.2.250.1.213.3.3.254
    "1": "Besoins",
    "1.1": "Besoins en matière de santé somatique ou psychique",
    "1.1.1": "Besoins en matière de fonctions mentales, psychiques, cognitives et du système nerveux",
    "1.1.10": "Besoins pour entretenir et prendre soin de sa santé",
    "1.1.2": "Besoins en matière de fonctions sensorielles",
    "1.1.3": "Besoins en matière de douleur",
    "1.1.4": "Besoins relatifs à la voix, à la parole et à l'appareil bucco-dentaire",
    "1.1.5": "Besoins en matière de fonctions cardio-vasculaire, hématopoïétique, immunitaire et respiratoire",
    "1.1.6": "Besoins en matière de fonctions digestive, métabolique et endocrinienne",
    "1.1.7": "Besoins en matière de fonctions génito-urinaire et reproductive",
    "1.1.8": "Besoins en matière de fonctions locomotrices",
    "1.1.9": "Besoins relatifs à la peau et aux structures associées",
    "1.2": "Besoins en matière d'autonomie",
    "1.2.1": "Besoins en matière d'autonomie",
    "1.2.1.1": "Besoins en lien avec l'entretien personnel",
    "1.2.1.2": "Besoins en lien avec les relations et les interactions avec autrui",
    "1.2.1.3": "Besoins pour la mobilité",
    "1.2.1.4": "Besoins pour prendre des décisions adaptées et pour la sécurité",
    "1.3": "Besoins pour la participation sociale",
    "1.3.1": "Besoins pour accéder aux droits et à la citoyenneté",
    "1.3.1.1": "Besoins pour accéder aux droits et à la citoyenneté",
    "1.3.2": "Besoins pour vivre dans un logement et accomplir les activités domestiques",
    "1.3.2.1": "Besoins pour vivre dans un logement",
    "1.3.2.2": "Besoins pour accomplir les activités domestiques",
    "1.3.3": "Besoins pour l'insertion sociale et professionnelle et pour exercer ses rôles sociaux",
    "1.3.3.1": "Besoins en lien avec la vie scolaire et étudiante",
    "1.3.3.2": "Besoins en lien avec le travail et l'emploi",
    "1.3.3.3": "Besoins transversaux en matière d'apprentissages",
    "1.3.3.4": "Besoins pour la vie familiale, la parentalité, la vie affective et sexuelle",
    "1.3.3.5": "Besoins pour apprendre à être pair-aidant",
    "1.3.4": "Besoins pour participer à la vie sociale et se déplacer avec un moyen de transport",
    "1.3.4.1": "Besoins pour participer à la vie sociale",
    "1.3.4.2": "Besoins pour se déplacer avec un moyen de transport",
    "1.3.5": "Besoins en matière de ressources et d'autosuffisance économique",
    "1.3.5.1": "Besoins en matière de ressources et d'autosuffisance économique",
}
_J284_PRESTATIONS_DIRECTES: dict[str, str] = {  # 1.2.250.1.213.3.3.253
    "2": "Prestations directes - Soins et d'accompagnement",
    "2.1": "Prestations de soins, de maintien et de développement des capacités fonctionnelles",
    "2.1.1": "Soins somatiques et psychiques",
    "2.1.1.1": "Soins médicaux à visée préventive, curative et palliative",
    "2.1.1.2": "Soins techniques et de surveillance infirmiers ou délégués",
    "2.1.1.3": "Prestations des psychologues",
    "2.1.1.4": "Prestations des pharmaciens et préparateurs en pharmacie",
    "2.1.2": "Rééducation et réadaptation fonctionnelle",
    "2.1.2.1": "Prestations des auxiliaires médicaux, des instructeurs en locomotion et avéjistes",
    "2.2": "Prestations en matière d'autonomie",
    "2.2.1": "Accompagnements pour les actes de la vie quotidienne",
    "2.2.2": "Accompagnements pour la communication et les relations avec autrui",
    "2.2.3": "Accompagnements pour prendre des décisions adaptées et pour la sécurité",
    "2.3": "Prestations pour la participation sociale",
    "2.3.1": "Accompagnements pour exercer ses droits",
    "2.3.1.1": "Accompagnements à l'expression du projet personnalisé",
    "2.3.1.2": "Accompagnements à l'exercice des droits et libertés",
    "2.3.2": "Accompagnements au logement",
    "2.3.2.1": "Accompagnements pour vivre dans un logement",
    "2.3.2.2": "Accompagnements pour accomplir les activités domestiques",
    "2.3.3": "Accompagnements pour exercer ses rôles sociaux",
    "2.3.3.1": "Accompagnements pour mener sa vie d'élève, d'étudiant ou d'apprenti",
    "2.3.3.2": "Accompagnements pour préparer sa vie professionnelle",
    "2.3.3.3": "Accompagnements pour mener sa vie professionnelle",
    "2.3.3.4": "Accompagnements pour réaliser des activités de jour spécialisées",
    "2.3.3.5": "Accompagnements de la vie familiale, de la parentalité, de la vie affective et sexuelle",
    "2.3.3.6": "Accompagnements pour l'exercice de mandats électoraux, la représentation des pairs et la pair aidance",
    "2.3.4": "Accompagnements pour participer à la vie sociale",
    "2.3.4.1": "Accompagnements du lien avec les proches et le voisinage",
    "2.3.4.2": "Accompagnements pour la participation aux activités sociales et de loisirs",
    "2.3.4.3": "Accompagnements pour le développement de l'autonomie pour les déplacements",
    "2.3.5": "Accompagnements en matière de ressources et d'autogestion",
    "2.3.5.1": "Accompagnements pour l'ouverture des droits",
    "2.3.5.2": "Accompagnements pour l'autonomie de la personne dans la gestion des ressources",
    "2.3.5.3": "Informations, conseils et mise en oeuvre des mesures de protection des adultes",
    "2.4": "Prestation de coordination renforcée pour la cohérence du parcours",
    "2.4.1": "Prestation de coordination renforcée pour la cohérence du parcours",
}
_J283_PRESTATIONS_INDIRECTES: dict[str, str] = {  # 1.2.250.1.213.3.3.252
    "3": "Prestations indirectes - Pilotage et fonctions supports",
    "3.1": "Fonctions Gérer, manager, coopérer",
    "3.1.1": "Gestion des ressources humaines",
    "3.1.1.1": "Pilotage et direction",
    "3.1.1.2": (
        "Gestion des ressources humaines, de la Gestion previsionnelle des emplois et des competences et du"
        " dialogue socIal"
    ),
    "3.1.2": "Gestion administrative, budgétaire, financière et comptable",
    "3.1.2.1": "Gestion budgétaire, financière et comptable",
    "3.1.2.2": "Gestion administrative",
    "3.1.3": "Information et communication",
    "3.1.3.1": "Communication (interne et externe), statistiques, rapport annuel et documents collectifs 2002-2",
    "3.1.3.2": (
        "Gestion des données des personnes accueillies, système d'information, informatique, TIC, archivage"
        " informatique des données, GED"
    ),
    "3.1.4": "Qualité et sécurité",
    "3.1.4.1": "Démarche d'amélioration continue de la qualité",
    "3.1.4.2": "Analyse des pratiques, espaces ressource et soutien aux personnels",
    "3.1.4.3": "Prestations de supervision",
    "3.1.5": "Relations avec le territoire",
    "3.1.5.1": "Coopérations, conventions avec les acteurs spécialisés et du droit commun",
    "3.1.5.2": "Appui-Ressources et partenariats institutionnels",
    "3.1.6": "Transports liés à gérer, manager, coopérer",
    "3.2": "Fonctions logistiques",
    "3.2.1": "Locaux et autres ressources pour accueillir",
    "3.2.1.1": "Locaux et autres ressources pour héberger",
    "3.2.1.2": "Locaux et autres ressources pour accueillir le jour",
    "3.2.1.3": (
        "Locaux et autres ressources pour réaliser des prestations de soins, de maintien et de développement"
        " des capacités fonctionnelles"
    ),
    "3.2.1.4": "Locaux et autres ressources pour gérer, manager, coopérer",
    "3.2.1.5": "Hygiène, entretien, sécurité des locaux, espaces extérieurs",
    "3.2.2": "Fournir des repas",
    "3.2.2.1": "Fournir des repas",
    "3.2.3": "Entretenir le linge",
    "3.2.3.1": "Entretenir le linge",
    "3.2.4": "Transports liés au projet individuel",
    "3.2.4.1": "Transports liés à accueillir (domicile-structure)",
    "3.2.4.2": "Transports liés aux prestations de soins, de maintien et de developpement des capacités fonctionnelles",
    "3.2.4.3": "Transports liés à l'autonomie et la participation sociale",
    "3.2.5": "Transports des biens et matériels liés à la restauration et à l'entretien du linge",
}

BESOINS_OID = "1.2.250.1.213.3.3.254"
PRESTATIONS_DIRECTES_OID = "1.2.250.1.213.3.3.253"
PRESTATIONS_INDIRECTES_OID = "1.2.250.1.213.3.3.252"


def besoin(code: str) -> Code:
    """The SERAFIN-PH need (JDV_J285) for ``code``; ``KeyError`` when it is not a need."""
    return Code(code=code, system=SERAFIN_SYSTEM_OID, display=_J285_BESOINS[code])


def prestation(code: str) -> Code:
    """The SERAFIN-PH prestation (JDV_J284 direct or JDV_J283 indirect) for ``code``; ``KeyError`` otherwise."""
    display = _J284_PRESTATIONS_DIRECTES.get(code) or _J283_PRESTATIONS_INDIRECTES[code]
    return Code(code=code, system=SERAFIN_SYSTEM_OID, display=display)


def prestation_kind(code: str) -> Literal["directe", "indirecte"]:
    """Whether a prestation code is direct (soins et accompagnement, J284) or indirect (pilotage/supports, J283)."""
    if code in _J284_PRESTATIONS_DIRECTES:
        return "directe"
    if code in _J283_PRESTATIONS_INDIRECTES:
        return "indirecte"
    raise KeyError(code)


def value_set_codes(name: Literal["J283", "J284", "J285"]) -> list[str]:
    """The codes of one SERAFIN-PH value set (for tests and strategies)."""
    table = {"J283": _J283_PRESTATIONS_INDIRECTES, "J284": _J284_PRESTATIONS_DIRECTES, "J285": _J285_BESOINS}[name]
    return list(table)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

LocalId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9]{1,20}$",
        description="Identifier of the item inside the DUI (letters and digits; used in TDDUI business identifiers).",
    ),
]


def _besoin_code(value: str) -> str:
    if value not in _J285_BESOINS:
        raise ValueError("not a SERAFIN-PH need (JDV_J285_Besoins_SERAFIN)")
    return value


def _prestation_code(value: str) -> str:
    if value not in _J284_PRESTATIONS_DIRECTES and value not in _J283_PRESTATIONS_INDIRECTES:
        raise ValueError("not a SERAFIN-PH prestation (JDV_J284 directes / JDV_J283 indirectes)")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PpaStatus(StrEnum):
    """Where the PPA stands: drafted, validated by the team and the structure, signed by the person."""

    DRAFT = "draft"
    VALIDATED = "validated"
    SIGNED = "signed"


class GoalState(StrEnum):
    """Lifecycle of a goal (FHIR Goal.lifecycleStatus)."""

    PROPOSED = "proposed"
    ACTIVE = "active"
    ON_HOLD = "on-hold"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Achievement(StrEnum):
    """How far a goal is achieved (FHIR goal-achievement codes)."""

    IN_PROGRESS = "in-progress"
    IMPROVING = "improving"
    WORSENING = "worsening"
    NO_CHANGE = "no-change"
    ACHIEVED = "achieved"
    SUSTAINING = "sustaining"
    NOT_ACHIEVED = "not-achieved"
    NO_PROGRESS = "no-progress"
    NOT_ATTAINABLE = "not-attainable"


class Contributor(_Model):
    """A professional who contributed to the PPA, with their role in it."""

    key: LocalId = Field(description="Short key other parts of the PPA use to name this professional.")
    professional: Professional = Field(description="Who.")
    role: Label = Field(description="Role in the PPA, in plain words (e.g. 'Infirmière coordinatrice').")


class PersonExpression(_Model):
    """What the person says, in their own words: expectations, wishes, life project."""

    own_words: Text = Field(description="The person's expression of their expectations, as they put it.")
    wishes: list[Label] = Field(default_factory=list, max_length=30, description="Wishes (attentes), one per item.")
    life_project: Text | None = Field(default=None, description="Projet de vie, when expressed.")
    family_expression: Text | None = Field(default=None, description="Expectations of the family or close persons.")
    expressed_on: date = Field(description="When the person expressed them.")


class Need(_Model):
    """A need assessed by the team, coded with SERAFIN-PH (JDV_J285)."""

    id: LocalId = Field(description="Identifier of the need in the DUI.")
    code: Annotated[str, AfterValidator(_besoin_code)] = Field(
        description="SERAFIN-PH need code (JDV_J285, e.g. 1.2.1.3 besoins pour la mobilité).", examples=["1.2.1.3"]
    )
    description: Label = Field(description="The need in plain words.")
    analysis: Text | None = Field(default=None, description="Professional analysis of the need.")


class PpaGoal(_Model):
    """An objective of the PPA answering one need."""

    id: LocalId = Field(description="Identifier of the goal in the DUI.")
    title: Label = Field(description="Short title.")
    description: Text = Field(description="The goal in plain words.")
    need_id: LocalId = Field(description="The need this goal addresses (Need.id).")
    expected_result: Label | None = Field(default=None, description="Expected result.")
    due_date: date | None = Field(default=None, description="When it should be reached.")
    state: GoalState = Field(default=GoalState.ACTIVE, description="Lifecycle of the goal.")
    achievement: Achievement | None = Field(default=None, description="How far it is achieved.")
    person_opinion: Text | None = Field(default=None, description="The person's opinion on this goal.")
    strategy: Text | None = Field(default=None, description="How the team intends to reach it.")

    @model_validator(mode="after")
    def _achievement(self) -> Self:
        if self.state is GoalState.COMPLETED and self.achievement is None:
            raise ValueError("a completed goal states its achievement")
        return self


class Prestation(_Model):
    """A prestation answering needs: direct (J284) or indirect (J283), with who delivers it."""

    id: LocalId = Field(description="Identifier of the prestation in the DUI.")
    code: Annotated[str, AfterValidator(_prestation_code)] = Field(
        description="SERAFIN-PH prestation code (JDV_J284 directes or JDV_J283 indirectes).", examples=["2.2.1"]
    )
    title: Label = Field(description="The prestation in plain words.")
    need_ids: list[LocalId] = Field(min_length=1, max_length=20, description="Needs it answers (Need.id).")
    goal_ids: list[LocalId] = Field(default_factory=list, max_length=20, description="Goals it serves (PpaGoal.id).")
    responsible: LocalId | None = Field(default=None, description="Contributor.key of the professional in charge.")
    start: date | None = Field(default=None, description="Start.")
    end: date | None = Field(default=None, description="End.")
    frequency: Label | None = Field(default=None, description="How often, in plain words (e.g. '2 fois par semaine').")

    @model_validator(mode="after")
    def _period(self) -> Self:
        if self.start and self.end and self.end < self.start:
            raise ValueError("end is before start")
        return self


class Agreement(_Model):
    """An agreement (accord) on the PPA: by the person, their legal representative or the structure."""

    party: Literal["person", "legal_representative", "structure"] = Field(description="Who agrees (or refuses).")
    agreed: bool = Field(description="True when they agree, false when they refuse.")
    on: date = Field(description="Date of the agreement or refusal.")
    by: LocalId | None = Field(default=None, description="Contributor.key of who signed for the structure.")
    comment: Text | None = Field(default=None, description="What they said.")

    @model_validator(mode="after")
    def _by(self) -> Self:
        if self.party == "structure" and self.by is None:
            raise ValueError("the structure's agreement names the professional who gave it (by)")
        if self.party != "structure" and self.by is not None:
            raise ValueError("'by' is only for the structure's agreement")
        return self


class SharingRefusal(_Model):
    """The person (or their representative) refuses that this PPA be shared with a partner."""

    partner: ConsentFamily = Field(
        description="Consent family refused (dmp = the DMP and Mon espace santé, mssante = MSSanté messaging)."
    )
    on: date = Field(description="When the refusal was expressed.")
    by: Literal["person", "legal_representative"] = Field(default="person", description="Who refused.")


class Review(_Model):
    """A review (bilan) of the PPA."""

    on: date = Field(description="Date of the review.")
    kind: Literal["intermediate", "final"] = Field(default="intermediate", description="Intermediate or final.")
    participants: list[LocalId] = Field(default_factory=list, max_length=30, description="Contributor keys present.")
    person_present: bool = Field(default=True, description="Whether the person took part.")
    synthesis: Text = Field(description="Synthesis of the review.")


class ProjetPersonnalise(_Model):
    """A person's projet personnalisé d'accompagnement."""

    id: LocalId = Field(description="Identifier of the PPA in the DUI (stable across versions).")
    title: Label = Field(default="Projet personnalisé d'accompagnement", description="Title.")
    status: PpaStatus = Field(description="draft, validated (team and structure) or signed (by the person).")
    period_start: date = Field(description="Start of the implementation (mise en œuvre).")
    period_end: date | None = Field(default=None, description="End of the implementation.")
    elaborated_on: date = Field(description="Date of elaboration (co-construction meeting).")
    intermediate_review_on: date | None = Field(default=None, description="Planned intermediate review.")
    next_evaluation_on: date = Field(description="Next evaluation: at most six months after the last one.")
    expression: PersonExpression = Field(description="The person's own expression and wishes.")
    needs: list[Need] = Field(min_length=1, max_length=35, description="Needs (SERAFIN-PH J285).")
    goals: list[PpaGoal] = Field(min_length=1, max_length=50, description="Goals.")
    prestations: list[Prestation] = Field(
        min_length=1, max_length=72, description="Prestations answering the needs (SERAFIN-PH J284/J283)."
    )
    contributors: list[Contributor] = Field(min_length=1, max_length=30, description="Professionals who contributed.")
    referent: LocalId = Field(description="Contributor.key of the referent professional.")
    person_participated: bool = Field(description="Whether the person took part in building the PPA.")
    legal_representative_participated: bool | None = Field(
        default=None, description="Whether the legal representative took part (null: no representative)."
    )
    agreements: list[Agreement] = Field(default_factory=list, max_length=10, description="Agreements and refusals.")
    sharing_refusals: list[SharingRefusal] = Field(
        default_factory=list, max_length=5, description="Partners the person refuses this PPA be shared with."
    )
    reviews: list[Review] = Field(default_factory=list, max_length=50, description="Reviews already held.")
    communication: Text | None = Field(default=None, description="How the PPA is communicated to the person.")

    @field_validator("needs")
    @classmethod
    def _unique_needs(cls, value: list[Need]) -> list[Need]:
        _unique([n.id for n in value], "needs")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        _unique([g.id for g in self.goals], "goals")
        _unique([p.id for p in self.prestations], "prestations")
        _unique([c.key for c in self.contributors], "contributors")
        _unique([r.partner for r in self.sharing_refusals], "sharing_refusals")
        need_ids = {n.id for n in self.needs}
        goal_ids = {g.id for g in self.goals}
        keys = {c.key for c in self.contributors}
        if self.referent not in keys:
            raise ValueError(f"referent {self.referent!r} is not a contributor key")
        for goal in self.goals:
            if goal.need_id not in need_ids:
                raise ValueError(f"goal {goal.id!r} addresses unknown need {goal.need_id!r}")
        for item in self.prestations:
            for need_id in item.need_ids:
                if need_id not in need_ids:
                    raise ValueError(f"prestation {item.id!r} answers unknown need {need_id!r}")
            for goal_id in item.goal_ids:
                if goal_id not in goal_ids:
                    raise ValueError(f"prestation {item.id!r} serves unknown goal {goal_id!r}")
            if item.responsible is not None and item.responsible not in keys:
                raise ValueError(f"prestation {item.id!r} names unknown contributor {item.responsible!r}")
        for agreement in self.agreements:
            if agreement.by is not None and agreement.by not in keys:
                raise ValueError(f"agreement names unknown contributor {agreement.by!r}")
        for review in self.reviews:
            for key in review.participants:
                if key not in keys:
                    raise ValueError(f"a review names unknown contributor {key!r}")
        self._check_dates()
        self._check_status()
        return self

    def _check_dates(self) -> None:
        if self.period_end is not None and self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        if self.expression.expressed_on > self.elaborated_on:
            raise ValueError("expression.expressed_on is after elaborated_on: the person speaks first")
        if self.next_evaluation_on <= self.elaborated_on:
            raise ValueError("next_evaluation_on must be after elaborated_on")
        if self.intermediate_review_on is not None and not (
            self.elaborated_on < self.intermediate_review_on <= self.next_evaluation_on
        ):
            raise ValueError("intermediate_review_on must fall between elaborated_on and next_evaluation_on")
        last = max([self.elaborated_on, *(r.on for r in self.reviews)])
        if (self.next_evaluation_on - last).days > MAX_REVIEW_INTERVAL_DAYS:
            raise ValueError(
                "next_evaluation_on is more than six months after the last evaluation: a PPA is reviewed "
                "at least every six months"
            )
        for review in self.reviews:
            if review.on < self.elaborated_on:
                raise ValueError("a review is before elaborated_on")
        for agreement in self.agreements:
            if agreement.on < self.expression.expressed_on:
                raise ValueError("an agreement is dated before the person's expression")

    def _check_status(self) -> None:
        structure = [a for a in self.agreements if a.party == "structure" and a.agreed]
        person = [a for a in self.agreements if a.party in ("person", "legal_representative") and a.agreed]
        if self.status is not PpaStatus.DRAFT and not structure:
            raise ValueError(f"a {self.status.value} PPA carries the structure's agreement")
        if self.status is PpaStatus.SIGNED and not person:
            raise ValueError("a signed PPA carries the agreement of the person or of their legal representative")

    def contributor(self, key: str) -> Contributor:
        """The contributor with this key."""
        return next(c for c in self.contributors if c.key == key)

    def need(self, need_id: str) -> Need:
        """The need with this id."""
        return next(n for n in self.needs if n.id == need_id)


def _unique(values: list[str], where: str) -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"{where} has duplicate identifiers")
