"""FHIR R4 as ANS TDDUI 2.x models a DUI's data: resource builders, the transaction Bundle, and
the "tddui-export" document type (stays, events, evaluations and the PPA of one person).

The IG (``shared/specs/tddui-fhir.md``, ``shared/specs/ppa.md``): the producer (DUI, here through
the gateway) POSTs a ``transaction`` Bundle (profile ``tddui-bundle``), every entry ``POST``,
references between entries by ``urn:uuid`` fullUrls. Business identifiers follow the IG scheme
``system = https://identifiant-medicosocial-<objet>.esante.gouv.fr`` and
``value = 3<FINESS>/<local person id>-<TYPE>-<local item id>``.

Why a separate "tddui-export" document type rather than more renditions of the PPA: the export
is a *dossier* (everything the DUI knows of a person, for another DUI or a regional system on a
change of establishment or vendor), not a document for Mon espace santé; it has no CDA form,
goes only to FHIR destinations, and is not a version of the PPA's document series (a new export
does not replace the PPA in the DMP). The PPA's own "fhir" rendition uses the same builders.

Everything is pure: ids derive from ``RenderContext.submission_id``; dates come from the record
or from ``RenderContext.now``.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import date, datetime
from typing import Any, ClassVar, Literal, Self

from fhir.resources.R4B.bundle import Bundle
from pydantic import BaseModel, Field, model_validator

from mappings import fhir
from mappings.base import Code, MappingFailed, RecordFacts, RenderContext, Rendition
from mappings.consent import ConsentFamily
from mappings.ppa_model import (
    SERAFIN_SYSTEM_FHIR,
    Agreement,
    LocalId,
    PpaStatus,
    ProjetPersonnalise,
    besoin,
    prestation,
)
from mappings.record import (
    AwareDatetime,
    DuiRecord,
    Essms,
    IdentityStatus,
    InsKind,
    Label,
    Person,
    Professional,
    RelatedPerson,
    Text,
    facts,
)

__all__ = [
    "EXPORT",
    "TDDUI",
    "AccompanimentEvent",
    "BundleBuilder",
    "Evaluation",
    "EvaluationItem",
    "Stay",
    "TdduiExportRecord",
    "birth_order",
    "bundle_bytes",
]

TDDUI = "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/"
TDDUI_CS = "https://interop.esante.gouv.fr/ig/fhir/tddui/CodeSystem/"
FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
FR_CORE_CS = "https://hl7.fr/ig/fhir/core/CodeSystem/"
DISCRIMINATOR = TDDUI + "tddui-discriminator"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_TRE_R216 = "https://mos.esante.gouv.fr/NOS/TRE_R216-HL7RoleCode/FHIR/TRE-R216-HL7RoleCode"
_TRE_R217 = "https://mos.esante.gouv.fr/NOS/TRE_R217-ProtectionJuridique/FHIR/TRE-R217-ProtectionJuridique"
#: JDV_J11 codes from TRE_R217 (protection juridique)
_LEGAL_PROTECTION = frozenset({"TUTEUR", "CURATEUR", "MSVG"})
_ID_SYSTEM = "https://identifiant-medicosocial-{}.esante.gouv.fr"
_STATUS_CODES = {
    IdentityStatus.PROVISOIRE: "PROV",
    IdentityStatus.RECUPEREE: "RECUP",
    IdentityStatus.VALIDEE: "VALI",
    IdentityStatus.QUALIFIEE: "QUAL",
}
# FR Core INS slices: (type code, use) per INS OID
_INS_SLICES = {
    "1.2.250.1.213.1.4.8": ("INS-NIR", "official"),
    "1.2.250.1.213.1.4.9": ("INS-NIA", "temp"),
    "1.2.250.1.213.1.4.10": ("INS-NIR-TEST", "official"),
    "1.2.250.1.213.1.4.11": ("INS-NIR-DEMO", "official"),
}
_GENDER = {"M": "male", "F": "female", "U": "unknown"}
TASK_REASON = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Task.reason"
"""R5 Task.reason (0..*) as an R4 cross-version extension: every need a prestation answers."""
BILAN_CATEGORY_SYSTEM = "https://smt.esante.gouv.fr/fhir/CodeSystem/tre-r389-statut-bilan-projet-personnalise"
"""TRE_R389 (JDV_J366 StatutBilanProjetPersonnaliseMs): category of a PPA review."""
_REVIEW_KIND = {"intermediate": ("INTERMEDIAIRE", "Intermédiaire"), "final": ("FINAL", "Final")}
_TELECOM_USE = {"home": "home", "work": "work", "mobile": "mobile", "emergency": "work"}
_QUESTIONNAIRES = {
    "serafin": "tddui-questionnaire-serafin",
    "aggir-pa-ssiad": "tddui-questionnaire-aggir-pa-ssiad",
    "aggir-ph-ssiad": "tddui-questionnaire-aggir-ph-ssiad",
    "situation-ssiad": "tddui-questionnaire-situation-ssiad",
}


# --------------------------------------------------------------------------------------------
# What the gateway knows of a person besides the PPA: stays, events, evaluations
# --------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}


class Stay(_Model):
    """A stay (séjour) of the person in the ESSMS."""

    id: LocalId = Field(description="Identifier of the stay in the DUI.")
    start: date = Field(description="Date of entry (start of the accompaniment).")
    end: date | None = Field(default=None, description="Date of exit.")
    admission_decided_on: date | None = Field(default=None, description="Date of the admission decision.")
    planned_end: date | None = Field(default=None, description="Planned end.")
    encounter_class: Literal["IMP", "AMB", "HH", "SS", "FLD", "VR"] = Field(
        default="IMP", description="HL7 ActCode class: IMP hébergement, AMB accueil de jour, HH à domicile..."
    )
    entry_label: Label | None = Field(default=None, description="How the person came in, in words.")
    exit_label: Label | None = Field(default=None, description="How the person left, in words.")
    comment: Text | None = Field(default=None, description="Comment.")

    @model_validator(mode="after")
    def _period(self) -> Self:
        if self.end is not None and self.end < self.start:
            raise ValueError("end is before start")
        return self


class AccompanimentEvent(_Model):
    """One event of the accompaniment (visit, intervention, activity), with its SERAFIN-PH prestations."""

    id: LocalId = Field(description="Identifier of the event in the DUI.")
    stay_id: LocalId | None = Field(default=None, description="The stay it belongs to (Stay.id).")
    start: AwareDatetime = Field(description="Start.")
    end: AwareDatetime = Field(description="End.")
    status: Literal["planned", "finished", "cancelled"] = Field(default="finished", description="Status.")
    label: Label = Field(description="What happened, in words.")
    prestations: list[str] = Field(
        default_factory=list, max_length=10, description="SERAFIN-PH prestation codes (JDV_J284 / JDV_J283)."
    )
    professional: Professional | None = Field(default=None, description="Who intervened.")
    reason: Label | None = Field(default=None, description="Why.")
    report: Text | None = Field(default=None, description="Report (compte rendu).")
    comment: Text | None = Field(default=None, description="Comment.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.end < self.start:
            raise ValueError("end is before start")
        for code in self.prestations:
            try:
                prestation(code)
            except KeyError:
                raise ValueError("not a SERAFIN-PH prestation (JDV_J284 / JDV_J283)") from None
        return self


class EvaluationItem(_Model):
    """One answered item of an evaluation grid."""

    link_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Item linkId in the TDDUI questionnaire.")
    text: Label = Field(description="The item, in words.")
    value: int = Field(ge=0, le=1000, description="Integer answer.")


class Evaluation(_Model):
    """An evaluation (SERAFIN-PH needs grid, AGGIR...) answered for the person."""

    id: LocalId = Field(description="Identifier of the evaluation in the DUI.")
    questionnaire: Literal["serafin", "aggir-pa-ssiad", "aggir-ph-ssiad", "situation-ssiad"] = Field(
        description="TDDUI questionnaire."
    )
    authored: date = Field(description="Date of the evaluation.")
    stay_id: LocalId | None = Field(default=None, description="The stay it was made in (Stay.id).")
    author: Professional | None = Field(default=None, description="Who evaluated.")
    items: list[EvaluationItem] = Field(min_length=1, max_length=200, description="Answers.")
    comment: Text | None = Field(default=None, description="Comment.")


class TdduiExportRecord(DuiRecord):
    """What the gateway hands a third party (another DUI, a regional SI) about one person, as TDDUI."""

    birth_order: int | None = Field(
        default=None, ge=1, le=999, description="Rang de naissance (TDDUI, needed when the INS is not sent)."
    )
    stays: list[Stay] = Field(default_factory=list, max_length=50, description="Stays.")
    events: list[AccompanimentEvent] = Field(default_factory=list, max_length=500, description="Events.")
    evaluations: list[Evaluation] = Field(default_factory=list, max_length=100, description="Evaluations.")
    ppa: ProjetPersonnalise | None = Field(default=None, description="The current PPA, if any.")

    @model_validator(mode="after")
    def _refs(self) -> Self:
        stays = {s.id for s in self.stays}
        if len(stays) != len(self.stays):
            raise ValueError("stays has duplicate identifiers")
        if len({e.id for e in self.events}) != len(self.events):
            raise ValueError("events has duplicate identifiers")
        if len({e.id for e in self.evaluations}) != len(self.evaluations):
            raise ValueError("evaluations has duplicate identifiers")
        for event in self.events:
            if event.stay_id is not None and event.stay_id not in stays:
                raise ValueError(f"event {event.id!r} names unknown stay {event.stay_id!r}")
        for evaluation in self.evaluations:
            if evaluation.stay_id is not None and evaluation.stay_id not in stays:
                raise ValueError(f"evaluation {evaluation.id!r} names unknown stay {evaluation.stay_id!r}")
        if not (self.stays or self.events or self.evaluations or self.ppa):
            raise ValueError("an export carries at least a stay, an event, an evaluation or a PPA")
        return self


def birth_order(person: Person, given: int | None) -> int:
    """Rang de naissance: given by the DUI, else the 3 digits of the NIR after the commune (characters 11-13)."""
    if given is not None:
        return given
    if person.ins is not None and person.ins.kind is InsKind.NIR:
        rank = int(person.ins.matricule[10:13])
        if rank >= 1:
            return rank
    raise MappingFailed(
        "TDDUI needs the birth order (rang de naissance) of a person whose INS is not transmitted",
        pointer="/birth_order",
    )


# --------------------------------------------------------------------------------------------
# Resource builders
# --------------------------------------------------------------------------------------------

Json = dict[str, Any]


def _date(value: date | datetime) -> str:
    return value.isoformat()


def _ext(name: str, **value: Any) -> Json:
    return {"url": TDDUI + name, **value}


def _coding(system: str, code: str, display: str | None = None) -> Json:
    out: Json = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _telecoms(items: list[Any]) -> list[Json]:
    return [{"system": t.system, "value": t.value, **({"use": _TELECOM_USE[t.use]} if t.use else {})} for t in items]


def _address(address: Any) -> Json | None:
    if address is None:
        return None
    out: Json = {}
    if address.lines:
        out["line"] = list(address.lines)
    if address.city:
        out["city"] = address.city
    if address.postal_code:
        out["postalCode"] = address.postal_code
    if address.country:
        out["country"] = address.country
    return out or None


def _bilan_type(code: str, *, output: bool = False) -> Json:
    """Task bilan input/output type (TDDUI 2.2.0 code systems tddui-task-input-bilan / -output-bilan)."""
    system = TDDUI_CS + ("tddui-task-output-bilan" if output else "tddui-task-input-bilan")
    return {"coding": [_coding(system, code)]}


def _discriminated(code: str) -> Json:
    return {"url": DISCRIMINATOR, "valueCodeableConcept": {"coding": [_coding(TDDUI_CS + "tddui-discriminator", code)]}}


class BundleBuilder:
    """Collects TDDUI resources for one person and makes the transaction Bundle.

    Each resource gets a deterministic ``urn:uuid`` fullUrl derived from the submission id and
    a key, so the same record and context give the same bundle.
    """

    def __init__(self, record: DuiRecord, ctx: RenderContext, *, order: int | None) -> None:
        self.record = record
        self.ctx = ctx
        self.finess = record.essms.finess
        self.person = record.person
        self.entries: list[Json] = []
        self._urls: dict[str, str] = {}
        self._birth_order = order
        self.patient_ref = self._add("Patient", "person", self._patient())
        self.organization_ref = self._add("Organization", "organization", self._organization(record.essms))

    # -- identifiers and references ----------------------------------------------------------

    def url(self, key: str) -> str:
        """The fullUrl of the resource added under ``key``."""
        return self._urls[key]

    def business_id(self, kind: str, what: str, local: str) -> Json:
        """The TDDUI business identifier ``3<FINESS>/<person>-<KIND>-<local>``."""
        return {"system": _ID_SYSTEM.format(what), "value": f"3{self.finess}/{self.person.local_id}-{kind}-{local}"}

    def _add(self, resource_type: str, key: str, resource: Json) -> str:
        if key in self._urls:
            return self._urls[key]
        full_url = f"urn:uuid:{uuid.uuid5(self.ctx.submission_id, f'tddui/{key}')}"
        self._urls[key] = full_url
        self.entries.append(
            {"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": resource_type}}
        )
        return full_url

    def practitioner(self, pro: Professional) -> str:
        """Reference to the Practitioner for ``pro`` (added once): the shared FR Core builder, TDDUI profile."""
        key = f"practitioner/{pro.rpps or pro.internal_id}"
        if key in self._urls:
            return self._urls[key]
        resource = fhir.practitioner(pro, self.record.essms)
        resource["meta"] = {"profile": [TDDUI + "tddui-practitioner"]}
        return self._add("Practitioner", key, resource)

    def related_person(self, related: RelatedPerson, key: str) -> str:
        """Reference to a RelatedPerson of the person (e.g. the legal representative)."""
        resource: Json = {
            "resourceType": "RelatedPerson",
            "meta": {"profile": [TDDUI + "tddui-related-person-contact"]},
            # FR Core RelatedPerson.identifier 1..1: the entry's own stable id
            "identifier": [
                {
                    "system": "urn:ietf:rfc:3986",
                    "value": f"urn:uuid:{uuid.uuid5(self.ctx.submission_id, f'tddui/related/{key}')}",
                }
            ],
            "patient": {"reference": self.patient_ref},
            "name": [
                {"family": related.family_name, **({"given": [related.given_name]} if related.given_name else {})}
            ],
        }
        if related.relationship:
            # TDDUI 2.2.0: legal protection (JDV_J11 codes of TRE_R217) goes to relationship:LegalProtection,
            # the other relations to relationship:RelationType (TRE_R216, FR Core)
            system = _TRE_R217 if related.relationship in _LEGAL_PROTECTION else _TRE_R216
            resource["relationship"] = [{"coding": [_coding(system, related.relationship)]}]
        if related.telecoms:
            resource["telecom"] = _telecoms(related.telecoms)
        return self._add("RelatedPerson", f"related/{key}", resource)

    # -- person and organisation ---------------------------------------------------------------

    def _patient(self) -> Json:
        """The shared FR Core Patient (INS only when qualifiée), as tddui-patient-ins or tddui-patient."""
        person = self.person
        with_ins = fhir.ins_identifier(person) is not None
        resource = fhir.patient(person, self.record.essms)
        resource["meta"] = {"profile": [TDDUI + ("tddui-patient-ins" if with_ins else "tddui-patient")]}
        for identifier in resource["identifier"]:
            if identifier.get("system") == _ID_SYSTEM.format("localusager"):
                # TDDUI 2.2.0 slice identifier:PI (FR Core: type v2-0203 PI)
                identifier["type"] = {"coding": [_coding(V2_0203, "PI", "Patient internal identifier")]}
        if not with_ins:
            # tddui-patient: rang de naissance (birthDate extension) is mandatory when no INS is sent
            resource["_birthDate"] = {
                "extension": [_ext("tddui-birth-order", valuePositiveInt=birth_order(person, self._birth_order))]
            }
        return resource

    def _organization(self, essms: Essms) -> Json:
        legal = essms.legal_entity_finess or essms.finess
        identifiers: list[Json] = [
            {
                "use": "official",
                "type": {"coding": [_coding(FR_CORE_CS + "fr-core-cs-v2-0203", "IDNST")]},
                "system": "urn:oid:1.2.250.1.71.4.2.2",
                "value": f"1{legal}",
            },
            {
                "type": {
                    "coding": [
                        _coding(FR_CORE_CS + "fr-core-cs-v2-0203", "FINEJ" if essms.legal_entity_finess else "FINEG")
                    ]
                },
                "system": "https://finess.esante.gouv.fr",
                "value": legal,
            },
        ]
        resource: Json = {
            "resourceType": "Organization",
            "meta": {"profile": [TDDUI + "tddui-organization"]},
            "identifier": identifiers,
            "name": essms.name,
        }
        if essms.telecoms:
            resource["telecom"] = _telecoms(essms.telecoms)
        address = _address(essms.address)
        if address:
            resource["address"] = [address]
        return resource

    # -- stays, events, evaluations --------------------------------------------------------------

    def stay(self, stay: Stay) -> str:
        """Encounter (tddui-encounter-sejour)."""
        extensions: list[Json] = []
        if stay.admission_decided_on:
            extensions.append(_ext("tddui-admission-date", valueDateTime=_date(stay.admission_decided_on)))
        if stay.entry_label:
            extensions.append(_ext("tddui-entry-mode-label", valueString=stay.entry_label))
        if stay.exit_label:
            extensions.append(_ext("tddui-exit-mode-label", valueString=stay.exit_label))
        if stay.planned_end:
            extensions.append(
                {
                    "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedEndDate",
                    "valueDateTime": _date(stay.planned_end),
                }
            )
        if stay.comment:
            extensions.append(_ext("tddui-comment", valueString=stay.comment))
        period: Json = {"start": _date(stay.start)}
        if stay.end:
            period["end"] = _date(stay.end)
        resource: Json = {
            "resourceType": "Encounter",
            "meta": {"profile": [TDDUI + "tddui-encounter-sejour"]},
            **({"extension": extensions} if extensions else {}),
            "identifier": [
                {
                    "type": {
                        "coding": [_coding(TDDUI_CS + "tddui-encounter-identifier", "SEJ", "Identifiant du séjour")]
                    },
                    **self.business_id("SEJOUR", "sejour", stay.id),
                }
            ],
            "status": "finished" if stay.end and stay.end <= self.ctx.now.date() else "in-progress",
            "class": _coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", stay.encounter_class),
            "subject": {"reference": self.patient_ref},
            "period": period,
            "serviceProvider": {"reference": self.organization_ref},
        }
        return self._add("Encounter", f"stay/{stay.id}", resource)

    def event(self, event: AccompanimentEvent) -> str:
        """Encounter (tddui-encounter-evenement), typed with its SERAFIN-PH prestations."""
        extensions = [_ext("tddui-event-label", valueString=event.label)]
        if event.report:
            extensions.append(_ext("tddui-event-report", valueString=event.report))
        if event.reason:
            extensions.append(_ext("tddui-event-reason", valueString=event.reason))
        if event.comment:
            extensions.append(_ext("tddui-comment", valueString=event.comment))
        resource: Json = {
            "resourceType": "Encounter",
            "meta": {"profile": [TDDUI + "tddui-encounter-evenement"]},
            "extension": extensions,
            "identifier": [
                {
                    "type": {"coding": [_coding(FR_CORE_CS + "fr-core-cs-identifier-type", "VN")]},
                    **self.business_id("EVN", "evenement", event.id),
                }
            ],
            "status": event.status,
            "class": _coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "HH"),
            "subject": {"reference": self.patient_ref},
            "period": {"start": _date(event.start), "end": _date(event.end)},
            "serviceProvider": {"reference": self.organization_ref},
        }
        if event.prestations:
            resource["type"] = [
                {"coding": [_coding(SERAFIN_SYSTEM_FHIR, code, prestation(code).display)]} for code in event.prestations
            ]
        if event.professional is not None:
            resource["participant"] = [
                {
                    "type": [
                        {"coding": [_coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "PART")]}
                    ],
                    "individual": {"reference": self.practitioner(event.professional)},
                }
            ]
        if event.stay_id is not None:
            resource["partOf"] = {"reference": self.url(f"stay/{event.stay_id}")}
        return self._add("Encounter", f"event/{event.id}", resource)

    def evaluation(self, evaluation: Evaluation) -> str:
        """QuestionnaireResponse (tddui-questionnaire-response)."""
        resource: Json = {
            "resourceType": "QuestionnaireResponse",
            "meta": {"profile": [TDDUI + "tddui-questionnaire-response"]},
            "identifier": self.business_id("EVAL", "evaluation", evaluation.id),
            "questionnaire": f"https://interop.esante.gouv.fr/ig/fhir/tddui/Questionnaire/{_QUESTIONNAIRES[evaluation.questionnaire]}",
            "status": "completed",
            "subject": {"reference": self.patient_ref},
            "authored": _date(evaluation.authored),
            "item": [
                {"linkId": item.link_id, "text": item.text, "answer": [{"valueInteger": item.value}]}
                for item in evaluation.items
            ],
        }
        if evaluation.comment:
            resource["extension"] = [_ext("tddui-comment", valueString=evaluation.comment)]
        if evaluation.stay_id is not None:
            resource["encounter"] = {"reference": self.url(f"stay/{evaluation.stay_id}")}
        if evaluation.author is not None:
            resource["author"] = {"reference": self.practitioner(evaluation.author)}
        return self._add("QuestionnaireResponse", f"evaluation/{evaluation.id}", resource)

    # -- projet personnalisé -----------------------------------------------------------------------

    def projet_personnalise(self, ppa: ProjetPersonnalise) -> str:
        """CarePlan (tddui-careplan-projet-personnalise) with its consents, needs, goals and prestations."""
        if ppa.status is PpaStatus.DRAFT:
            raise MappingFailed(
                "a draft PPA is not shared: TDDUI requires the structure's agreement (accordStructure)",
                pointer="/ppa/status",
            )
        careplan_url = f"urn:uuid:{uuid.uuid5(self.ctx.submission_id, 'tddui/careplan')}"
        self._urls["careplan"] = careplan_url  # reserved now: the other resources point to it
        pros = {c.key: self.practitioner(c.professional) for c in ppa.contributors}

        supporting: list[Json] = []
        for index, agreement in enumerate(ppa.agreements):
            consent = self._agreement(agreement, pros, index)
            slice_code = "accordStructure" if agreement.party == "structure" else "accordUsager"
            supporting.append({"extension": [_discriminated(slice_code)], "reference": consent})
        for refusal in ppa.sharing_refusals:
            # the person's (or representative's) stance: TDDUI 2.2.0 slice supportingInfo:accordUsager,
            # recognised by its discriminator extension (1..1 on every supportingInfo)
            refusal_url = self._sharing_refusal(refusal.partner, refusal.on, refusal.by)
            supporting.append({"extension": [_discriminated("accordUsager")], "reference": refusal_url})

        need_urls: dict[str, str] = {}
        for need in ppa.needs:
            code = besoin(need.code)
            resource: Json = {
                "resourceType": "ServiceRequest",
                "meta": {"profile": [TDDUI + "tddui-service-request-besoin"]},
                "identifier": [self.business_id("BESO", "besoin", need.id)],
                "basedOn": [{"reference": careplan_url}],
                "status": "active",
                "intent": "plan",
                "category": [{"coding": [_coding(SERAFIN_SYSTEM_FHIR, code.code, code.display)]}],
                "code": {"text": need.description},
                "subject": {"reference": self.patient_ref},
            }
            if need.analysis:
                resource["orderDetail"] = [{"text": need.analysis}]
            need_urls[need.id] = self._add("ServiceRequest", f"need/{need.id}", resource)

        goal_urls: list[str] = []
        for goal in ppa.goals:
            notes = [{"extension": [_discriminated("titreObjectif")], "text": goal.title}]
            if goal.person_opinion:
                notes.append({"extension": [_discriminated("avisUsagerObjectif")], "text": goal.person_opinion})
            if goal.strategy:
                notes.append({"extension": [_discriminated("strategieMiseEnOeuvreObjectif")], "text": goal.strategy})
            resource = {
                "resourceType": "Goal",
                "meta": {"profile": [TDDUI + "tddui-goal-objectif"]},
                "extension": [_ext("tddui-careplan-reference", valueReference={"reference": careplan_url})],
                "identifier": [self.business_id("OBJE", "objectif", goal.id)],
                "lifecycleStatus": goal.state.value,
                "description": {"text": goal.description},
                "subject": {"reference": self.patient_ref},
                "addresses": [{"reference": need_urls[goal.need_id]}],
                "note": notes,
            }
            if goal.achievement is not None:
                resource["achievementStatus"] = {
                    "coding": [
                        _coding("http://terminology.hl7.org/CodeSystem/goal-achievement", goal.achievement.value)
                    ]
                }
            if goal.expected_result or goal.due_date:
                target: Json = {}
                if goal.expected_result:
                    target["detailString"] = goal.expected_result
                if goal.due_date:
                    target["dueDate"] = _date(goal.due_date)
                resource["target"] = [target]
            goal_urls.append(self._add("Goal", f"goal/{goal.id}", resource))

        wish_urls = [self._wish(text, index, ppa) for index, text in enumerate(ppa.expression.wishes)]
        if ppa.expression.life_project:
            wish_urls.append(self._life_project(ppa.expression.life_project, ppa))

        task_urls: list[str] = []
        for item in ppa.prestations:
            code = prestation(item.code)
            resource = {
                "resourceType": "Task",
                "meta": {"profile": [TDDUI + "tddui-task-prestation"]},
                "identifier": [self.business_id("PRES", "prestation", item.id)],
                "basedOn": [{"reference": careplan_url}],
                "status": "in-progress" if item.end is None or item.end >= self.ctx.now.date() else "completed",
                "intent": "plan",
                "for": {"reference": self.patient_ref},
                # Every need the prestation answers. TDDUI links Prestation -> Besoin only through
                # partOf Task action -> input[objectif] -> Goal.addresses, and R4 Task.reasonReference
                # is 0..1: the R5 Task.reason cross-version extension carries them all, in DUI order,
                # and reasonReference keeps the first for R4-only readers (docs/ppa.md).
                "extension": [
                    {"url": TASK_REASON, "valueReference": {"reference": need_urls[need_id]}}
                    for need_id in item.need_ids
                ],
                "reasonReference": {"reference": need_urls[item.need_ids[0]]},
                "input": [
                    {
                        "type": {"coding": [_coding(TDDUI_CS + "tddui-task-input-prestation", "titre")]},
                        "valueString": item.title,
                    },
                    {
                        "type": {"coding": [_coding(TDDUI_CS + "tddui-task-input-prestation", "typePrestation")]},
                        "valueCodeableConcept": {"coding": [_coding(SERAFIN_SYSTEM_FHIR, code.code, code.display)]},
                    },
                ],
            }
            if item.responsible is not None:
                resource["owner"] = {"reference": pros[item.responsible]}
            if item.start or item.end:
                period: Json = {}
                if item.start:
                    period["start"] = _date(item.start)
                if item.end:
                    period["end"] = _date(item.end)
                resource["executionPeriod"] = period
            if item.frequency:
                resource["note"] = [{"text": item.frequency}]
            task_urls.append(self._add("Task", f"prestation/{item.id}", resource))

        for index in range(len(ppa.reviews)):
            self._review(ppa, index)

        status = "active"
        if ppa.period_end is not None and ppa.period_end < self.ctx.now.date():
            status = "completed"
        period = {"start": _date(ppa.period_start)}
        if ppa.period_end:
            period["end"] = _date(ppa.period_end)
        careplan: Json = {
            "resourceType": "CarePlan",
            "meta": {"profile": [TDDUI + "tddui-careplan-projet-personnalise"]},
            "identifier": [self.business_id("PPER", "projetpersonnalise", ppa.id)],
            "status": status,
            "intent": "plan",
            "title": ppa.title,
            "description": ppa.expression.own_words,
            "subject": {"reference": self.patient_ref},
            "period": period,
            "created": _date(ppa.elaborated_on),
            "author": {"reference": pros[ppa.referent]},
            "contributor": [{"reference": url} for url in dict.fromkeys(pros.values())],
            "supportingInfo": supporting,
            "goal": [{"reference": url} for url in [*goal_urls, *wish_urls]],
            "activity": [{"reference": {"reference": url}} for url in task_urls],
        }
        if ppa.communication:
            careplan["note"] = [{"text": ppa.communication}]
        self.entries.append(
            {"fullUrl": careplan_url, "resource": careplan, "request": {"method": "POST", "url": "CarePlan"}}
        )
        return careplan_url

    def _agreement(self, agreement: Agreement, pros: dict[str, str], index: int) -> str:
        if agreement.party == "structure":
            assert agreement.by is not None  # checked by the model
            performer = pros[agreement.by]
        elif agreement.party == "person":
            performer = self.patient_ref
        else:
            rep = self.person.legal_representative
            if rep is None:
                raise MappingFailed(
                    "an agreement of the legal representative needs person.legal_representative",
                    pointer=f"/ppa/agreements/{index}",
                )
            performer = self.related_person(rep, "legal-representative")
        resource: Json = {
            "resourceType": "Consent",
            "meta": {"profile": [TDDUI + "tddui-consent-accord"]},
            "status": "active" if agreement.agreed else "rejected",
            "scope": {
                "coding": [
                    _coding("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", "Privacy Consent")
                ]
            },
            "category": [{"coding": [_coding("http://loinc.org", "59284-0")]}],
            "patient": {"reference": self.patient_ref},
            "dateTime": _date(agreement.on),
            "performer": [{"reference": performer}],
            "policy": [{"authority": "https://www.legifrance.gouv.fr/codes/article_lc/LEGIARTI000006796419"}],
        }
        return self._add("Consent", f"agreement/{index}", resource)

    def _sharing_refusal(self, partner: ConsentFamily, on: date, by: str) -> str:
        performer = self.patient_ref
        if by == "legal_representative" and self.person.legal_representative is not None:
            performer = self.related_person(self.person.legal_representative, "legal-representative")
        # The person's (or representative's) dated stance on sharing: an accord with a "deny" provision.
        resource: Json = {
            "resourceType": "Consent",
            "meta": {"profile": [TDDUI + "tddui-consent-accord"]},
            "status": "active",
            "scope": {
                "coding": [
                    _coding("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", "Privacy Consent")
                ]
            },
            "category": [{"coding": [_coding("http://loinc.org", "59284-0")]}],
            "patient": {"reference": self.patient_ref},
            "dateTime": _date(on),
            "performer": [{"reference": performer}],
            "policy": [{"uri": "https://www.legifrance.gouv.fr/codes/article_lc/LEGIARTI000031921398"}],
            "provision": {"type": "deny", "purpose": [_coding("urn:dui-gateway:partner", partner.value)]},
        }
        return self._add("Consent", f"refusal/{partner.value}", resource)

    def _review(self, ppa: ProjetPersonnalise, index: int) -> str:
        """Task (tddui-task-bilan, TDDUI 2.2.0): a review (bilan) of the PPA already held.

        Reviews have no id of their own in the record: the ``BILA`` identifier's local part is the
        PPA id and the review's rank in ``ppa.reviews`` (``<ppa id>-<n>``, from 1). The IG's bilan
        has no participant element: those present (contributors, and the person when present) go
        to ``input[invite]`` (text). The latest review carries the PPA's next evaluation date as
        ``input[dateProchainBilan]``. No ``pieceJointe``: it is 0..* in 2.2.0 (the 1..1
        ``pieceJointeBilan`` extension was a 2.1.0-ballot draft).
        """
        review = ppa.reviews[index]
        present = [self._participant(ppa, key) for key in review.participants]
        if review.person_present:
            present.insert(0, "Usager")
        inputs: list[Json] = []
        if present:
            inputs.append({"type": _bilan_type("invite"), "valueString": "; ".join(present)})
        latest = max(range(len(ppa.reviews)), key=lambda i: (ppa.reviews[i].on, i))
        if index == latest:
            inputs.append({"type": _bilan_type("dateProchainBilan"), "valueDateTime": _date(ppa.next_evaluation_on)})
        code, display = _REVIEW_KIND[review.kind]
        resource: Json = {
            "resourceType": "Task",
            "meta": {"profile": [TDDUI + "tddui-task-bilan"]},
            "identifier": [self.business_id("BILA", "bilan", f"{ppa.id}-{index + 1}")],
            "basedOn": [{"reference": self.url("careplan")}],
            "status": "completed",
            "intent": "plan",
            "code": {"coding": [_coding(BILAN_CATEGORY_SYSTEM, code, display)]},
            "for": {"reference": self.patient_ref},
            "executionPeriod": {"start": _date(review.on)},
            "output": [{"type": _bilan_type("syntheseBilan", output=True), "valueString": review.synthesis}],
        }
        if inputs:
            resource["input"] = inputs
        return self._add("Task", f"review/{index}", resource)

    @staticmethod
    def _participant(ppa: ProjetPersonnalise, key: str) -> str:
        contributor = ppa.contributor(key)
        pro = contributor.professional
        name = " ".join(part for part in (pro.given_name, pro.family_name) if part)
        return f"{name} ({contributor.role})"

    def _wish(self, text: str, index: int, ppa: ProjetPersonnalise) -> str:
        """Goal (tddui-goal-attente): one of the person's wishes, linked to the PPA's CarePlan.

        Wishes have no id of their own in the record: the identifier's local part is the PPA id
        and the wish's rank (``<ppa id>-<n>``, from 1), so the same PPA gives the same identifiers.
        """
        resource: Json = {
            "resourceType": "Goal",
            "meta": {"profile": [TDDUI + "tddui-goal-attente"]},
            "extension": [_ext("tddui-careplan-reference", valueReference={"reference": self.url("careplan")})],
            "identifier": [self.business_id("ATTE", "attente", f"{ppa.id}-{index + 1}")],
            "lifecycleStatus": "active",
            "description": {"text": text},
            "subject": {"reference": self.patient_ref},
            "startDate": _date(ppa.expression.expressed_on),
            "expressedBy": {"reference": self.patient_ref},
            # TDDUI 2.2: note[origineAttente] 1..1 (who expressed the wish, in words): the person
            "note": [{"extension": [_discriminated("origineAttente")], "text": "Usager"}],
        }
        return self._add("Goal", f"wish/{index}", resource)

    def _life_project(self, text: str, ppa: ProjetPersonnalise) -> str:
        """Goal (tddui-goal-projet-vie): the person's life project, identified by the PPA id."""
        resource: Json = {
            "resourceType": "Goal",
            "meta": {"profile": [TDDUI + "tddui-goal-projet-vie"]},
            "identifier": [self.business_id("PDV", "projetvie", ppa.id)],
            "lifecycleStatus": "active",
            "description": {"text": text},
            "subject": {"reference": self.patient_ref},
            "startDate": _date(ppa.expression.expressed_on),
            "expressedBy": {"reference": self.patient_ref},
        }
        return self._add("Goal", "life-project", resource)

    # -- the bundle ------------------------------------------------------------------------------

    def bundle(self) -> Json:
        """The TDDUI transaction Bundle (validated as FHIR R4 structure by fhir.resources)."""
        bundle: Json = {
            "resourceType": "Bundle",
            "meta": {"profile": [TDDUI + "tddui-bundle"]},
            "identifier": {"system": "urn:ietf:rfc:3986", "value": self.bundle_id()},
            "type": "transaction",
            "timestamp": self.ctx.now.isoformat(),
            "entry": self.entries,
        }
        Bundle.model_validate(bundle)  # structural FHIR check: raises on an invalid element
        return bundle

    def bundle_id(self) -> str:
        return f"urn:uuid:{uuid.uuid5(self.ctx.submission_id, 'tddui/bundle')}"


