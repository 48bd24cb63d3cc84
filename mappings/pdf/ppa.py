"""The readable rendering of a PPA: a PDF/A-2b in French, for the person and Mon espace santé.

Everything is written in plain words: the person's own expression first, then needs, goals and
prestations (each SERAFIN-PH code is shown with its French label, never alone), the team, the
participation and agreements, the reviews. Pure: the creation date and the document ID come from
the caller, so the same record gives the same bytes.
"""

from __future__ import annotations

from datetime import date, datetime
from io import BytesIO
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, ListFlowable, ListItem, Paragraph, SimpleDocTemplate, Spacer

from mappings.consent import ConsentFamily
from mappings.pdf._pdfa import FONT, FONT_BOLD, FONT_ITALIC, PdfAInfo, canvas_maker, document_id
from mappings.ppa_model import (
    Achievement,
    GoalState,
    PpaStatus,
    ProjetPersonnalise,
    besoin,
    prestation,
    prestation_kind,
)
from mappings.record import DuiRecord, Professional

__all__ = ["french_date", "render_ppa_pdf"]

_MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)

STATUS_FR = {
    PpaStatus.DRAFT: "En préparation",
    PpaStatus.VALIDATED: "Validé par l'équipe et la structure",
    PpaStatus.SIGNED: "Signé par la personne",
}
GOAL_STATE_FR = {
    GoalState.PROPOSED: "proposé",
    GoalState.ACTIVE: "en cours",
    GoalState.ON_HOLD: "en pause",
    GoalState.COMPLETED: "terminé",
    GoalState.CANCELLED: "abandonné",
}
ACHIEVEMENT_FR = {
    Achievement.IN_PROGRESS: "en cours de réalisation",
    Achievement.IMPROVING: "en amélioration",
    Achievement.WORSENING: "en dégradation",
    Achievement.NO_CHANGE: "sans changement",
    Achievement.ACHIEVED: "atteint",
    Achievement.SUSTAINING: "maintenu",
    Achievement.NOT_ACHIEVED: "non atteint",
    Achievement.NO_PROGRESS: "sans progrès",
    Achievement.NOT_ATTAINABLE: "hors d'atteinte",
}
PARTNER_FR: dict[ConsentFamily, str] = {
    ConsentFamily.DMP: "Mon espace santé (DMP)",
    ConsentFamily.MSSANTE: "la messagerie sécurisée de santé (MSSanté)",
    ConsentFamily.VIATRAJECTOIRE: "ViaTrajectoire",
    ConsentFamily.SIDOBA: "les remontées statistiques (SIDOBA)",
    ConsentFamily.FHIR: "les logiciels partenaires (échanges FHIR)",
}
PARTY_FR = {"person": "La personne", "legal_representative": "Le représentant légal", "structure": "La structure"}


def french_date(value: date) -> str:
    """A date in French words, e.g. ``2 mai 2024`` (``1er`` for the first day)."""
    day = "1er" if value.day == 1 else str(value.day)
    return f"{day} {_MONTHS[value.month - 1]} {value.year}"


def _t(value: str) -> str:
    """Free text for a reportlab paragraph: escaped, line breaks kept."""
    return escape(value).replace("\r\n", "\n").replace("\n", "<br/>")


def professional_name(pro: Professional) -> str:
    """``Dr Prénom NOM`` style name of a professional."""
    parts = [p for p in ("Dr" if pro.title == "DR" else "Pr" if pro.title == "PR" else None, pro.given_name) if p]
    return " ".join([*parts, pro.family_name])


class _Styles:
    def __init__(self) -> None:
        base = {"fontName": FONT, "fontSize": 10, "leading": 13.5, "textColor": colors.black}
        self.body = ParagraphStyle("body", **base)
        self.small = ParagraphStyle("small", **{**base, "fontSize": 8.5, "leading": 11, "textColor": colors.grey})
        self.quote = ParagraphStyle(
            "quote", **{**base, "fontName": FONT_ITALIC, "leftIndent": 8 * mm, "rightIndent": 8 * mm}
        )
        self.title = ParagraphStyle("title", **{**base, "fontName": FONT_BOLD, "fontSize": 17, "leading": 21})
        self.h1 = ParagraphStyle(
            "h1",
            **{
                **base,
                "fontName": FONT_BOLD,
                "fontSize": 12.5,
                "leading": 16,
                "spaceBefore": 9,
                "spaceAfter": 3,
                "textColor": colors.HexColor("#1f4e79"),
            },
        )
        self.h2 = ParagraphStyle("h2", **{**base, "fontName": FONT_BOLD, "spaceBefore": 5, "spaceAfter": 1})


