"""CDA entry builders for the CI-SIS entry templates used by the DLU volet (and reusable elsewhere).

Each builder appends one clinical statement to an ``entry`` (or ``component``) element; the
template chains follow the CI-SIS kit (``ExemplesCDA/DLU-EHPAD-*_2022.01.xml``) and the
comment above each function names the CI-SIS template.
"""

from __future__ import annotations

from datetime import date, datetime

from lxml import etree

from mappings import valuesets
from mappings.base import Code
from mappings.cda.datatypes import CIM10, LOINC, SNOMED, Ids, add, addr, cd, ii, telecom, ts, ts_value
from mappings.record import Allergy, Condition, HealthEstablishment, Treatment, Vaccination, VitalSigns

__all__ = [
    "BMR",
    "acte",
    "advance_directive",
    "allergy_concern",
    "attached_document",
    "disposition",
    "immunization",
    "medication",
    "patient_transfer",
    "problem_concern",
    "simple_observation",
    "vital_sign_rows",
    "vital_signs_organizer",
]

SIMPLE_OBSERVATION = ("1.3.6.1.4.1.19376.1.5.3.1.4.13", "1.2.250.1.213.1.1.3.48")
BMR = Code("U83.71", CIM10, "Bactérie multirésistante [BMR]")
PALLIATIVE = Code("103735009", SNOMED, "Soins palliatifs")
_PROBLEM_CODE = Code("282291009", SNOMED, "interprétation diagnostique")
_ALLERGY_CODES = {
    "food": Code("414285001", SNOMED, "allergie alimentaire"),
    "medication": Code("416098002", SNOMED, "allergie médicamenteuse"),
    "environment": Code("609328004", SNOMED, "allergie"),  # JDV_TypeEvenementIndesirablePrevisible
    "other": Code("419199007", SNOMED, "allergie à une substance"),
}
_ORG_ROOT = "1.2.250.1.71.4.2.2"


def _templates(parent: etree._Element, *roots: str) -> None:
    for root in roots:
        add(parent, "templateId", root=root)


def _text_ref(parent: etree._Element, ref: str | None) -> None:
    text = add(parent, "text")
    add(text, "reference", value=f"#{ref}" if ref else None)


def _ivl(
    parent: etree._Element, low: date | datetime | None, high: date | datetime | None, tag: str = "effectiveTime"
) -> None:
    period = add(parent, tag)
    ts(period, "low", low)
    ts(period, "high", high)


def _establishment_role(parent: etree._Element, est: HealthEstablishment, class_code: str) -> etree._Element:
    role = add(parent, "participantRole", classCode=class_code)
    if est.finess is not None:
        ii(role, _ORG_ROOT, f"1{est.finess}")
    if est.address is not None:
        addr(role, est.address.lines, est.address.postal_code, est.address.city, est.address.country)
    for item in est.telecoms:
        telecom(role, item.system, item.value, item.use)
    playing = add(role, "playingEntity")
    add(playing, "name", est.name)
    return role


# FR-Disposition (1.2.250.1.213.1.1.3.97): the preferred health establishment.
def disposition(entry: etree._Element, ids: Ids, est: HealthEstablishment | None, ref: str) -> None:
    act = add(entry, "act", classCode="ACT", moodCode="INT")
    _templates(act, "1.3.6.1.4.1.19376.1.5.3.1.1.10.4.2", "1.2.250.1.213.1.1.3.97")
    ii(act, ids.next())
    add(act, "code", code="11302-7", displayName="Etablissement de santé de préférence", codeSystem=LOINC)
    _text_ref(act, ref)
    add(act, "statusCode", code="normal")
    add(act, "effectiveTime", nullFlavor="NAV")
    if est is not None:
        participant = add(act, "participant", typeCode="RCV")
        add(participant, "time", nullFlavor="NAV")
        _establishment_role(participant, est, "ROL")


