"""The ESSMS's answers to the SI-SdO (ViaTrajectoire PH): ``sdo-consent`` and ``sdo-status``.

IG ``ans.fhir.fr.sdo`` (0.1.0 ci-build), flux 2 and 4:

- ``sdo-consent`` → one ``Consent`` (profile ``esms-consent``): the person's agreement collected by
  the ESSMS for a decision. ``meta.source`` = idNat_Struct (``1`` + FINESS), ``scope``
  patient-privacy, ``category`` LOINC 59284-0, ``dateTime``, ``provision.data`` (meaning
  ``related``) pointing to the decision by its idNat_Decision (identifier use ``official``);
- ``sdo-status`` → one ``Task`` (profile ``sdo-task``): the person's status in the ESSMS
  (``statutESMS``, JDV_J252) with its reason (``motifESMS``, JDV_J251), optionally in a unit
  (``statutUnite``...), and both decision identifiers. Every status of the same person for the
  same decision at the same ESSMS is a new *version of one series* (one Task at the SI-SdO: the
  first version is created, the next ones update it, in order).

Idempotent resends: every resource carries a client-assigned ``identifier``
(``urn:ietf:rfc:3986`` | ``urn:uuid:<uuid5>``) derived from FINESS + idNat_Decision, which the
``sdo`` connector uses for a conditional create (``If-None-Exist``).

Common statuses (JDV_J252): ``42`` waiting list (request received), ``72`` admissible, ``71`` admitted
from the waiting list, ``47`` usager entré (admission), ``45`` admission impossible signalée (refusal:
a ``motif_esms`` is required), ``48`` usager sorti (exit), ``41`` contact effectué.
"""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mappings.base import Code, RecordFacts, RenderContext, Rendition
from profiles.definitions.sdo import (
    ESMS_CONSENT,
    INPUT_TASK_CS,
    MOTIF_ESMS,
    SDO_TASK,
    STATUT_ESMS,
    TRE_R357,
    TRE_R358,
)

__all__ = ["SDO_CONSENT", "SDO_STATUS", "SdoConsentRecord", "SdoStatusRecord", "SdoUnit"]

_NS = uuid.UUID("6f1c2a8e-5d0b-4f53-9d5e-3c1b7a2e9f40")  # dui-gateway SDO identifiers
_URI = "urn:ietf:rfc:3986"
_NOS = "https://mos.esante.gouv.fr/NOS/"
_J264_SYSTEM = _NOS + "TRE_R213-ModePriseEnCharge/FHIR/TRE-R213-ModePriseEnCharge"
_J34_SYSTEM = _NOS + "TRE_R244-CategorieOrganisation/FHIR/TRE-R244-CategorieOrganisation"
_J30_SYSTEM = _NOS + "TRE_R240-TemporaliteAccueil/FHIR/TRE-R240-TemporaliteAccueil"
_J253_SYSTEM = _NOS + "TRE_R357-StatutPersonnePriseCharge/FHIR/TRE-R357-StatutPersonnePriseCharge"
_J250_SYSTEM = TRE_R358
_ID_TEXT = r"^[^\s].{0,127}$"
_CODE = r"^[0-9]{1,8}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class SdoDecision(_Model):
    """A decision as the SI-SdO identified it (both identifiers come with the notification)."""

    id_decision: str = Field(pattern=_ID_TEXT, description="idDecision: unique within the MDPH")
    id_nat_decision: str = Field(pattern=_ID_TEXT, description="idNat_Decision: ViaTrajectoire's national id")


class _Answer(_Model):
    essms_finess: str = Field(pattern=r"^[0-9]{9}$")
    person_ref: str = Field(min_length=1, max_length=128, description="the DUI's reference of the person")
    decision: SdoDecision


class SdoConsentRecord(_Answer):
    """The person's agreement to the orientation, collected by the ESSMS (flux 2 ``Accord``)."""

    collected_on: date = Field(description="when the ESSMS collected the agreement (Consent.dateTime)")


class SdoUnit(_Model):
    """The status at the level of an internal unit (ROR); the IG's regle-StatutUnite needs all of
    ``id_unite``, ``nom_unite``, ``categorie_organisation``, ``mode_prise_charge`` and
    ``date_statut_unite`` when ``statut_unite`` is given."""

    id_unite: str = Field(pattern=_ID_TEXT, description="ROR national id of the unit")
    nom_unite: str = Field(min_length=1, max_length=256)
    categorie_organisation: str = Field(pattern=r"^[0-9]{2,3}$", description="JDV_J34 code")
    mode_prise_charge: Literal["46", "47", "48"] = Field(description="JDV_J264: 46 hébergement, 47 jour, 48 nuit")
    statut_unite: str | None = Field(default=None, pattern=_CODE, description="JDV_J253 code")
    date_statut_unite: date | None = None
    motif_unite: str | None = Field(default=None, pattern=_CODE, description="JDV_J250 code")
    temporalite_accueil: Literal["01", "02"] | None = None
    accueil_sequentiel: bool | None = None

    @model_validator(mode="after")
    def _status_date(self) -> Self:
        if self.statut_unite is not None and self.date_statut_unite is None:
            raise ValueError("date_statut_unite is required with statut_unite (regle-StatutUnite)")
        return self


