"""Contracts shared by every document type: render context, renditions, exchange metadata.

A document type turns a validated DUI record into renditions (CDA, FHIR...) with pure
functions: no I/O, no clock, no randomness except what :class:`RenderContext` carries.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel

__all__ = [
    "Code",
    "DocumentType",
    "ExchangeMetadata",
    "MappingFailed",
    "PreviousVersion",
    "RecordFacts",
    "RenderContext",
    "Rendition",
]


class MappingFailed(ValueError):
    """A record that passed validation cannot be turned into a document (business rule).

    ``pointer`` is the JSON pointer of the offending field in the record, when known.
    The pipeline turns it into a ``rejected`` submission with this report.
    """

    def __init__(self, message: str, *, pointer: str = "") -> None:
        super().__init__(message)
        self.pointer = pointer


@dataclass(frozen=True)
class Code:
    """A coded value (code, code system OID or URI, display name)."""

    code: str
    system: str
    display: str = ""


@dataclass(frozen=True)
class PreviousVersion:
    """What a document series already has, for its next version.

    ``version`` is the highest version number ever issued in the series (never reused, even when
    that version reached nobody); ``document_id`` is the version a new one replaces (RPLC): the
    newest that reached a destination or is on its way, or None when none did.
    """

    set_id: str
    version: int
    document_id: str | None


@dataclass(frozen=True)
class RenderContext:
    """Everything non-pure a mapping may use, passed in by the pipeline.

    - ``now``: timezone-aware instant used for effective/creation times.
    - ``submission_id``: seed from which the mapping derives stable identifiers.
    - ``id_root``: the deployment's OID root for document identifiers.
    - ``previous``: per rendition kind, the newest series of that kind for this person
      (same tenant, ESSMS, person, document type), so a new version keeps the setId,
      increments versionNumber and declares RPLC;
    - ``series``: per setId, the same facts for every series of the person, for document types
      with several series per kind (one FLUDT per transfer, one PPA per plan): use
      :meth:`previous_of` with the setId the record determines.
    """

    now: datetime
    submission_id: uuid.UUID
    id_root: str = "1.2.250.1.999.1.1"
    previous: Mapping[str, PreviousVersion] = field(default_factory=dict)
    series: Mapping[str, PreviousVersion] = field(default_factory=dict)

    def previous_of(self, kind: str, set_id: str | None = None) -> PreviousVersion | None:
        """The series' previous version: by ``set_id`` when the record fixes it, else by ``kind``."""
        if set_id is None:
            return self.previous.get(kind)
        found = self.series.get(set_id)
        if found is None:
            latest = self.previous.get(kind)
            found = latest if latest is not None and latest.set_id == set_id else None
        return found


@dataclass(frozen=True)
class ExchangeMetadata:
    """XDS/MHD/MSSanté attributes of a rendition (CI-SIS 'métadonnées XDS')."""

    type_code: Code
    class_code: Code
    format_code: Code
    healthcare_facility_type_code: Code
    practice_setting_code: Code
    confidentiality_code: Code
    mime_type: str
    title: str
    creation_time: datetime
    language_code: str = "fr-FR"
    author_institution_name: str = ""
    author_institution_id: str = ""  # FINESS with its OID prefix, e.g. "1.2.250.1.71.4.2.2^3<FINESS>"
    author_person_id: str = ""  # RPPS with the "8" prefix when known
    patient_id: str = ""  # INS (NIR/NIA) only when qualified, else local id
    patient_id_system: str = ""  # OID of patient_id
    service_start: datetime | None = None
    service_stop: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rendition:
    """One document produced from a record.

    ``conformance`` names the checks the gate must run, e.g.
    ``("cisis:DLU-EHPAD-DLU_2022.01",)`` for a CDA or ``("fhir:r4",)`` for a FHIR Bundle;
    ``metadata`` is what the DMP and MSSanté connectors need.
    """

    kind: str  # "cda", "fludt-cda", "fhir", ...
    media_type: str  # "application/xml" or "application/fhir+json"
    content: bytes
    document_id: str  # stable: CDA "root^extension" or urn:uuid
    set_id: str
    version: int
    conformance: tuple[str, ...] = ()
    metadata: ExchangeMetadata | None = None
    replaces: str | None = None  # document_id of the version it replaces (RPLC)


@dataclass(frozen=True)
class RecordFacts:
    """What the gateway (routing, listing, audit) needs to know about a record.

    Never contains names or birth dates: only references and flags.
    """

    person_ref: str  # local identifier of the person in the DUI
    essms_finess: str
    ins_qualified: bool = False
    # Consent families the person refused (mappings.consent.ConsentFamily members when a mapping
    # builds the facts; facts read back from storage may hold older plain strings, which routing
    # reads with mappings.consent.read_refusals: an unrecognised one refuses every family).
    sharing_refused_with: frozenset[str] = frozenset()
    extra: Mapping[str, Any] = field(default_factory=dict)


class DocumentType(Protocol):
    """A document type the gateway accepts (``dlu``, ``ppa``...).

    Declared in the ``dui_gateway.document_types`` entry-point group (see :mod:`mappings.registry`).
    ``type_code`` is its XDS typeCode (JDV_J07, LOINC): the ``type`` of the DocumentReference of every
    rendition; ``class_code`` its XDS classCode (JDV_J06): the DocumentReference ``category``. Both
    are ``None`` for a type that is no document of the shared record (e.g. a FHIR data export).
    """

    code: ClassVar[str]
    record_model: ClassVar[type[BaseModel]]
    type_code: ClassVar[Code | None]
    class_code: ClassVar[Code | None]

    def facts(self, record: BaseModel) -> RecordFacts: ...

    def render(self, record: BaseModel, ctx: RenderContext) -> list[Rendition]: ...