# FR-Liste-des-problemes (1.2.250.1.213.1.1.3.39) + FR-Probleme (1.2.250.1.213.1.1.3.37).
def problem_concern(entry: etree._Element, ids: Ids, condition: Condition, ref: str) -> None:
    act = add(entry, "act", classCode="ACT", moodCode="EVN")
    _templates(
        act,
        "2.16.840.1.113883.10.20.1.27",
        "1.3.6.1.4.1.19376.1.5.3.1.4.5.1",
        "1.3.6.1.4.1.19376.1.5.3.1.4.5.2",
        "1.2.250.1.213.1.1.3.39",
    )
    ii(act, ids.next())
    add(act, "code", nullFlavor="NA")
    add(act, "statusCode", code="completed")
    period = add(act, "effectiveTime")
    ts(period, "low", condition.onset)
    add(period, "high", nullFlavor="NA")
    rel = add(act, "entryRelationship", typeCode="SUBJ", inversionInd="false")
    obs = add(rel, "observation", classCode="OBS", moodCode="EVN", negationInd="false")
    _templates(obs, "2.16.840.1.113883.10.20.1.28", "1.3.6.1.4.1.19376.1.5.3.1.4.5", "1.2.250.1.213.1.1.3.37")
    ii(obs, ids.next())
    cd(obs, "code", _PROBLEM_CODE, system_name="SNOMED CT")
    _text_ref(obs, ref)
    add(obs, "statusCode", code="completed")
    obs_period = add(obs, "effectiveTime")
    ts(obs_period, "low", condition.onset)
    add(obs_period, "high", nullFlavor="NA")
    if condition.code is not None:
        code = Code(condition.code.code, condition.code.system, condition.code.display)
        cd(obs, "value", code, xsi_type="CD", original_ref=ref)
    else:
        value = add(obs, "value", xsi_type="CD")
        add(add(value, "originalText"), "reference", value=f"#{ref}")


# FR-Liste-des-allergies-et-hypersensibilites (…3.40) + FR-Allergie-ou-hypersensibilite (…3.41).
def allergy_concern(entry: etree._Element, ids: Ids, allergy: Allergy, ref: str) -> None:
    act = add(entry, "act", classCode="ACT", moodCode="EVN")
    _templates(
        act,
        "2.16.840.1.113883.10.20.1.27",
        "1.3.6.1.4.1.19376.1.5.3.1.4.5.1",
        "1.3.6.1.4.1.19376.1.5.3.1.4.5.3",
        "1.2.250.1.213.1.1.3.40",
    )
    ii(act, ids.next())
    add(act, "code", nullFlavor="NA")
    add(act, "statusCode", code="completed" if allergy.end else "active")
    period = add(act, "effectiveTime")
    ts(period, "low", allergy.onset, "UNK")
    if allergy.end:
        ts(period, "high", allergy.end)
    rel = add(act, "entryRelationship", typeCode="SUBJ", inversionInd="false")
    obs = add(rel, "observation", classCode="OBS", moodCode="EVN")
    _templates(
        obs,
        "2.16.840.1.113883.10.20.1.18",
        "2.16.840.1.113883.10.20.1.28",
        "1.3.6.1.4.1.19376.1.5.3.1.4.5",
        "1.3.6.1.4.1.19376.1.5.3.1.4.6",
        "1.2.250.1.213.1.1.3.41",
    )
    ii(obs, ids.next())
    cd(obs, "code", _ALLERGY_CODES[allergy.category], system_name="SNOMED CT")
    _text_ref(obs, ref)
    add(obs, "statusCode", code="completed")
    obs_period = add(obs, "effectiveTime")
    ts(obs_period, "low", allergy.onset, "UNK")
    if allergy.end:
        ts(obs_period, "high", allergy.end)
    value = add(obs, "value", xsi_type="CD")
    add(add(value, "originalText"), "reference", value=f"#{ref}")
    participant = add(obs, "participant", typeCode="CSM")
    role = add(participant, "participantRole", classCode="MANU")
    entity = add(role, "playingEntity", classCode="MMAT")
    if allergy.agent_code is not None:
        agent = Code(allergy.agent_code.code, allergy.agent_code.system, allergy.agent_code.display)
        cd(entity, "code", agent, original_ref=ref)
    else:
        code = add(entity, "code", nullFlavor="UNK")
        add(add(code, "originalText"), "reference", value=f"#{ref}")
    add(entity, "name", allergy.agent)