class SdoStatusRecord(_Answer):
    """The person's status in the ESSMS for a decision (flux 4 ``StatutPersonneOrientee``)."""

    essms_name: str = Field(min_length=1, max_length=256, description="nomESMS")
    statut_esms: str = Field(description="JDV_J252 code, e.g. 42 waiting list, 47 admitted, 45 refused, 48 exit")
    motif_esms: str | None = Field(default=None, description="JDV_J251 code (required for 45)")
    date_statut: date = Field(description="dateStatutESMS (its meaning depends on the status: SFE)")
    comment: str | None = Field(default=None, max_length=2000, description="Task.description")
    unit: SdoUnit | None = None

    @field_validator("statut_esms")
    @classmethod
    def _statut(cls, value: str) -> str:
        if value not in STATUT_ESMS:
            raise ValueError(f"statut_esms is a JDV_J252 code: {', '.join(STATUT_ESMS)}")
        return value

    @field_validator("motif_esms")
    @classmethod
    def _motif(cls, value: str | None) -> str | None:
        if value is not None and value not in MOTIF_ESMS:
            raise ValueError(f"motif_esms is a JDV_J251 code: {', '.join(MOTIF_ESMS)}")
        return value

    @model_validator(mode="after")
    def _refusal_reason(self) -> Self:
        if self.statut_esms == "45" and self.motif_esms is None:
            raise ValueError("a refusal (statut_esms 45, admission impossible) needs motif_esms")
        return self


def _stable(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, '|'.join(parts))}"


def consent_identifier(finess: str, id_nat_decision: str) -> str:
    return _stable("consent", finess, id_nat_decision)


def task_identifier(finess: str, id_nat_decision: str) -> str:
    return _stable("task", finess, id_nat_decision)


def _input(name: str, **value: Any) -> dict[str, Any]:
    return {"type": {"coding": [{"system": INPUT_TASK_CS, "code": name}], "text": name}, **value}


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def consent_resource(record: SdoConsentRecord) -> dict[str, Any]:
    """The ``esms-consent`` Consent for ``record`` (pure)."""
    return {
        "resourceType": "Consent",
        "meta": {"profile": [ESMS_CONSENT.url], "source": f"1{record.essms_finess}"},
        "identifier": [
            {"system": _URI, "value": consent_identifier(record.essms_finess, record.decision.id_nat_decision)}
        ],
        "status": "active",
        "scope": _concept("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy", "Privacy Consent"),
        "category": [_concept("http://loinc.org", "59284-0", "Consent")],
        "dateTime": record.collected_on.isoformat(),
        "policyRule": _concept("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN"),
        "provision": {
            "data": [
                {
                    "meaning": "related",
                    "reference": {
                        "type": "DocumentReference",
                        "identifier": {"use": "official", "value": record.decision.id_nat_decision},
                    },
                }
            ]
        },
    }


