"""The DLU as a FHIR R4 (4.0.1) document Bundle: same sections as the CI-SIS DLU-EHPAD-DLU
2022.01 CDA (``shared/specs/dlu-cda.md``), same LOINC section codes.

``Bundle.type = document``; the first entry is the Composition (bdl-11); every reference is a
``urn:uuid:`` fullUrl of an entry. Ids are ``uuid5(ctx.submission_id, "dlu-fhir/<key>")``, so the
same submission always gives the same bytes. The Patient carries the INS only when the identity
is qualifiée (FR Core Patient INS); otherwise FR Core Patient with the DUI's local identifier.
A new version keeps ``Composition.identifier`` (the series, like the CDA setId), increments the
version-number extension and declares ``relatesTo replaces`` the previous document.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime

from mappings import valuesets
from mappings.base import MappingFailed, RenderContext, Rendition
from mappings.fhir import (
    Ids,
    Json,
    code,
    codeable,
    coding,
    fhir_date,
    fhir_datetime,
    health_establishment,
    narrative,
    organization,
    patient,
    practitioner,
)
from mappings.record import DluContent, DluRecord, Professional

__all__ = ["KIND", "MEDIA_TYPE", "SECTIONS", "to_fhir"]

KIND = "fhir"
MEDIA_TYPE = "application/fhir+json"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
EMPTY_REASON = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
VERSION_NUMBER = "http://hl7.org/fhir/StructureDefinition/composition-clinicaldocument-versionNumber"
EDQM = "urn:oid:0.4.0.127.0.16.1.1.2.1"

#: section key -> (LOINC code, title); the order and codes of the CDA DLU-EHPAD-DLU sections
SECTIONS: dict[str, tuple[str, str]] = {
    "preferred_establishment": ("11302-7", "Établissement de santé de préférence"),
    "active_problems": ("11450-4", "Pathologies actives"),
    "medical_history": ("11348-0", "Antécédents médicaux"),
    "allergies": ("48765-2", "Allergies et intolérances"),
    "treatments": ("10160-0", "Traitements"),
    "palliative_care": ("18776-5", "Soins palliatifs"),
    "advance_directives": ("42348-3", "Directives anticipées"),
    "observed_state": ("42545-4", "Évènements observés"),
    "bmr": ("30954-2", "Résultats d'examens : portage de BMR"),
    "vaccinations": ("11369-6", "Vaccinations"),
    "attached_documents": ("55107-7", "Documents ajoutés"),
    "comment": ("55112-7", "Commentaire"),
}


class _Document:
    """Collects entries (fullUrl + resource) in order; the Composition goes first at the end."""

    def __init__(self, ids: Ids) -> None:
        self.ids = ids
        self.entries: list[Json] = []

    def add(self, key: str, resource: Json) -> str:
        url = self.ids.url(key)
        body = {"resourceType": resource["resourceType"], "id": self.ids.uuid(key)}
        body.update({k: v for k, v in resource.items() if k != "resourceType"})
        self.entries.append({"fullUrl": url, "resource": body})
        return url


def _ref(url: str) -> Json:
    return {"reference": url}


def _yes_no(value: bool | None) -> str:
    return "non renseigné" if value is None else ("oui" if value else "non")


def _section(key: str, lines: Iterable[str], entries: list[str], empty_reason: str = "") -> Json:
    loinc, title = SECTIONS[key]
    text_lines = list(lines)
    section: Json = {
        "title": title,
        "code": codeable(None, coding(LOINC, loinc)),
        "text": narrative(title, text_lines or ["Aucune information"]),
    }
    if entries:
        section["entry"] = [_ref(url) for url in entries]
    elif empty_reason:
        section["emptyReason"] = codeable(None, coding(EMPTY_REASON, empty_reason))
    return section


def _observation(patient_url: str, when: datetime | date, concept: Json, text: str, value: bool | None) -> Json:
    out: Json = {
        "resourceType": "Observation",
        "status": "final",
        "code": codeable(text, concept),
        "subject": _ref(patient_url),
        "effectiveDateTime": fhir_datetime(when),
    }
    if value is None:
        out["dataAbsentReason"] = codeable(
            None, coding("http://terminology.hl7.org/CodeSystem/data-absent-reason", "unknown", "Unknown")
        )
    else:
        out["valueBoolean"] = value
    return out


def _sections(doc: _Document, record: DluRecord, ctx: RenderContext, patient_url: str) -> list[Json]:
    dlu: DluContent = record.dlu
    updated = record.last_updated
    sections: list[Json] = []

    # Établissement de santé de préférence (1..1)
    if dlu.preferred_establishment is not None:
        url = doc.add("preferred-establishment", health_establishment(dlu.preferred_establishment))
        sections.append(_section("preferred_establishment", [dlu.preferred_establishment.name], [url]))
    else:
        sections.append(_section("preferred_establishment", ["Non renseigné"], [], "unavailable"))

    # Pathologies actives / antécédents médicaux (0..1 each)
    for key, items, status in (
        ("active_problems", dlu.active_problems, "active"),
        ("medical_history", dlu.medical_history, "inactive"),
    ):
        if not items:
            continue
        urls = []
        for index, condition in enumerate(items):
            resource: Json = {
                "resourceType": "Condition",
                "clinicalStatus": codeable(
                    None, coding("http://terminology.hl7.org/CodeSystem/condition-clinical", status)
                ),
                "category": [
                    codeable(
                        None, coding("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item")
                    )
                ],
                "code": codeable(condition.label, *([code(condition.code)] if condition.code else [])),
                "subject": _ref(patient_url),
            }
            if condition.onset:
                resource["onsetDateTime"] = fhir_date(condition.onset)
            urls.append(doc.add(f"{key}/{index}", resource))
        sections.append(_section(key, [c.label for c in items], urls))

    # Allergies et intolérances (0..1)
    if dlu.allergies:
        urls = []
        for index, allergy in enumerate(dlu.allergies):
            resolved = allergy.end is not None and allergy.end <= ctx.now.date()
            resource = {
                "resourceType": "AllergyIntolerance",
                "clinicalStatus": codeable(
                    None,
                    coding(
                        "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                        "resolved" if resolved else "active",
                    ),
                ),
                "code": codeable(allergy.agent, *([code(allergy.agent_code)] if allergy.agent_code else [])),
                "patient": _ref(patient_url),
            }
            if allergy.category != "other":
                resource["category"] = [allergy.category]
            if allergy.onset:
                resource["onsetDateTime"] = fhir_date(allergy.onset)
            if allergy.end:
                resource["note"] = [{"text": f"Fin : {allergy.end.isoformat()}"}]
            if allergy.reaction:
                resource["reaction"] = [{"manifestation": [codeable(allergy.reaction)]}]
            urls.append(doc.add(f"allergies/{index}", resource))
        sections.append(_section("allergies", [a.agent for a in dlu.allergies], urls))

    # Traitements (1..1)
    urls = []
    for index, treatment in enumerate(dlu.treatments):
        finished = treatment.end is not None and treatment.end < ctx.now.date()
        dosage: Json = {}
        if treatment.instructions:
            dosage["text"] = treatment.instructions
        if treatment.frequency:
            dosage["timing"] = {
                "repeat": {
                    "frequency": treatment.frequency.count,
                    "period": treatment.frequency.period,
                    "periodUnit": treatment.frequency.unit,
                }
            }
        if treatment.route:
            route = valuesets.ROUTE_OF_ADMINISTRATION.get(treatment.route)
            dosage["route"] = codeable(route.display, coding(EDQM, route.code, route.display))
        if treatment.dose:
            low = {"value": treatment.dose.value, "unit": treatment.dose.unit}
            if treatment.dose.high is not None:
                high = {"value": treatment.dose.high, "unit": treatment.dose.unit}
                dosage["doseAndRate"] = [{"doseRange": {"low": low, "high": high}}]
            else:
                dosage["doseAndRate"] = [{"doseQuantity": low}]
        resource = {
            "resourceType": "MedicationStatement",
            "status": "completed" if finished else "active",
            "medicationCodeableConcept": codeable(
                treatment.drug, *([code(treatment.drug_code)] if treatment.drug_code else [])
            ),
            "subject": _ref(patient_url),
            "dateAsserted": fhir_datetime(updated),
        }
        if treatment.start or treatment.end:
            period: Json = {}
            if treatment.start:
                period["start"] = fhir_date(treatment.start)
            if treatment.end:
                period["end"] = fhir_date(treatment.end)
            resource["effectivePeriod"] = period
        if dosage:
            resource["dosage"] = [dosage]
        urls.append(doc.add(f"treatments/{index}", resource))
    lines = [t.drug + (f" — {t.instructions}" if t.instructions else "") for t in dlu.treatments]
    sections.append(_section("treatments", lines or ["Aucun traitement en cours"], urls, "nilknown"))

    # Soins palliatifs (optional)
    if dlu.palliative_care is not None:
        concept = coding(SNOMED, "103735009", "Soins palliatifs")
        url = doc.add(
            "palliative-care", _observation(patient_url, updated, concept, "Soins palliatifs", dlu.palliative_care)
        )
        sections.append(_section("palliative_care", [f"Soins palliatifs : {_yes_no(dlu.palliative_care)}"], [url]))

    # Directives anticipées (1..1)
    directives = dlu.advance_directives
    observation = _observation(
        patient_url, updated, coding(LOINC, "75320-2", "Advance directive"), "Directives anticipées", directives.exists
    )
    notes = []
    if directives.location:
        notes.append(f"Lieu : {directives.location}")
    if directives.written_on:
        notes.append(f"Rédigées le {directives.written_on.isoformat()}")
    if notes:
        observation["note"] = [{"text": " ; ".join(notes)}]
    url = doc.add("advance-directives", observation)
    sections.append(
        _section("advance_directives", [f"Directives anticipées : {_yes_no(directives.exists)}", *notes], [url])
    )

    # Évènements observés: état psychique, handicaps, déplacements, autres risques (1..1)
    urls = []
    lines = []
    for item in dlu.observed_state:
        concept_vs = valuesets.OBSERVATION_ETAT_PATIENT.get(item.code)
        observation = _observation(patient_url, updated, code(concept_vs), concept_vs.display, item.present)
        if item.comment:
            observation["note"] = [{"text": item.comment}]
        urls.append(doc.add(f"observed-state/{item.code}", observation))
        lines.append(f"{concept_vs.display} : {_yes_no(item.present)}")
    sections.append(_section("observed_state", lines or ["Aucun évènement observé renseigné"], urls, "notasked"))

    # Résultats d'examens: BMR (1..1)
    bmr = dlu.bmr
    concept = coding("http://hl7.org/fhir/sid/icd-10", "U83.71", "BMR")
    observation = _observation(
        patient_url, bmr.observed_on or updated, concept, "Portage de bactérie multirésistante (BMR)", bmr.carrier
    )
    if bmr.details:
        observation["note"] = [{"text": bmr.details}]
    url = doc.add("bmr", observation)
    sections.append(
        _section("bmr", [f"Portage de BMR : {_yes_no(bmr.carrier)}", *([bmr.details] if bmr.details else [])], [url])
    )

    # Vaccinations (0..1)
    if dlu.vaccinations:
        urls = []
        for index, vaccination in enumerate(dlu.vaccinations):
            resource = {
                "resourceType": "Immunization",
                "status": "completed",
                "vaccineCode": codeable(vaccination.vaccine, *([code(vaccination.code)] if vaccination.code else [])),
                "patient": _ref(patient_url),
            }
            if vaccination.administered_on:
                resource["occurrenceDateTime"] = fhir_date(vaccination.administered_on)
            else:
                resource["occurrenceString"] = "date inconnue"
            urls.append(doc.add(f"vaccinations/{index}", resource))
        sections.append(_section("vaccinations", [v.vaccine for v in dlu.vaccinations], urls))

    # Documents ajoutés (1..1, at least one item: the record requires it)
    urls = []
    for attached in dlu.attached_documents:
        concept_vs = valuesets.CHECKLIST_DLU.get(attached.code)
        attachment: Json = {"title": concept_vs.display}
        if attached.content is not None and attached.media_type is not None:
            attachment = {
                "contentType": attached.media_type,
                "data": attached.content.replace("\r", "").replace("\n", ""),
                "title": concept_vs.display,
            }
        resource = {
            "resourceType": "DocumentReference",
            "status": "current",
            "type": codeable(concept_vs.display, code(concept_vs)),
            "subject": _ref(patient_url),
            "date": fhir_datetime(ctx.now),
            "content": [{"attachment": attachment}],
        }
        urls.append(doc.add(f"attached-documents/{attached.code}", resource))
    lines = [valuesets.CHECKLIST_DLU.get(a.code).display for a in dlu.attached_documents]
    sections.append(_section("attached_documents", lines, urls))

    # Commentaire non codé (0..1, narrative only)
    if dlu.comment:
        sections.append(_section("comment", dlu.comment.splitlines() or [dlu.comment], []))
    return sections


def _practitioner(doc: _Document, seen: dict[str, str], professional: Professional, record: DluRecord) -> str:
    """One Practitioner entry per distinct professional (author, signer and GP may coincide)."""
    key = professional.model_dump_json()
    if key not in seen:
        seen[key] = doc.add(f"practitioner/{len(seen)}", practitioner(professional, record.essms))
    return seen[key]


def to_fhir(record: DluRecord, ctx: RenderContext) -> Rendition:
    """The DLU as a FHIR R4 document Bundle (JSON bytes), conformance tag ``fhir:r4``."""
    if ctx.now.tzinfo is None or ctx.now.utcoffset() is None:
        raise ValueError("RenderContext.now must be timezone-aware")
    ids = Ids(ctx.submission_id, "dlu-fhir")
    document_id = ids.url("document")
    previous = ctx.previous.get(KIND)
    if previous is not None and previous.document_id == document_id:
        raise MappingFailed("previous FHIR DLU version has this submission's document id: rendered twice?")
    set_id = previous.set_id if previous is not None else ids.url("series")
    version = previous.version + 1 if previous is not None else 1

    doc = _Document(ids)
    composition_url = ids.url("composition")
    essms_url = doc.add("essms", organization(record.essms))
    professionals: dict[str, str] = {}
    author_url = _practitioner(doc, professionals, record.author, record)
    signer_url = _practitioner(doc, professionals, record.signer, record)
    gp = record.person.general_practitioner
    gp_url = _practitioner(doc, professionals, gp, record) if gp is not None else ""
    patient_url = doc.add(
        "patient",
        patient(record.person, record.essms, managing_organization=essms_url, general_practitioner=gp_url),
    )
    sections = _sections(doc, record, ctx, patient_url)

    composition: Json = {
        "resourceType": "Composition",
        "id": ids.uuid("composition"),
        "extension": [{"url": VERSION_NUMBER, "valueString": str(version)}],
        "identifier": {"system": "urn:ietf:rfc:3986", "value": set_id},
        "status": "final",
        "type": codeable("Document de liaison d'urgence", coding(LOINC, "74207-2")),
        "subject": _ref(patient_url),
        "date": fhir_datetime(ctx.now),
        "author": [_ref(author_url), _ref(essms_url)],
        "title": "Document de liaison d'urgence",
        "confidentiality": record.confidentiality,
        "attester": [{"mode": "legal", "time": fhir_datetime(ctx.now), "party": _ref(signer_url)}],
        "custodian": _ref(essms_url),
    }
    if previous is not None and previous.document_id is not None:
        composition["relatesTo"] = [
            {"code": "replaces", "targetIdentifier": {"system": "urn:ietf:rfc:3986", "value": previous.document_id}}
        ]
    composition["event"] = [
        {
            "code": [codeable(None, coding(LOINC, "34117-2", "History and physical note"))],
            "period": {"start": fhir_datetime(record.last_updated)},
        }
    ]
    composition["section"] = sections

    bundle: Json = {
        "resourceType": "Bundle",
        "id": ids.uuid("bundle"),
        "identifier": {"system": "urn:ietf:rfc:3986", "value": document_id},
        "type": "document",
        "timestamp": fhir_datetime(ctx.now),
        "entry": [{"fullUrl": composition_url, "resource": composition}, *doc.entries],
    }
    content = json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Rendition(
        kind=KIND,
        media_type=MEDIA_TYPE,
        content=content,
        document_id=document_id,
        set_id=set_id,
        version=version,
        conformance=("fhir:r4",),
        replaces=previous.document_id if previous is not None else None,  # None when no version reached anybody
    )