_UCUM = {
    "mg": "mg",
    "g": "g",
    "µg": "ug",
    "ug": "ug",
    "ml": "mL",
    "l": "L",
    "ui": "[iU]",
    "goutte": "[drp]",
    "gouttes": "[drp]",
}
_HOURS = {"h": 1, "d": 24, "wk": 168}


def _number(value: float) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text or "0"


#: countable dose forms as UCUM annotations, as the ANS examples write them ({tablet}, {count});
#: the terminologies profile strips ``{lowercase}`` annotations before looking the unit up, while
#: UCUM's "1" is absent from the kit's UCUM list
_COUNTABLE = {
    "comprimé": "{tablet}",
    "comprimés": "{tablet}",
    "cp": "{tablet}",
    "gélule": "{capsule}",
    "gélules": "{capsule}",
    "sachet": "{sachet}",
    "sachets": "{sachet}",
    "ampoule": "{ampoule}",
    "ampoules": "{ampoule}",
    "patch": "{patch}",
    "bouffée": "{puff}",
    "bouffées": "{puff}",
    "suppositoire": "{suppository}",
    "suppositoires": "{suppository}",
}


def _dose_unit(unit: str) -> str:
    """A UCUM unit for a dose: a known unit, a countable form as an annotation, else ``{count}``."""
    label = unit.strip().lower()
    known = _UCUM.get(label)
    if known is not None:
        return known
    return _COUNTABLE.get(label, "{count}")


CIS = "1.2.250.1.213.2.3.1"


def _product_code(material: etree._Element, code: Code | None, ref: str | None) -> None:
    """FR-Produit-de-sante: ``code`` is a CIS code; other systems (ATC, UCD...) go in a translation."""
    if code is not None and code.system == CIS:
        cd(material, "code", code, system_name="CIS", original_ref=ref)
        return
    element = add(material, "code", nullFlavor="OTH" if code is not None else "UNK")
    if ref:
        add(add(element, "originalText"), "reference", value=f"#{ref}")
    if code is not None:
        cd(element, "translation", code)


# FR-Traitement (1.2.250.1.213.1.1.3.42) + FR-Produit-de-sante (…3.43).
def medication(
    entry: etree._Element,
    ids: Ids,
    treatment: Treatment | None,
    ref: str | None,
    *,
    mood: str = "INT",
    period: tuple[datetime | date | None, datetime | date | None] | None = None,
) -> None:
    """A substance administration; ``treatment=None`` gives an unspecified product (FLUDT last intake)."""
    sbadm = add(entry, "substanceAdministration", classCode="SBADM", moodCode=mood)
    _templates(
        sbadm,
        "2.16.840.1.113883.10.20.1.24",
        "1.3.6.1.4.1.19376.1.5.3.1.4.7",
        "1.2.250.1.213.1.1.3.42",
        "1.3.6.1.4.1.19376.1.5.3.1.4.7.1",
    )
    ii(sbadm, ids.next())
    _text_ref(sbadm, ref)
    add(sbadm, "statusCode", code="completed")
    low, high = period if period is not None else ((treatment.start, treatment.end) if treatment else (None, None))
    effective = add(sbadm, "effectiveTime", xsi_type="IVL_TS")
    ts(effective, "low", low)
    ts(effective, "high", high)
    frequency = treatment.frequency if treatment is not None else None
    if frequency is not None:
        pivl = add(sbadm, "effectiveTime", xsi_type="PIVL_TS", operator="A", institutionSpecified="true")
        unit: str
        if frequency.count == 1 or frequency.unit == "mo":
            value, unit = frequency.period / frequency.count, frequency.unit
        else:
            value, unit = frequency.period * _HOURS[frequency.unit] / frequency.count, "h"
        add(pivl, "period", value=_number(value), unit=unit)
    if treatment is not None and treatment.route is not None:
        cd(sbadm, "routeCode", valuesets.ROUTE_OF_ADMINISTRATION.get(treatment.route), system_name="EDQM")
    dose = treatment.dose if treatment is not None else None
    if dose is not None:
        quantity = add(sbadm, "doseQuantity")
        unit = _dose_unit(dose.unit)
        add(quantity, "low", value=_number(dose.value), unit=unit)
        add(quantity, "high", value=_number(dose.high if dose.high is not None else dose.value), unit=unit)
    consumable = add(sbadm, "consumable", typeCode="CSM")
    product = add(consumable, "manufacturedProduct", classCode="MANU")
    _templates(product, "2.16.840.1.113883.10.20.1.53", "1.3.6.1.4.1.19376.1.5.3.1.4.7.2", "1.2.250.1.213.1.1.3.43")
    material = add(product, "manufacturedMaterial", classCode="MMAT")
    if treatment is None:
        add(material, "code", nullFlavor="UNK")
        add(material, "name", nullFlavor="UNK")
        return
    drug = treatment.drug_code
    _product_code(material, Code(drug.code, drug.system, drug.display) if drug else None, ref)
    add(material, "name", treatment.drug)


