"""PPA document type: a :class:`PpaRecord` to its renditions.

- ``cda``: CDA R2 level 1 (non structuré, IHE XDS-SD) for Mon espace santé / DMP: document type
  LOINC ``80788-3`` "Projet personnalisé d'accompagnement", the PDF/A-2b rendering of the plan
  (``mappings.pdf``) in ``nonXMLBody``, formatCode ``urn:ihe:iti:xds-sd:pdf:2008``. No CI-SIS
  structured model exists for the PPA (``shared/specs/ppa.md`` §4), so the conformance checks are
  the CI-SIS common ones (``cisis:CDA-N1``).
- ``fhir``: the PPA as ANS TDDUI 2.2+ models it (CarePlan, Goal, ServiceRequest, Task, Consent,
  Patient, Organization, Practitioner, the stay Encounter) in a TDDUI transaction Bundle
  (``mappings.tddui``).

Versions: a PPA (``ppa.id``) is one document series. Its setId derives from the ESSMS, the person
and ``ppa.id``, so every update of the same PPA is a new version (same setId, versionNumber + 1,
``relatedDocument RPLC`` to the previous id) and a new PPA starts a new series.

A draft PPA is not shared (TDDUI requires the structure's agreement; the DMP receives validated
documents): rendering it raises :class:`~mappings.base.MappingFailed`.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import uuid
from datetime import date, datetime, time
from typing import ClassVar, Self

from lxml import etree
from pydantic import BaseModel, Field, model_validator

from mappings import valuesets
from mappings.base import Code, ExchangeMetadata, MappingFailed, RecordFacts, RenderContext, Rendition
from mappings.cda import header
from mappings.cda.datatypes import LOINC, add, new_document
from mappings.pdf import render_ppa_pdf
from mappings.ppa_model import PpaStatus, ProjetPersonnalise
from mappings.record import DuiRecord, exchange_identity, facts, local_person_root
from mappings.tddui import BundleBuilder, Stay, bundle_bytes

__all__ = [
    "CLASS_CODE",
    "FORMAT_CODE",
    "PPA",
    "TYPE_CODE",
    "PpaDocumentType",
    "PpaRecord",
    "render_cda",
    "render_fhir",
]

TYPE_CODE = Code("80788-3", LOINC, "Projet personnalisé d'accompagnement")
# XDS classCode from typeCode through ASS_X04 (not in the kit): 11 "Synthèse" on TRE_A03, as the DLU — to confirm.
CLASS_CODE = Code("11", "1.2.250.1.213.1.1.4.1", "Synthèse")
FORMAT_CODE = Code("urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3", "Document à corps non structuré en PDF/A")
XDS_SD_TEMPLATE = "1.3.6.1.4.1.19376.1.2.20"
N1_MODEL = "CDA-N1"
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_MAX_OID = 64


class PpaRecord(DuiRecord):
    """What a DUI sends to share a person's projet personnalisé d'accompagnement."""

    ppa: ProjetPersonnalise = Field(description="The projet personnalisé.")
    stay: Stay | None = Field(default=None, description="The stay the PPA belongs to (TDDUI Encounter séjour).")
    birth_order: int | None = Field(
        default=None, ge=1, le=999, description="Rang de naissance (TDDUI, needed when the INS is not transmitted)."
    )

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        ppa = self.ppa
        person = self.person
        needs_rep = (
            any(a.party == "legal_representative" for a in ppa.agreements)
            or any(r.by == "legal_representative" for r in ppa.sharing_refusals)
            or ppa.legal_representative_participated is not None
        )
        if needs_rep and person.legal_representative is None:
            raise ValueError("the PPA mentions the legal representative but person.legal_representative is missing")
        if person.traits.birth_date > ppa.expression.expressed_on:
            raise ValueError("ppa.expression.expressed_on is before person.traits.birth_date")
        if self.stay is not None and self.stay.start > ppa.period_start and self.stay.start > ppa.elaborated_on:
            raise ValueError("the PPA is elaborated and started before the stay begins")
        return self


# --------------------------------------------------------------------------------------------
# Series (setId / version) and identifiers
# --------------------------------------------------------------------------------------------


def _check_oid(value: str, what: str) -> str:
    if not _OID.match(value) or len(value) > _MAX_OID:
        raise MappingFailed(f"{what} {value!r} is not a valid OID of at most {_MAX_OID} characters (check id_root)")
    return value


def _series_seed(record: PpaRecord, ctx: RenderContext) -> str:
    return "|".join((record.essms.finess, record.person.local_id, "ppa", record.ppa.id, ctx.id_root))


def _series(kind: str, set_id: str, ctx: RenderContext) -> tuple[int, str | None]:
    """(version, replaced document id): a new version when the previous one is of the same PPA series."""
    previous = ctx.previous_of(kind, set_id)
    if previous is None:
        return 1, None
    return previous.version + 1, previous.document_id


def _root_extension(document_id: str) -> tuple[str, str | None]:
    root, _, extension = document_id.partition("^")
    return root, extension or None


# --------------------------------------------------------------------------------------------
# CDA R2 level 1
# --------------------------------------------------------------------------------------------


def _metadata(record: PpaRecord, ctx: RenderContext, set_id: str, version: int, title: str) -> ExchangeMetadata:
    identity = exchange_identity(record, ctx)
    essms = record.essms
    _, author_ext = header.professional_id(record.author, essms)
    _, signer_ext = header.professional_id(record.signer, essms)
    ppa = record.ppa
    return ExchangeMetadata(
        type_code=TYPE_CODE,
        class_code=CLASS_CODE,
        format_code=FORMAT_CODE,
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
        service_start=_midnight(ppa.period_start, ctx),
        service_stop=_midnight(ppa.period_end, ctx) if ppa.period_end else None,
        extra={
            "model": N1_MODEL,
            "set_id": set_id,
            "version": version,
            "body_media_type": "application/pdf",
            "author_specialty": record.author.role,
            "legal_authenticator_id": signer_ext,
            **identity.extra(),
            "ppa_status": ppa.status.value,
        },
    )


def _midnight(day: date, ctx: RenderContext) -> datetime:
    """A date as the start of that day in the context's time zone (CDA/XDS times carry an offset)."""
    return datetime.combine(day, time(0, 0), tzinfo=ctx.now.tzinfo)