def bundle_bytes(bundle: Json) -> bytes:
    """Canonical JSON bytes of a bundle (sorted keys, UTF-8), stable for golden hashes."""
    return json.dumps(bundle, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------------------------------------
# The "tddui-export" document type
# --------------------------------------------------------------------------------------------


def export_bundle(record: TdduiExportRecord, ctx: RenderContext) -> BundleBuilder:
    """Every stay, event, evaluation (and the PPA) of the record in one TDDUI builder."""
    builder = BundleBuilder(record, ctx, order=record.birth_order)
    for stay in record.stays:
        builder.stay(stay)
    for event in record.events:
        builder.event(event)
    for evaluation in record.evaluations:
        builder.evaluation(evaluation)
    if record.ppa is not None:
        builder.projet_personnalise(record.ppa)
    return builder


class TdduiExportDocumentType:
    """``tddui-export``: a person's DUI data as a TDDUI transaction Bundle, for a third-party FHIR server."""

    code: ClassVar[str] = "tddui-export"
    record_model: ClassVar[type[BaseModel]] = TdduiExportRecord
    type_code: ClassVar[Code | None] = None  # a snapshot of FHIR data, not a document of the record
    class_code: ClassVar[Code | None] = None

    def facts(self, record: BaseModel) -> RecordFacts:
        assert isinstance(record, TdduiExportRecord)
        ppa_refusals = record.ppa.sharing_refusals if record.ppa is not None else []
        base = facts(record, also_refused=(r.partner for r in ppa_refusals))
        return dataclasses.replace(base, extra={**base.extra, "fhir_only": True})

    def render(self, record: BaseModel, ctx: RenderContext) -> list[Rendition]:
        assert isinstance(record, TdduiExportRecord)
        builder = export_bundle(record, ctx)
        content = bundle_bytes(builder.bundle())
        document_id = builder.bundle_id()
        # Each export is a snapshot of the dossier, not a version of a document: its own series.
        return [
            Rendition(
                kind="fhir",
                media_type="application/fhir+json",
                content=content,
                document_id=document_id,
                set_id=document_id,
                version=1,
                conformance=("fhir:tddui",),
            )
        ]


EXPORT = TdduiExportDocumentType()  # declared in the dui_gateway.document_types entry-point group