# FR-Simple-Observation (1.2.250.1.213.1.1.3.48), IHE Simple Observation.
def simple_observation(
    entry: etree._Element,
    ids: Ids,
    code: Code,
    ref: str | None,
    *,
    value: bool | None = None,
    value_ref: str | None = None,
    effective: datetime | date | None = None,
    effective_null: str = "NA",
    extra_templates: tuple[str, ...] = (),
    system_name: str | None = None,
    value_kind: str = "BL",
    target_site: Code | None = None,
) -> etree._Element:
    """A simple observation with a BL value (``None`` → nullFlavor UNK) or a CD value pointing to text."""
    obs = add(entry, "observation", classCode="OBS", moodCode="EVN")
    _templates(obs, *SIMPLE_OBSERVATION, *extra_templates)
    ii(obs, ids.next())
    cd(obs, "code", code, system_name=system_name)
    _text_ref(obs, ref)
    add(obs, "statusCode", code="completed")
    ts(obs, "effectiveTime", effective, effective_null)
    if value_kind == "BL":
        if value is None:
            add(obs, "value", xsi_type="BL", nullFlavor="UNK")
        else:
            add(obs, "value", xsi_type="BL", value="true" if value else "false")
    elif value_kind == "CD":
        element = add(obs, "value", xsi_type="CD")
        add(add(element, "originalText"), "reference", value=f"#{value_ref or ref}")
    elif value_kind == "REAL-NA":
        add(obs, "value", xsi_type="REAL", nullFlavor="NA")
    if target_site is not None:
        cd(obs, "targetSiteCode", target_site)
    return obs


# FR-Acte (1.2.250.1.213.1.1.3.62).
def acte(
    entry: etree._Element,
    ids: Ids,
    code: Code | None,
    ref: str | None,
    *,
    negated: bool = False,
    status: str = "completed",
    effective: datetime | date | None = None,
) -> None:
    proc = add(entry, "procedure", classCode="PROC", moodCode="EVN", negationInd="true" if negated else None)
    _templates(proc, "1.3.6.1.4.1.19376.1.5.3.1.4.19", "2.16.840.1.113883.10.20.1.29", "1.2.250.1.213.1.1.3.62")
    ii(proc, ids.next())
    if code is None:
        add(proc, "code", nullFlavor="NA")
    else:
        cd(proc, "code", code, system_name="SNOMED CT")
    _text_ref(proc, ref)
    add(proc, "statusCode", code=status)
    ts(proc, "effectiveTime", effective, "UNK")


