"""Shared FHIR R4 builders (plain JSON dicts, valid against the fhir.resources R4B models and
R4 4.0.1): FR Core Patient with the INS slice, Organization, Practitioner, and helpers."""

from mappings.fhir.common import (
    Ids,
    Json,
    address,
    code,
    codeable,
    coding,
    fhir_date,
    fhir_datetime,
    narrative,
    system_uri,
    telecoms,
)
from mappings.fhir.resources import (
    IDENTITY_STATUS_CODES,
    health_establishment,
    ins_identifier,
    local_identifiers,
    organization,
    patient,
    practitioner,
)

__all__ = [
    "IDENTITY_STATUS_CODES",
    "Ids",
    "Json",
    "address",
    "code",
    "codeable",
    "coding",
    "fhir_date",
    "fhir_datetime",
    "health_establishment",
    "ins_identifier",
    "local_identifiers",
    "narrative",
    "organization",
    "patient",
    "practitioner",
    "system_uri",
    "telecoms",
]