def render_cda(record: PpaRecord, ctx: RenderContext) -> Rendition:
    """The CDA R2 level-1 document (PDF/A body) for Mon espace santé."""
    ppa = record.ppa
    if ppa.status is PpaStatus.DRAFT:
        raise MappingFailed("a draft PPA is not shared with Mon espace santé: validate it first", pointer="/ppa/status")
    document_id = _check_oid(f"{ctx.id_root}.1.{ctx.submission_id.int}.11", "document id")
    set_id = _check_oid(f"{ctx.id_root}.5.{uuid.uuid5(uuid.NAMESPACE_OID, _series_seed(record, ctx)).int}", "setId")
    _check_oid(local_person_root(record, ctx), "local person id root")
    version, replaces = _series("cda", set_id, ctx)
    title = ppa.title
    pdf = render_ppa_pdf(record, ppa, version=version, created=ctx.now, seed=document_id)

    essms = record.essms
    person = record.person
    referent = ppa.contributor(ppa.referent).professional
    doc = new_document()
    header.document_header(
        doc,
        header.DocumentHeader(
            template_ids=((XDS_SD_TEMPLATE, None),),
            document_id=document_id,
            code=TYPE_CODE,
            title=title,
            effective_time=ctx.now,
            set_id=set_id,
            version=version,
            confidentiality=record.confidentiality,
        ),
    )
    header.record_target(doc, person, header.patient_ids(person, local_person_root(record, ctx)))
    header.author(doc, record.author, essms, ctx.now)
    header.informants(doc, person)
    header.custodian(doc, essms)
    header.legal_authenticator(doc, record.signer, essms, ctx.now)
    header.documentation_of(
        doc,
        TYPE_CODE,
        _midnight(ppa.period_start, ctx),
        _midnight(ppa.period_end, ctx) if ppa.period_end else None,
        referent,
        essms,
    )
    if replaces is not None:
        root, _ = _root_extension(replaces)
        header.related_document(doc, root)
    stay = record.stay
    header.component_of(
        doc,
        stay.encounter_class if stay is not None else "IMP",
        _midnight(stay.start, ctx) if stay is not None else _midnight(ppa.period_start, ctx),
        _midnight(stay.end, ctx) if stay is not None and stay.end else None,
        referent,
        essms,
    )
    body = add(add(doc, "component"), "nonXMLBody")
    add(body, "text", base64.b64encode(pdf).decode("ascii"), mediaType="application/pdf", representation="B64")
    content = etree.tostring(doc, xml_declaration=True, encoding="UTF-8")
    return Rendition(
        kind="cda",
        media_type="application/xml",
        content=content,
        document_id=document_id,
        set_id=set_id,
        version=version,
        conformance=(f"cisis:{N1_MODEL}",),
        metadata=_metadata(record, ctx, set_id, version, title),
        replaces=replaces,
    )


# --------------------------------------------------------------------------------------------
# FHIR (TDDUI)
# --------------------------------------------------------------------------------------------


def render_fhir(record: PpaRecord, ctx: RenderContext) -> Rendition:
    """The TDDUI transaction Bundle of the PPA (with the person, ESSMS, team and stay)."""
    builder = BundleBuilder(record, ctx, order=record.birth_order)
    if record.stay is not None:
        builder.stay(record.stay)
    builder.projet_personnalise(record.ppa)
    bundle = builder.bundle()
    set_id = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, _series_seed(record, ctx))}"
    version, replaces = _series("fhir", set_id, ctx)
    return Rendition(
        kind="fhir",
        media_type="application/fhir+json",
        content=bundle_bytes(bundle),
        document_id=builder.bundle_id(),
        set_id=set_id,
        version=version,
        conformance=("fhir:tddui",),
        replaces=replaces,
    )


# --------------------------------------------------------------------------------------------
# Document type
# --------------------------------------------------------------------------------------------


class PpaDocumentType:
    """``ppa``: projet personnalisé d'accompagnement (CDA N1 + PDF/A for MES, TDDUI Bundle for DUIs)."""

    code: ClassVar[str] = "ppa"
    record_model: ClassVar[type[BaseModel]] = PpaRecord
    type_code: ClassVar[Code | None] = TYPE_CODE
    class_code: ClassVar[Code | None] = CLASS_CODE

    def facts(self, record: BaseModel) -> RecordFacts:
        assert isinstance(record, PpaRecord)
        base = facts(record, also_refused=(r.partner for r in record.ppa.sharing_refusals))
        return dataclasses.replace(base, extra={**base.extra, "ppa_status": record.ppa.status.value})

    def render(self, record: BaseModel, ctx: RenderContext) -> list[Rendition]:
        assert isinstance(record, PpaRecord)
        return [render_cda(record, ctx), render_fhir(record, ctx)]


PPA = PpaDocumentType()  # declared in the dui_gateway.document_types entry-point group