# FR-Directive-anticipee (1.2.250.1.213.1.1.3.54).
def advance_directive(
    entry: etree._Element, ids: Ids, exists: bool | None, ref: str, written_on: date | None = None
) -> None:
    obs = add(entry, "observation", classCode="OBS", moodCode="EVN")
    _templates(
        obs,
        "2.16.840.1.113883.10.20.1.17",
        "1.3.6.1.4.1.19376.1.5.3.1.4.13",
        "1.3.6.1.4.1.19376.1.5.3.1.4.13.7",
        "1.2.250.1.213.1.1.3.54",
    )
    ii(obs, ids.next())
    add(obs, "code", code="42348-3", displayName="Directives anticipées", codeSystem=LOINC, codeSystemName="LOINC")
    _text_ref(obs, ref)
    add(obs, "statusCode", code="completed")
    period = add(obs, "effectiveTime")
    ts(period, "low", written_on, "UNK")
    if exists is None:
        add(obs, "value", xsi_type="BL", nullFlavor="UNK")
    else:
        add(obs, "value", xsi_type="BL", value="true" if exists else "false")


# FR-Vaccination (1.2.250.1.213.1.1.3.45).
def immunization(entry: etree._Element, ids: Ids, vaccination: Vaccination, ref: str) -> None:
    sbadm = add(entry, "substanceAdministration", classCode="SBADM", moodCode="EVN", negationInd="false")
    _templates(sbadm, "2.16.840.1.113883.10.20.1.24", "1.3.6.1.4.1.19376.1.5.3.1.4.12", "1.2.250.1.213.1.1.3.45")
    ii(sbadm, ids.next())
    add(
        sbadm,
        "code",
        code="IMMUNIZ",
        displayName="Immunization",
        codeSystem="2.16.840.1.113883.5.4",
        codeSystemName="ActCode",
    )
    _text_ref(sbadm, ref)
    add(sbadm, "statusCode", code="completed")
    ts(sbadm, "effectiveTime", vaccination.administered_on, "NASK")
    add(sbadm, "doseQuantity", nullFlavor="NA")
    consumable = add(sbadm, "consumable", typeCode="CSM")
    product = add(consumable, "manufacturedProduct", classCode="MANU")
    _templates(product, "2.16.840.1.113883.10.20.1.53", "1.3.6.1.4.1.19376.1.5.3.1.4.7.2", "1.2.250.1.213.1.1.3.43")
    material = add(product, "manufacturedMaterial", classCode="MMAT")
    vaccine = vaccination.code
    _product_code(material, Code(vaccine.code, vaccine.system, vaccine.display) if vaccine else None, ref)
    add(material, "name", vaccination.vaccine)


# FR-Document-attache (1.2.250.1.213.1.1.3.18) + FR-Type-document-attache (…3.48.18).
def attached_document(
    entry: etree._Element,
    ids: Ids,
    kind: Code,
    ref: str,
    media_id: str,
    *,
    media_type: str | None,
    content: str | None,
) -> None:
    organizer = add(entry, "organizer", classCode="CLUSTER", moodCode="EVN")
    _templates(organizer, "1.2.250.1.213.1.1.3.18")
    ii(organizer, ids.next())
    add(organizer, "code", code="55107-7", displayName="Document attaché", codeSystem=LOINC, codeSystemName="LOINC")
    add(organizer, "statusCode", code="completed")
    obs = add(add(organizer, "component"), "observation", classCode="OBS", moodCode="EVN")
    _templates(obs, *SIMPLE_OBSERVATION, "1.2.250.1.213.1.1.3.48.18")
    ii(obs, ids.next())
    add(obs, "code", code="69764-9", displayName="Type de document", codeSystem=LOINC, codeSystemName="LOINC")
    _text_ref(obs, ref)
    add(obs, "statusCode", code="completed")
    add(obs, "effectiveTime", nullFlavor="NA")
    cd(obs, "value", kind, xsi_type="CD", system_name="TA_ASIP")
    media = add(add(organizer, "component"), "observationMedia", classCode="OBS", moodCode="EVN", ID=media_id)
    if content is None:
        add(media, "value", nullFlavor="NAV")
    else:
        add(media, "value", content, mediaType=media_type, representation="B64")