def _bullets(items: list[str], style: ParagraphStyle) -> Flowable:
    return ListFlowable(
        [ListItem(Paragraph(item, style), leftIndent=12, value="•") for item in items],
        bulletType="bullet",
        bulletFontName=FONT,
        start="•",
        leftIndent=12,
    )


def _story(record: DuiRecord, ppa: ProjetPersonnalise, version: int, s: _Styles) -> list[Flowable]:
    person = record.person
    traits = person.traits
    story: list[Flowable] = []
    add = story.append

    add(Paragraph(_t(ppa.title), s.title))
    add(Paragraph(_t(f"{record.essms.name} — FINESS {record.essms.finess}"), s.small))
    add(Spacer(1, 4 * mm))

    family = person.used_family_name or traits.birth_family_name
    given = person.used_given_name or traits.birth_given_names[0]
    born = "née" if traits.sex.value == "F" else "né"
    add(Paragraph(f"<b>Personne accompagnée :</b> {_t(given)} {_t(family.upper())}", s.body))
    if person.used_family_name and person.used_family_name != traits.birth_family_name:
        add(Paragraph(f"Nom de naissance : {_t(traits.birth_family_name)}", s.body))
    add(Paragraph(f"{born.capitalize()} le {french_date(traits.birth_date)}", s.body))
    add(Paragraph(f"<b>Statut du projet :</b> {STATUS_FR[ppa.status]} (version {version})", s.body))
    period = f"du {french_date(ppa.period_start)}"
    if ppa.period_end is not None:
        period += f" au {french_date(ppa.period_end)}"
    add(Paragraph(f"<b>Mise en œuvre :</b> {period}", s.body))
    add(Paragraph(f"<b>Élaboré le</b> {french_date(ppa.elaborated_on)}", s.body))
    if ppa.intermediate_review_on is not None:
        add(Paragraph(f"<b>Bilan intermédiaire prévu le</b> {french_date(ppa.intermediate_review_on)}", s.body))
    add(Paragraph(f"<b>Prochaine évaluation le</b> {french_date(ppa.next_evaluation_on)}", s.body))
    referent = ppa.contributor(ppa.referent)
    add(
        Paragraph(
            f"<b>Professionnel référent :</b> {_t(professional_name(referent.professional))} ({_t(referent.role)})",
            s.body,
        )
    )

    # 1. The person's own words come first (self-determination).
    expr = ppa.expression
    add(Paragraph("Ce que la personne exprime", s.h1))
    add(Paragraph(f"Propos recueillis le {french_date(expr.expressed_on)} :", s.body))
    add(Paragraph(f"« {_t(expr.own_words)} »", s.quote))
    if expr.wishes:
        add(Paragraph("Ses souhaits", s.h2))
        add(_bullets([_t(w) for w in expr.wishes], s.body))
    if expr.life_project:
        add(Paragraph("Son projet de vie", s.h2))
        add(Paragraph(_t(expr.life_project), s.body))
    if expr.family_expression:
        add(Paragraph("Ce qu'exprime l'entourage", s.h2))
        add(Paragraph(_t(expr.family_expression), s.body))

    # 2. Needs (SERAFIN-PH J285), in words.
    add(Paragraph("Besoins identifiés", s.h1))
    for need in ppa.needs:
        code = besoin(need.code)
        add(Paragraph(_t(need.description), s.h2))
        add(Paragraph(f"Besoin au sens SERAFIN-PH : {_t(code.display)} ({code.code})", s.small))
        if need.analysis:
            add(Paragraph(f"Analyse de l'équipe : {_t(need.analysis)}", s.body))

    # 3. Goals.
    add(Paragraph("Objectifs", s.h1))
    for goal in ppa.goals:
        add(Paragraph(_t(goal.title), s.h2))
        add(Paragraph(_t(goal.description), s.body))
        lines = [f"Répond au besoin : {_t(ppa.need(goal.need_id).description)}"]
        state = f"Où en est-on : objectif {GOAL_STATE_FR[goal.state]}"
        if goal.achievement is not None:
            state += f", {ACHIEVEMENT_FR[goal.achievement]}"
        lines.append(state)
        if goal.expected_result:
            lines.append(f"Résultat attendu : {_t(goal.expected_result)}")
        if goal.due_date:
            lines.append(f"Échéance : {french_date(goal.due_date)}")
        if goal.strategy:
            lines.append(f"Comment y parvenir : {_t(goal.strategy)}")
        if goal.person_opinion:
            lines.append(f"Avis de la personne : « {_t(goal.person_opinion)} »")
        add(_bullets(lines, s.body))

    # 4. Prestations (SERAFIN-PH J284 direct / J283 indirect).
    add(Paragraph("Prestations mises en place", s.h1))
    for item in ppa.prestations:
        code = prestation(item.code)
        kind = "prestation directe" if prestation_kind(item.code) == "directe" else "prestation indirecte"
        add(Paragraph(_t(item.title), s.h2))
        add(Paragraph(f"{kind.capitalize()} au sens SERAFIN-PH : {_t(code.display)} ({code.code})", s.small))
        lines = ["Pour : " + "; ".join(_t(ppa.need(n).description) for n in item.need_ids)]
        if item.responsible is not None:
            who = ppa.contributor(item.responsible)
            lines.append(f"Assurée par : {_t(professional_name(who.professional))} ({_t(who.role)})")
        if item.frequency:
            lines.append(f"Fréquence : {_t(item.frequency)}")
        if item.start or item.end:
            span = f"à partir du {french_date(item.start)}" if item.start else ""
            if item.end:
                span += (" " if span else "") + f"jusqu'au {french_date(item.end)}"
            lines.append(f"Période : {span}")
        add(_bullets(lines, s.body))

    # 5. Team, participation, agreements, sharing.
    add(Paragraph("Professionnels ayant contribué", s.h1))
    add(_bullets([f"{_t(professional_name(c.professional))} — {_t(c.role)}" for c in ppa.contributors], s.body))

    add(Paragraph("Participation et accord", s.h1))
    took_part = "a participé" if ppa.person_participated else "n'a pas participé"
    add(Paragraph(f"La personne {took_part} à l'élaboration de son projet.", s.body))
    if ppa.legal_representative_participated is not None:
        rep = "a participé" if ppa.legal_representative_participated else "n'a pas participé"
        add(Paragraph(f"Son représentant légal {rep} à l'élaboration du projet.", s.body))
    for agreement in ppa.agreements:
        verb = "a donné son accord" if agreement.agreed else "a refusé le projet"
        text = f"{PARTY_FR[agreement.party]} {verb} le {french_date(agreement.on)}"
        if agreement.by is not None:
            text += f" (pour la structure : {_t(professional_name(ppa.contributor(agreement.by).professional))})"
        if agreement.comment:
            text += f" : « {_t(agreement.comment)} »"
        add(Paragraph(text + ".", s.body))
    if ppa.sharing_refusals:
        for refusal in ppa.sharing_refusals:
            refuser = "La personne" if refusal.by == "person" else "Le représentant légal"
            add(
                Paragraph(
                    f"{refuser} refuse que ce projet soit partagé avec {PARTNER_FR[refusal.partner]} "
                    f"(depuis le {french_date(refusal.on)}).",
                    s.body,
                )
            )

    if ppa.reviews:
        add(Paragraph("Bilans", s.h1))
        for review in ppa.reviews:
            kind = "Bilan intermédiaire" if review.kind == "intermediate" else "Bilan final"
            add(Paragraph(f"{kind} du {french_date(review.on)}", s.h2))
            present = "en présence de la personne" if review.person_present else "en l'absence de la personne"
            names = [professional_name(ppa.contributor(k).professional) for k in review.participants]
            if names:
                present += ", avec " + ", ".join(_t(n) for n in names)
            add(Paragraph(present.capitalize() + ".", s.small))
            add(Paragraph(_t(review.synthesis), s.body))

    if ppa.communication:
        add(Paragraph("Comment ce projet est communiqué", s.h1))
        add(Paragraph(_t(ppa.communication), s.body))
    return story


