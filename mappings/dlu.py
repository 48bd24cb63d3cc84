"""DLU document type: a :class:`~mappings.record.DluRecord` to CI-SIS CDA R2 N3 renditions.

- ``cda``: DLU-EHPAD-DLU 2022.01 (dossier de liaison d'urgence), always;
- ``fludt-cda``: DLU-EHPAD-FLUDT 2022.01 (fiche de liaison EHPAD → urgences), when the record
  carries a transfer;
- ``fhir``: added by ``mappings.dlu_fhir.to_fhir`` when that module is installed.

Pure and deterministic: identifiers derive from ``ctx.submission_id`` / ``ctx.id_root`` (or, for
the FLUDT series, from the transfer itself), times from the record and ``ctx.now``. OIDs under
``id_root``: ``.1.<submission>`` DLU document, ``.2.<submission>`` FLUDT document, ``.3.<submission>``
DLU series (setId), ``.4.<uuid5 of the transfer>`` FLUDT series, ``.5.<FINESS>`` local person ids
when the ESSMS has no OID of its own. A submission id takes up to 39 digits, so ``id_root`` must
stay within 22 characters for ids to fit the 64-character limit (checked: :class:`MappingFailed`).

The INS is written only when the identity is qualifiée (RNIV); otherwise the person is identified
by the DUI local id under the ESSMS's OID, and :func:`DluDocumentType.facts` tells the router
that DMP/MSSanté patient routing is not allowed.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable
from datetime import date, datetime
from typing import ClassVar

from lxml import etree
from pydantic import BaseModel

from mappings import valuesets
from mappings.base import (
    Code,
    ExchangeMetadata,
    MappingFailed,
    PreviousVersion,
    RecordFacts,
    RenderContext,
    Rendition,
)
from mappings.cda import entries, header, sections
from mappings.cda.datatypes import CIM10, LOINC, TA_ASIP, Ids, add, new_document
from mappings.cda.narrative import Narrative, Ref, lines, yes_no
from mappings.dlu_fhir import to_fhir
from mappings.record import (
    DluRecord,
    HealthEstablishment,
    exchange_identity,
    facts,
    ins_refusal,
    local_person_root,
)

__all__ = [
    "DLU",
    "DLU_MODEL",
    "FLUDT_MODEL",
    "DluDocumentType",
    "render_dlu",
    "render_fludt",
]

DLU_MODEL = "DLU-EHPAD-DLU_2022.01"
FLUDT_MODEL = "DLU-EHPAD-FLUDT_2022.01"

DLU_TEMPLATE = ("1.2.250.1.213.1.1.1.22", "2022.01")
FLUDT_TEMPLATE = ("1.2.250.1.213.1.1.1.23", "2022.01")
DOC_CODE = Code("74207-2", LOINC, "Dossier de liaison d'urgence")
DLU_EVENT = Code("34117-2", LOINC, "Historique et clinique")
FLUDT_EVENT = Code("28651-8", LOINC, "Transfert du patient")
# XDS classCode of 74207-2 (ASS_X04 is not in the kit): 11 "Synthèse" on TRE_A03 — to confirm.
CLASS_CODE = Code("11", "1.2.250.1.213.1.1.4.1", "Synthèse")
FORMAT_SYSTEM = "1.2.250.1.213.1.1.4.2.282"
DLU_FORMAT = Code("urn:asip:ci-sis:dlu:2015", FORMAT_SYSTEM, "CI-SIS DLU")
FLUDT_FORMAT = Code("urn:asip:ci-sis:fludt:2017", FORMAT_SYSTEM, "CI-SIS FLUDT")
CONFIDENTIALITY_SYSTEM = "2.16.840.1.113883.5.25"
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_MAX_OID = 64  # XDS uniqueId / CDA id length limit

_CONSCIOUSNESS = {
    "DLU_002": "Conscient et éveillé",
    "DLU_003": "Éveillable",
    "DLU_004": "Non éveillable",
}
_ALLERGY_LABEL = {
    "food": "Alimentaire",
    "medication": "Médicamenteuse",
    "environment": "Environnementale",
    "other": "Autre",
}
_UNIT_LABEL = {"h": "heure(s)", "d": "jour(s)", "wk": "semaine(s)", "mo": "mois"}


# --------------------------------------------------------------------------------------------
# Identifiers and versions
# --------------------------------------------------------------------------------------------


def _check_oid(value: str, what: str) -> str:
    if not _OID.match(value):
        raise MappingFailed(f"{what} {value!r} is not a valid OID (check the deployment id_root)")
    if len(value) > _MAX_OID:
        raise MappingFailed(
            f"{what} is {len(value)} characters long; OIDs must stay within {_MAX_OID} (id_root too long)"
        )
    return value


def _series(
    kind: str, ctx: RenderContext, new_set_id: str, document_id: str
) -> tuple[str, int, PreviousVersion | None]:
    """(set_id, version, replaced) for the next document of a series, from the render context.

    The DLU continues the person's DLU series; a FLUDT continues the series of *its* transfer
    (one series per transfer, found by its setId). ``replaced`` is the version a destination
    received (or will), None when no earlier version reached anybody.
    """
    previous = ctx.previous_of(kind, new_set_id if kind == "fludt-cda" else None)
    if previous is None:
        return new_set_id, 1, None
    if previous.document_id == document_id:
        raise MappingFailed(
            f"previous {kind} version has this submission's document id: same submission rendered twice?"
        )
    return previous.set_id, previous.version + 1, previous if previous.document_id is not None else None


# --------------------------------------------------------------------------------------------
# Narrative helpers
# --------------------------------------------------------------------------------------------


def _day(value: date | None) -> str:
    return value.strftime("%d/%m/%Y") if value else ""


def _moment(value: datetime | None) -> str:
    return value.strftime("%d/%m/%Y %H:%M") if value else "non renseigné"


def _establishment_text(est: HealthEstablishment) -> str:
    parts = [est.name]
    if est.address is not None:
        parts.extend(est.address.lines)
        city = " ".join(p for p in (est.address.postal_code, est.address.city) if p)
        if city:
            parts.append(city)
    parts.extend(item.value for item in est.telecoms)
    return "\n".join(parts)


def _number(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------------------------
# Shared header
# --------------------------------------------------------------------------------------------


def _header(
    doc: etree._Element,
    record: DluRecord,
    ctx: RenderContext,
    *,
    template: tuple[str, str],
    title: str,
    document_id: str,
    set_id: str,
    version: int,
    replaced: PreviousVersion | None,
    event: Code,
    event_low: datetime,
    encounter_end: datetime,
) -> None:
    header.document_header(
        doc,
        header.DocumentHeader(
            template_ids=(template,),
            document_id=document_id,
            code=DOC_CODE,
            title=title,
            effective_time=ctx.now,
            set_id=set_id,
            version=version,
            confidentiality=record.confidentiality,
        ),
    )
    person = record.person
    header.record_target(doc, person, header.patient_ids(person, local_person_root(record, ctx)))
    header.author(doc, record.author, record.essms, record.last_updated)
    header.informants(doc, person)
    header.custodian(doc, record.essms)
    header.legal_authenticator(doc, record.signer, record.essms, ctx.now)
    header.participant_pcp(doc, person.general_practitioner, record.essms, record.last_updated)
    header.documentation_of(doc, event, event_low, None, record.author, record.essms)
    if replaced is not None:
        assert replaced.document_id is not None
        header.related_document(doc, replaced.document_id)
    header.component_of(doc, "IMP", None, encounter_end, record.signer, record.essms)


def _serialize(doc: etree._Element) -> bytes:
    content: bytes = etree.tostring(doc, xml_declaration=True, encoding="UTF-8")
    return content


# --------------------------------------------------------------------------------------------
# DLU body
# --------------------------------------------------------------------------------------------


def _dlu_body(body: etree._Element, record: DluRecord, ids: Ids) -> None:
    dlu = record.dlu

    # Établissement de santé de préférence [1..1]
    sec, text = sections.section(body, sections.DISPOSITIONS, section_id=ids.next())
    narrative = Narrative("pref")
    ref = narrative.ref(
        _establishment_text(dlu.preferred_establishment)
        if dlu.preferred_establishment
        else "Aucun établissement de préférence renseigné"
    )
    narrative.paragraph(text, ref.text, ref_id=ref.id)
    entries.disposition(sections.entry(sec), ids, dlu.preferred_establishment, ref.id)

    # Pathologies actives [0..1], antécédents médicaux [0..1]
    for spec, items, prefix in (
        (sections.ACTIVE_PROBLEMS, dlu.active_problems, "prob"),
        (sections.MEDICAL_HISTORY, dlu.medical_history, "atcd"),
    ):
        if not items:
            continue
        sec, text = sections.section(body, spec, section_id=ids.next())
        narrative = Narrative(prefix)
        prob_rows: list[list[str | Ref | None]] = []
        refs = []
        for cond in items:
            cell = narrative.ref(cond.label)
            refs.append(cell)
            code = f"{cond.code.code} ({cond.code.display})" if cond.code else ""
            prob_rows.append([_day(cond.onset), cell, code])
        narrative.table(text, ["Date de début", "Pathologie", "Code"], prob_rows)
        for cond, cell in zip(items, refs, strict=True):
            entries.problem_concern(sections.entry(sec), ids, cond, cell.id)

    # Allergies [0..1]
    if dlu.allergies:
        sec, text = sections.section(body, sections.ALLERGIES, section_id=ids.next())
        narrative = Narrative("allergie")
        cells = [narrative.ref(a.agent) for a in dlu.allergies]
        allergy_rows: list[list[str | Ref | None]] = [
            [_day(a.onset), _day(a.end), _ALLERGY_LABEL[a.category], cell, a.reaction]
            for a, cell in zip(dlu.allergies, cells, strict=True)
        ]
        narrative.table(text, ["Date de début", "Date de fin", "Type", "Agent", "Réaction"], allergy_rows)
        for allergy, cell in zip(dlu.allergies, cells, strict=True):
            entries.allergy_concern(sections.entry(sec), ids, allergy, cell.id)

    # Traitements [1..1]
    sec, text = sections.section(body, sections.MEDICATIONS, section_id=ids.next())
    narrative = Narrative("trt")
    if dlu.treatments:
        cells = [narrative.ref(t.drug) for t in dlu.treatments]
        trt_rows: list[list[str | Ref | None]] = []
        for treatment, cell in zip(dlu.treatments, cells, strict=True):
            dose = ""
            if treatment.dose is not None:
                high = treatment.dose.high
                amount = _number(treatment.dose.value)
                if high is not None and high != treatment.dose.value:
                    amount = f"{amount} à {_number(high)}"
                dose = f"{amount} {treatment.dose.unit}"
            frequency = ""
            if treatment.frequency is not None:
                freq = treatment.frequency
                frequency = f"{freq.count} fois par {freq.period} {_UNIT_LABEL[freq.unit]}"
            route = valuesets.ROUTE_OF_ADMINISTRATION.get(treatment.route).display if treatment.route else ""
            trt_rows.append(
                [_day(treatment.start), _day(treatment.end), cell, dose, route, frequency, treatment.instructions]
            )
        narrative.table(text, ["Début", "Fin", "Médicament", "Dose", "Voie", "Fréquence", "Instructions"], trt_rows)
        for treatment, cell in zip(dlu.treatments, cells, strict=True):
            entries.medication(sections.entry(sec), ids, treatment, cell.id)
    else:
        cell = narrative.ref("Aucun traitement en cours")
        narrative.paragraph(text, cell.text, ref_id=cell.id)
        entries.medication(sections.entry(sec), ids, None, cell.id, period=(None, None))

    # Soins palliatifs (plan de soins), when stated
    if dlu.palliative_care is not None:
        sec, text = sections.section(body, sections.PLAN_OF_CARE, section_id=ids.next())
        narrative = Narrative("palliatif")
        cell = narrative.ref(yes_no(dlu.palliative_care))
        narrative.table(text, ["Plan de soins", "En cours"], [["Soins palliatifs", cell]])
        entries.acte(
            sections.entry(sec),
            ids,
            entries.PALLIATIVE,
            cell.id,
            negated=not dlu.palliative_care,
            status="active",
        )

    # Directives anticipées [1..1]
    directives = dlu.advance_directives
    sec, text = sections.section(body, sections.ADVANCE_DIRECTIVES, section_id=ids.next())
    narrative = Narrative("da")
    cell = narrative.ref("Directives anticipées")
    da_rows: list[list[str | Ref | None]] = [[cell, yes_no(directives.exists)]]
    if directives.written_on:
        da_rows.append(["Rédigées le", _day(directives.written_on)])
    if directives.location:
        da_rows.append(["Où les trouver", directives.location])
    narrative.table(text, ["Directive", "Réponse"], da_rows)
    entries.advance_directive(sections.entry(sec), ids, directives.exists, cell.id, directives.written_on)

    # État du patient (FR-Resultats-evenements) [1..1]
    sec, text = sections.section(body, sections.EVENT_OUTCOMES, section_id=ids.next())
    narrative = Narrative("etat")
    groups = (
        ("État psychique", valuesets.ETAT_PSYCHIQUE),
        ("Handicaps / déficits", valuesets.HANDICAP_DEFICIT),
        ("Déplacements / transferts", valuesets.DEPLACEMENT),
        ("Autres risques", valuesets.AUTRE_RISQUE),
    )
    observed = {item.code: item for item in dlu.observed_state}
    state_refs: dict[str, Ref] = {}
    for label, subset in groups:
        state_rows: list[list[str | Ref | None]] = []
        for code in subset.codes():
            state = observed.get(code)
            if state is None:
                continue
            cell = narrative.ref(valuesets.OBSERVATION_ETAT_PATIENT.get(code).display)
            state_refs[code] = cell
            state_rows.append([cell, yes_no(state.present), state.comment])
        if state_rows:
            add(text, "paragraph", label)
            narrative.table(text, ["Observation", "Présent", "Précision"], state_rows)
    if not observed:
        cell = narrative.ref("Aucune observation renseignée")
        narrative.paragraph(text, cell.text, ref_id=cell.id)
        entries.acte(sections.entry(sec), ids, None, cell.id, status="completed")
    for state in dlu.observed_state:
        entries.simple_observation(
            sections.entry(sec),
            ids,
            valuesets.OBSERVATION_ETAT_PATIENT.get(state.code),
            state_refs[state.code].id,
            value=state.present,
            system_name="SNOMED CT",
        )

    # BMR (FR-Resultats-examens) [1..1]
    bmr = dlu.bmr
    sec, text = sections.section(body, sections.CODED_RESULTS, section_id=ids.next())
    narrative = Narrative("bmr")
    cell = narrative.ref("Portage de bactérie multirésistante (BMR)")
    bmr_rows: list[list[str | Ref | None]] = [[cell, yes_no(bmr.carrier)]]
    if bmr.observed_on:
        bmr_rows.append(["Date du prélèvement", _day(bmr.observed_on)])
    if bmr.details:
        bmr_rows.append(["Précisions", bmr.details])
    narrative.table(text, ["Observation", "Résultat"], bmr_rows)
    entries.simple_observation(
        sections.entry(sec),
        ids,
        entries.BMR,
        cell.id,
        value=bmr.carrier,
        effective=bmr.observed_on,
        effective_null="NASK",
        system_name="CIM-10",
    )

    # Vaccinations [0..1]
    if dlu.vaccinations:
        sec, text = sections.section(body, sections.IMMUNIZATIONS, section_id=ids.next())
        narrative = Narrative("vacc")
        cells = [narrative.ref(v.vaccine) for v in dlu.vaccinations]
        narrative.table(
            text,
            ["Vaccin", "Date"],
            [[cell, _day(v.administered_on)] for v, cell in zip(dlu.vaccinations, cells, strict=True)],
        )
        for vaccination, cell in zip(dlu.vaccinations, cells, strict=True):
            entries.immunization(sections.entry(sec), ids, vaccination, cell.id)

    # Commentaire [0..1]
    if dlu.comment:
        _, text = sections.section(body, sections.COMMENT)
        lines(text, dlu.comment)

    # Documents ajoutés [1..1]
    sec, text = sections.section(body, sections.ATTACHED_DOCUMENTS, section_id=ids.next())
    narrative = Narrative("doc")
    doc_cells = []
    doc_rows: list[list[str | Ref | None]] = []
    for document in dlu.attached_documents:
        cell = narrative.ref(valuesets.CHECKLIST_DLU.get(document.code).display)
        doc_cells.append(cell)
        doc_rows.append([cell, "oui (joint)" if document.content else "oui"])
    narrative.table(text, ["Document", "Annexé au DLU"], doc_rows)
    for index, (document, cell) in enumerate(zip(dlu.attached_documents, doc_cells, strict=True), start=1):
        entries.attached_document(
            sections.entry(sec),
            ids,
            valuesets.CHECKLIST_DLU.get(document.code),
            cell.id,
            f"media-{index}",
            media_type=document.media_type,
            content=document.content,
        )


# --------------------------------------------------------------------------------------------
# FLUDT body
# --------------------------------------------------------------------------------------------


def _fludt_body(body: etree._Element, record: DluRecord, ids: Ids) -> None:
    transfer = record.transfer
    assert transfer is not None

    # Transfert (FR-Resultats-evenements) [1..1]: motif 57277-6 + FR-Transfert-du-patient
    sec, text = sections.section(
        body, sections.EVENT_OUTCOMES, section_id=ids.next(), title="Transfert du patient de l'EHPAD vers le SU"
    )
    narrative = Narrative("transfert")
    reason = narrative.ref(transfer.reason)
    destination = narrative.ref(_establishment_text(transfer.destination))
    narrative.table(
        text,
        ["Transfert", "Précision"],
        [["Motif", reason], ["Date", _moment(transfer.transfer_time)], ["Établissement", destination]],
    )
    entries.simple_observation(
        sections.entry(sec),
        ids,
        Code("57277-6", LOINC, "Motif du transfert vers le service des urgences"),
        reason.id,
        effective=transfer.transfer_time,
        value_kind="CD",
        system_name="LOINC",
    )
    entries.patient_transfer(sections.entry(sec), ids, transfer.transfer_time, transfer.destination, destination.id)

    # Signes vitaux [1..1]
    sec, text = sections.section(body, sections.VITAL_SIGNS, title="Constantes du patient")
    narrative = Narrative("constante")
    signs = transfer.vital_signs
    measures: list[tuple[Code, str, float, str]] = []
    rows: list[list[str | Ref | None]] = []
    if signs is not None:
        for label, code, unit, value in entries.vital_sign_rows(signs):
            cell = narrative.ref(label)
            measures.append((code, unit, value, cell.id))
            rows.append([cell, f"{_number(value)} {unit}"])
    if rows:
        add(text, "paragraph", f"Mesurées le {_moment(signs.measured_at if signs else None)}")
        narrative.table(text, ["Constante", "Mesure"], rows)
        assert signs is not None
        entries.vital_signs_organizer(sections.entry(sec), ids, signs.measured_at, measures)
    else:
        lines(text, "Aucune constante mesurée avant le transfert.")

    # Conscience + douleur (FR-Resultats-examens) [1..1]
    sec, text = sections.section(body, sections.CODED_RESULTS, section_id=ids.next(), title="Observations")
    narrative = Narrative("obs")
    conscience = narrative.ref("État de conscience")
    obs_rows: list[list[str | Ref | None]] = [[conscience, _CONSCIOUSNESS[transfer.consciousness]]]
    pain_cell = None
    if transfer.pain is not None:
        pain_cell = narrative.ref("Douleurs récentes")
        where = ", ".join(transfer.pain.locations)
        obs_rows.append([pain_cell, yes_no(transfer.pain.present) + (f" ({where})" if where else "")])
    narrative.table(text, ["Observation", "Résultat"], obs_rows)
    entries.simple_observation(
        sections.entry(sec),
        ids,
        Code(transfer.consciousness, TA_ASIP, _CONSCIOUSNESS[transfer.consciousness]),
        conscience.id,
        value=True,
        effective=transfer.transfer_time,
        system_name="TA_ASIP",
    )
    if transfer.pain is not None and pain_cell is not None:
        entries.simple_observation(
            sections.entry(sec),
            ids,
            Code("R52.9", CIM10, "Douleur, sans précision"),
            pain_cell.id,
            value=transfer.pain.present,
            effective=transfer.transfer_time,
            system_name="CIM-10",
        )

    # Dernière prise du traitement habituel (FR-Traitements) [1..1]
    sec, text = sections.section(
        body, sections.MEDICATIONS, title="Date et heure de la dernière prise du traitement habituel"
    )
    narrative = Narrative("prise")
    cell = narrative.ref(f"Dernière prise du traitement habituel : {_moment(transfer.last_treatment_intake)}")
    narrative.paragraph(text, cell.text, ref_id=cell.id)
    entries.medication(
        sections.entry(sec),
        ids,
        None,
        cell.id,
        mood="EVN",
        period=(transfer.last_treatment_intake, transfer.last_treatment_intake),
    )

    # Dernier repas (statut fonctionnel) [1..1]
    sec, text = sections.section(body, sections.FUNCTIONAL_STATUS)
    narrative = Narrative("repas")
    cell = narrative.ref(f"Dernier repas : {_moment(transfer.last_meal)}")
    narrative.paragraph(text, cell.text, ref_id=cell.id)
    entries.simple_observation(
        sections.entry(sec),
        ids,
        Code("GEN-244", TA_ASIP, "Date et heure du dernier repas"),
        cell.id,
        effective=transfer.last_meal,
        effective_null="UNK",
        value_kind="REAL-NA",
        system_name="TA_ASIP",
    )

    # Prothèses et objets personnels [1..1]
    sec, text = sections.section(body, sections.PERSONAL_ITEMS, section_id=ids.next())
    narrative = Narrative("objet")
    if transfer.personal_items:
        cells = [
            narrative.ref(valuesets.PROTHESE_OBJET_PERSONNEL.get(item.code).display) for item in transfer.personal_items
        ]
        narrative.table(
            text,
            ["Prothèse / objet personnel", "Commentaire"],
            [[cell, item.comment] for item, cell in zip(transfer.personal_items, cells, strict=True)],
        )
        for item, cell in zip(transfer.personal_items, cells, strict=True):
            code = valuesets.PROTHESE_OBJET_PERSONNEL.get(item.code)
            entries.simple_observation(
                sections.entry(sec),
                ids,
                code,
                cell.id,
                value=True,
                effective=transfer.transfer_time,
                extra_templates=("1.2.250.1.213.1.1.3.12",),
            )
    else:
        cell = narrative.ref("Aucune prothèse ni objet personnel")
        narrative.paragraph(text, cell.text, ref_id=cell.id)
        entries.simple_observation(
            sections.entry(sec),
            ids,
            valuesets.PROTHESE_OBJET_PERSONNEL.get("GEN-092.02.01"),
            cell.id,
            value=False,
            effective=transfer.transfer_time,
            extra_templates=("1.2.250.1.213.1.1.3.12",),
        )

    # Commentaire [0..1]
    if transfer.comment:
        _, text = sections.section(body, sections.COMMENT)
        lines(text, transfer.comment)


# --------------------------------------------------------------------------------------------
# Renditions
# --------------------------------------------------------------------------------------------


def _metadata(
    record: DluRecord,
    ctx: RenderContext,
    *,
    format_code: Code,
    title: str,
    model: str,
    set_id: str,
    version: int,
    service_start: datetime,
) -> ExchangeMetadata:
    identity = exchange_identity(record, ctx)
    essms = record.essms
    _, author_ext = header.professional_id(record.author, essms)
    _, signer_ext = header.professional_id(record.signer, essms)
    return ExchangeMetadata(
        type_code=DOC_CODE,
        class_code=CLASS_CODE,
        format_code=format_code,
        healthcare_facility_type_code=valuesets.FACILITY_TYPE.get(essms.facility_type_code),
        practice_setting_code=valuesets.PRACTICE_SETTING.get(essms.practice_setting_code),
        confidentiality_code=valuesets.CONFIDENTIALITY.get(record.confidentiality),
        mime_type="text/xml",
        title=title,
        creation_time=ctx.now,
        author_institution_name=essms.name,
        author_institution_id=f"{header.STRUCT_ID_ROOT}^{header.org_id_extension(essms.finess)}",
        author_person_id=author_ext,
        patient_id=identity.patient_id,
        patient_id_system=identity.patient_id_system,
        service_start=service_start,
        extra={
            "model": model,
            "set_id": set_id,
            "version": version,
            "author_specialty": record.author.role,
            "legal_authenticator_id": signer_ext,
            **identity.extra(),
        },
    )


def _rendition(
    kind: str,
    record: DluRecord,
    ctx: RenderContext,
    *,
    arc: int,
    new_set_id: Callable[[], str],
    model: str,
    template: tuple[str, str],
    title: str,
    event: Code,
    event_low: datetime,
    encounter_end: datetime,
    format_code: Code,
    body_builder: Callable[[etree._Element, DluRecord, Ids], None],
) -> Rendition:
    document_id = _check_oid(f"{ctx.id_root}.{arc}.{ctx.submission_id.int}", "document id")
    set_id, version, replaced = _series(kind, ctx, _check_oid(new_set_id(), "setId"), document_id)
    _check_oid(local_person_root(record, ctx), "local person id root")
    doc = new_document()
    _header(
        doc,
        record,
        ctx,
        template=template,
        title=title,
        document_id=document_id,
        set_id=set_id,
        version=version,
        replaced=replaced,
        event=event,
        event_low=event_low,
        encounter_end=encounter_end,
    )
    body = add(add(doc, "component"), "structuredBody")
    body_builder(body, record, Ids(ctx.submission_id, kind))
    return Rendition(
        kind=kind,
        media_type="application/xml",
        content=_serialize(doc),
        document_id=document_id,
        set_id=set_id,
        version=version,
        conformance=(f"cisis:{model}",),
        metadata=_metadata(
            record,
            ctx,
            format_code=format_code,
            title=title,
            model=model,
            set_id=set_id,
            version=version,
            service_start=event_low,
        ),
        replaces=replaced.document_id if replaced else None,
    )


def render_dlu(record: DluRecord, ctx: RenderContext) -> Rendition:
    """The DLU-EHPAD-DLU 2022.01 rendition (kind ``cda``)."""
    return _rendition(
        "cda",
        record,
        ctx,
        arc=1,
        new_set_id=lambda: f"{ctx.id_root}.3.{ctx.submission_id.int}",
        model=DLU_MODEL,
        template=DLU_TEMPLATE,
        title="Document de liaison d'urgence",
        event=DLU_EVENT,
        event_low=record.last_updated,
        encounter_end=record.last_updated,
        format_code=DLU_FORMAT,
        body_builder=_dlu_body,
    )


def _fludt_set_id(record: DluRecord, ctx: RenderContext) -> str:
    """One FLUDT series per transfer: re-sending the same transfer replaces its sheet."""
    assert record.transfer is not None
    seed = "|".join(
        (record.essms.finess, record.person.local_id, record.transfer.transfer_time.isoformat(), ctx.id_root)
    )
    return f"{ctx.id_root}.4.{uuid.uuid5(uuid.NAMESPACE_OID, seed).int}"


def render_fludt(record: DluRecord, ctx: RenderContext) -> Rendition:
    """The DLU-EHPAD-FLUDT 2022.01 rendition (kind ``fludt-cda``); the record must carry a transfer."""
    if record.transfer is None:
        raise MappingFailed("a FLUDT needs the transfer context", pointer="/record/transfer")
    transfer = record.transfer
    return _rendition(
        "fludt-cda",
        record,
        ctx,
        arc=2,
        new_set_id=lambda: _fludt_set_id(record, ctx),
        model=FLUDT_MODEL,
        template=FLUDT_TEMPLATE,
        title="Fiche de liaison EHPAD - service des urgences",
        event=FLUDT_EVENT,
        event_low=transfer.transfer_time,
        encounter_end=transfer.transfer_time,
        format_code=FLUDT_FORMAT,
        body_builder=_fludt_body,
    )


class DluDocumentType:
    """The ``dlu`` document type (registered at import)."""

    code: ClassVar[str] = "dlu"
    record_model: ClassVar[type[BaseModel]] = DluRecord
    type_code: ClassVar[Code | None] = DOC_CODE
    class_code: ClassVar[Code | None] = CLASS_CODE

    def facts(self, record: BaseModel) -> RecordFacts:
        if not isinstance(record, DluRecord):
            raise TypeError(f"expected a DluRecord, got {type(record).__name__}")
        base = facts(record)
        extra = dict(base.extra)
        extra["has_transfer"] = record.transfer is not None
        refusal = ins_refusal(record.person)
        if refusal is not None:
            extra["dmp_refusal"] = refusal
        return dataclasses.replace(base, extra=extra)

    def render(self, record: BaseModel, ctx: RenderContext) -> list[Rendition]:
        if not isinstance(record, DluRecord):
            raise TypeError(f"expected a DluRecord, got {type(record).__name__}")
        renditions = [render_dlu(record, ctx)]
        if record.transfer is not None:
            renditions.append(render_fludt(record, ctx))
        renditions.append(to_fhir(record, ctx))
        return renditions


DLU = DluDocumentType()  # declared in the dui_gateway.document_types entry-point group