_VITALS = (
    ("pulse", Code("8867-4", LOINC, "Fréquence cardiaque"), "/min", "Pouls"),
    ("temperature", Code("8310-5", LOINC, "Température corporelle"), "Cel", "Température"),
    ("weight", Code("29463-7", LOINC, "Poids"), "kg", "Poids"),
    ("systolic", Code("8480-6", LOINC, "Pression artérielle systolique"), "mm[Hg]", "Tension artérielle haute"),
    ("diastolic", Code("8462-4", LOINC, "Pression artérielle diastolique"), "mm[Hg]", "Tension artérielle basse"),
)


def vital_sign_rows(signs: VitalSigns) -> list[tuple[str, Code, str, float]]:
    """(label, LOINC code, UCUM unit, value) of the measured vital signs, in display order."""
    rows: list[tuple[str, Code, str, float]] = []
    for attr, code, unit, label in _VITALS:
        value = getattr(signs, attr)
        if value is not None:
            rows.append((label, code, unit, float(value)))
    return rows


# FR-Signes-vitaux organizer (1.2.250.1.213.1.1.3.49) + FR-Signe-vital-observe (…3.50).
def vital_signs_organizer(
    entry: etree._Element, ids: Ids, measured_at: datetime, measures: list[tuple[Code, str, float, str]]
) -> None:
    """``measures``: (code, unit, value, narrative ref)."""
    organizer = add(entry, "organizer", classCode="CLUSTER", moodCode="EVN")
    _templates(
        organizer,
        "2.16.840.1.113883.10.20.1.32",
        "2.16.840.1.113883.10.20.1.35",
        "1.3.6.1.4.1.19376.1.5.3.1.4.13.1",
        "1.2.250.1.213.1.1.3.49",
    )
    ii(organizer, ids.next())
    add(organizer, "code", code="85353-1", displayName="Signes vitaux", codeSystem=LOINC, codeSystemName="LOINC")
    add(organizer, "statusCode", code="completed")
    ts(organizer, "effectiveTime", measured_at)
    for code, unit, value, ref in measures:
        obs = add(add(organizer, "component", typeCode="COMP"), "observation", classCode="OBS", moodCode="EVN")
        _templates(
            obs,
            "2.16.840.1.113883.10.20.1.31",
            *SIMPLE_OBSERVATION[:1],
            "1.3.6.1.4.1.19376.1.5.3.1.4.13.2",
            "1.2.250.1.213.1.1.3.50",
        )
        ii(obs, ids.next())
        cd(obs, "code", code, system_name="LOINC")
        _text_ref(obs, ref)
        add(obs, "statusCode", code="completed")
        ts(obs, "effectiveTime", measured_at)
        add(obs, "value", xsi_type="PQ", value=_number(value), unit=unit)


# FR-Transfert-du-patient (1.2.250.1.213.1.1.3.28).
def patient_transfer(
    entry: etree._Element, ids: Ids, start: datetime, destination: HealthEstablishment, ref: str
) -> None:
    act = add(entry, "act", classCode="ACT", moodCode="EVN")
    _templates(act, "1.3.6.1.4.1.19376.1.5.3.1.1.25.1.4.1", "1.2.250.1.213.1.1.3.28")
    ii(act, ids.next())
    add(act, "code", code="80413-8", displayName="Transfert du patient", codeSystem=LOINC, codeSystemName="LOINC")
    _text_ref(act, ref)
    add(act, "statusCode", code="completed")
    period = add(act, "effectiveTime")
    add(period, "low", value=ts_value(start))
    add(period, "high", nullFlavor="UNK")  # arrival time: not known when the sheet is written
    participant = add(act, "participant", typeCode="DST")
    _establishment_role(participant, destination, "SDLOC")