def render_ppa_pdf(
    record: DuiRecord,
    ppa: ProjetPersonnalise,
    *,
    version: int,
    created: datetime,
    seed: str,
) -> bytes:
    """The PDF/A-2b of a PPA; ``created`` is its creation date, ``seed`` fixes its document ID."""
    info = PdfAInfo(
        title=f"{ppa.title} (version {version})",
        author=record.essms.name,
        subject="Projet personnalisé d'accompagnement",
        keywords="projet personnalisé, PPA, SERAFIN-PH",
        created=created,
        document_id=document_id(seed),
    )
    buffer = BytesIO()
    styles = _Styles()

    def footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 8)
        canvas.setFillColor(colors.grey)
        canvas.drawString(20 * mm, 10 * mm, f"{ppa.title} — version {version}")
        canvas.drawRightString(A4[0] - 20 * mm, 10 * mm, f"page {doc.page}")
        canvas.restoreState()

    template = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=18 * mm,
        bottomMargin=18 * mm,
        title=info.title,
        author=info.author,
        subject=info.subject,
        lang=info.lang,
        initialFontName=FONT,
    )
    template.build(
        _story(record, ppa, version, styles),
        onFirstPage=footer,
        onLaterPages=footer,
        canvasmaker=canvas_maker(info),
    )
    return buffer.getvalue()