def task_resource(record: SdoStatusRecord, *, last_updated: str, set_id: str) -> dict[str, Any]:
    """The ``sdo-task`` Task for ``record`` (pure; ``last_updated`` is the render time)."""
    inputs = [
        _input("idNat_Struct", valueIdentifier={"value": f"1{record.essms_finess}"}),
        _input("nomESMS", valueString=record.essms_name),
        _input(
            "statutESMS",
            valueCodeableConcept=_concept(TRE_R357, record.statut_esms, STATUT_ESMS[record.statut_esms]),
        ),
    ]
    if record.motif_esms is not None:
        inputs.append(
            _input(
                "motifESMS", valueCodeableConcept=_concept(TRE_R358, record.motif_esms, MOTIF_ESMS[record.motif_esms])
            )
        )
    inputs.append(_input("dateStatutESMS", valueDate=record.date_statut.isoformat()))
    unit = record.unit
    if unit is not None:
        inputs += [
            _input("idUnite", valueIdentifier={"value": unit.id_unite}),
            _input("nomUnite", valueString=unit.nom_unite),
            _input("categorieOrganisation", valueCodeableConcept=_concept(_J34_SYSTEM, unit.categorie_organisation)),
            _input("modePriseCharge", valueCodeableConcept=_concept(_J264_SYSTEM, unit.mode_prise_charge)),
        ]
        if unit.temporalite_accueil is not None:
            inputs.append(
                _input("temporaliteAccueil", valueCodeableConcept=_concept(_J30_SYSTEM, unit.temporalite_accueil))
            )
        if unit.accueil_sequentiel is not None:
            inputs.append(_input("accueilSequentiel", valueBoolean=unit.accueil_sequentiel))
        if unit.statut_unite is not None:
            inputs.append(_input("statutUnite", valueCodeableConcept=_concept(_J253_SYSTEM, unit.statut_unite)))
        if unit.date_statut_unite is not None:
            inputs.append(_input("dateStatutUnite", valueDate=unit.date_statut_unite.isoformat()))
        if unit.motif_unite is not None:
            inputs.append(_input("motifUnite", valueCodeableConcept=_concept(_J250_SYSTEM, unit.motif_unite)))
    inputs += [
        _input("idDecision", valueIdentifier={"use": "usual", "value": record.decision.id_decision}),
        _input("idNat_Decision", valueIdentifier={"use": "official", "value": record.decision.id_nat_decision}),
    ]
    task: dict[str, Any] = {
        "resourceType": "Task",
        "meta": {"profile": [SDO_TASK.url], "lastUpdated": last_updated},
        "identifier": [{"system": _URI, "value": set_id}],
        "status": "completed",
        "intent": "plan",
        "input": inputs,
    }
    if record.comment:
        task["description"] = record.comment
    return task


def _json(resource: dict[str, Any]) -> bytes:
    return json.dumps(resource, ensure_ascii=False, sort_keys=True).encode("utf-8")


def _facts(record: _Answer, kind: str) -> RecordFacts:
    return RecordFacts(
        person_ref=record.person_ref,
        essms_finess=record.essms_finess,
        extra={
            "sdo": kind,
            "idDecision": record.decision.id_decision,
            "idNat_Decision": record.decision.id_nat_decision,
        },
    )


class SdoConsentType:
    """``sdo-consent``: the person's agreement to an orientation decision, for the SI-SdO."""

    code: ClassVar[str] = "sdo-consent"
    record_model: ClassVar[type[BaseModel]] = SdoConsentRecord
    type_code: ClassVar[Code | None] = None  # an exchange with the SI-SdO, not a document of the record
    class_code: ClassVar[Code | None] = None

    def facts(self, record: BaseModel) -> RecordFacts:
        assert isinstance(record, SdoConsentRecord)
        return _facts(record, "consent")

    def render(self, record: BaseModel, ctx: RenderContext) -> list[Rendition]:
        assert isinstance(record, SdoConsentRecord)
        ident = consent_identifier(record.essms_finess, record.decision.id_nat_decision)
        return [
            Rendition(
                kind="sdo-consent",
                media_type="application/fhir+json",
                content=_json(consent_resource(record)),
                document_id=ident,
                set_id=ident,  # one agreement per decision and ESSMS
                version=1,
                conformance=("fhir:r4",),  # its meta.profile (esms-consent) is checked
            )
        ]


class SdoStatusType:
    """``sdo-status``: the person's status in the ESSMS (waiting list, admission, refusal, exit...)."""

    code: ClassVar[str] = "sdo-status"
    record_model: ClassVar[type[BaseModel]] = SdoStatusRecord
    type_code: ClassVar[Code | None] = None
    class_code: ClassVar[Code | None] = None

    def facts(self, record: BaseModel) -> RecordFacts:
        assert isinstance(record, SdoStatusRecord)
        return _facts(record, "status")

    def render(self, record: BaseModel, ctx: RenderContext) -> list[Rendition]:
        assert isinstance(record, SdoStatusRecord)
        set_id = task_identifier(record.essms_finess, record.decision.id_nat_decision)
        previous = ctx.previous_of("sdo-task", set_id)
        version = (previous.version if previous is not None else 0) + 1
        last_updated = ctx.now.isoformat(timespec="milliseconds")
        return [
            Rendition(
                kind="sdo-task",
                media_type="application/fhir+json",
                content=_json(task_resource(record, last_updated=last_updated, set_id=set_id)),
                document_id=_stable("task-version", set_id, str(version)),
                set_id=set_id,
                version=version,
                conformance=("fhir:r4",),  # its meta.profile (sdo-task) is checked
                replaces=previous.document_id if previous is not None else None,
            )
        ]


SDO_CONSENT = SdoConsentType()  # declared in the dui_gateway.document_types entry-point group
SDO_STATUS = SdoStatusType()
