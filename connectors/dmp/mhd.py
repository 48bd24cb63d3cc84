"""The PDSm / IHE MHD route (ITI-65 Provide Document Bundle), selected by ``route="mhd"``.

PDSm4DMP is a draft for the DMP (spec §5): the same DocumentEntry metadata, carried by a
transaction Bundle (SubmissionSet ``List`` + ``DocumentReference`` + ``Binary``); a replacement is
``relatesTo.code=replaces`` pointing at the DocumentReference the DMP holds (its id = the XDS
entryUUID). Answers: ``transaction-response`` (201 per entry) or an ``OperationOutcome``.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import requests

from connectors.base import Envelope, PermanentError, Receipt, TransientError
from connectors.dmp.metadata import Coded, DocumentEntry, oid_from_key
from connectors.dmp.security import OrgIdentity
from mappings.base import Rendition

if TYPE_CHECKING:
    from connectors.dmp.connector import DmpConnector

__all__ = ["provide_bundle", "send_mhd"]

PROFILE_BUNDLE = (
    "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-comprehensive-provide-document-bundle"
)
PROFILE_LIST = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-submissionset-comprehensive"
PROFILE_DOCREF = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-comprehensive-document-reference"
EXT_DESIGNATION = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType"
EXT_SOURCE = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"


V3_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
MHD_ID_TYPE = "https://profiles.ihe.net/ITI/MHD/CodeSystem/IHE.MHD.MHDIdentifierType"
RFC3986 = "urn:ietf:rfc:3986"


def _unique_id(value: str) -> dict[str, Any]:
    """An XDS uniqueId as MHD identifies it: ``type`` uniqueId (MHD 4.2.4) and ``use`` usual (MHD 4.2.3)."""
    return {
        "use": "usual",
        "type": {"coding": [{"system": MHD_ID_TYPE, "code": "uniqueId"}]},
        "system": RFC3986,
        "value": value,
    }


def _entry_uuid(value: str) -> dict[str, Any]:
    """An XDS entryUUID as MHD identifies it: ``type`` entryUUID (MHD 4.2.4) and ``use`` official (MHD 4.2.3)."""
    return {
        "use": "official",
        "type": {"coding": [{"system": MHD_ID_TYPE, "code": "entryUUID"}]},
        "system": RFC3986,
        "value": value,
    }


def _coding(c: Coded) -> dict[str, Any]:
    system = V3_CONFIDENTIALITY if c.scheme == "2.16.840.1.113883.5.25" else f"urn:oid:{c.scheme}"
    return {"coding": [{"system": system, "code": c.code, "display": c.display}]}


def _source_patient(entry: DocumentEntry) -> dict[str, Any]:
    local, _, rest = entry.source_patient_id.partition("^^^&")
    return {
        "resourceType": "Patient",
        "id": "patient",
        "identifier": [{"system": f"urn:oid:{rest.split('&')[0]}", "value": local}],
    }


def _iso(ts: str) -> str:
    return datetime.strptime(ts, "%Y%m%d%H%M%S").replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _patient(cx: str) -> dict[str, Any]:
    ins, _, rest = cx.partition("^^^&")
    return {"identifier": {"system": f"urn:oid:{rest.split('&')[0]}", "value": ins}}


def _author(entry: DocumentEntry) -> dict[str, Any]:
    ident, family, given = [*entry.author_person.split("^"), "", ""][:3]
    return {
        "resourceType": "Practitioner",
        "id": "author",
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": ident}],
        "name": [{"family": family, "given": [given] if given else []}],
    }


def _author_role(entry: DocumentEntry, finess: str) -> dict[str, Any]:
    """The SubmissionSet's author as PDSm wants it (``source`` is a PractitionerRole, Device or Patient):
    the contained author Practitioner (``#author``) acting for the ESSMS."""
    return {
        "resourceType": "PractitionerRole",
        "id": "author-role",
        "practitioner": {"reference": "#author"},
        "organization": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": f"1{finess}"}},
    }


def provide_bundle(
    envelope: Envelope,
    entries: list[DocumentEntry],
    renditions: list[Rendition],
    replaces: dict[str, str],
    source_id: str,
) -> dict[str, Any]:
    """The ITI-65 transaction Bundle for the documents (``replaces``: entry id → DocumentReference id)."""
    first = entries[0]
    ss_uid = oid_from_key("dmp-submission-set", envelope.idempotency_key)
    list_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, 'dmp-ss|' + envelope.idempotency_key)}"
    bundle_entries: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for entry, rendition in zip(entries, renditions, strict=True):
        binary_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, 'dmp-binary|' + entry.unique_id)}"
        doc_url = entry.entry_id
        docref: dict[str, Any] = {
            "resourceType": "DocumentReference",
            "meta": {"profile": [PROFILE_DOCREF]},
            "contained": [_author(entry), _source_patient(entry)],
            "masterIdentifier": _unique_id(f"urn:oid:{entry.unique_id}"),
            "identifier": [_entry_uuid(entry.entry_id)],
            "status": "current",
            "type": _coding(entry.type_code),
            "category": [_coding(entry.class_code)],
            "subject": _patient(entry.patient_id),
            "date": _iso(entry.creation_time),
            "author": [{"reference": "#author"}],
            "custodian": {
                "identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": f"1{envelope.facts.essms_finess}"}
            },
            "securityLabel": [_coding(c) for c in entry.confidentiality],
            "content": [
                {
                    "attachment": {
                        "contentType": entry.mime_type,
                        "language": entry.language,
                        "url": binary_url,
                        "size": entry.size,
                        "hash": base64.b64encode(bytes.fromhex(entry.hash)).decode(),
                        "title": entry.title,
                        "creation": _iso(entry.creation_time),
                    },
                    "format": {"system": f"urn:oid:{entry.format_code.scheme}", "code": entry.format_code.code},
                }
            ],
            "context": {
                "period": {"start": _iso(entry.service_start)},
                "facilityType": _coding(entry.facility_type_code),
                "practiceSetting": _coding(entry.practice_setting_code),
                "sourcePatientInfo": {"reference": "#patient"},
            },
        }
        if entry.entry_id in replaces:
            docref["relatesTo"] = [
                {"code": "replaces", "target": {"reference": f"DocumentReference/{replaces[entry.entry_id]}"}}
            ]
        bundle_entries.append(
            {"fullUrl": doc_url, "resource": docref, "request": {"method": "POST", "url": "DocumentReference"}}
        )
        bundle_entries.append(
            {
                "fullUrl": binary_url,
                "resource": {
                    "resourceType": "Binary",
                    "contentType": entry.mime_type,
                    "data": base64.b64encode(rendition.content).decode(),
                },
                "request": {"method": "POST", "url": "Binary"},
            }
        )
        items.append({"item": {"reference": doc_url}})
    submission_set = {
        "resourceType": "List",
        "meta": {"profile": [PROFILE_LIST]},
        "contained": [_author(first), _author_role(first, envelope.facts.essms_finess)],
        "source": {"reference": "#author-role"},
        "extension": [
            {"url": EXT_DESIGNATION, "valueCodeableConcept": _coding(first.facility_type_code)},
            {"url": EXT_SOURCE, "valueIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{source_id}"}},
        ],
        "identifier": [_unique_id(f"urn:oid:{ss_uid}"), _entry_uuid(list_url)],
        "status": "current",
        "mode": "working",
        "code": {
            "coding": [{"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "code": "submissionset"}]
        },
        "subject": _patient(first.patient_id),
        "date": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "entry": items,
    }
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [PROFILE_BUNDLE]},
        "type": "transaction",
        "entry": [
            {"fullUrl": list_url, "resource": submission_set, "request": {"method": "POST", "url": "List"}},
            *bundle_entries,
        ],
    }


def _issues(resp: requests.Response) -> tuple[str, str]:
    try:
        data = resp.json()
    except ValueError:
        return "", ""
    issues = data.get("issue") if isinstance(data, dict) else None
    if not isinstance(issues, list) or not issues:
        return "", ""
    first = issues[0] if isinstance(issues[0], dict) else {}
    expression = first.get("expression") or [""]
    return str(first.get("code", "")), f"{first.get('diagnostics', '')}|{expression[0]}"


def send_mhd(
    conn: DmpConnector,
    envelope: Envelope,
    identity: OrgIdentity,
    entries: list[DocumentEntry],
    renditions: list[Rendition],
) -> Receipt:
    """POST the ITI-65 Bundle; replacement targets come from ``envelope.held`` only (its remote id)."""
    settings = conn.settings
    if not settings.mhd_url:
        raise PermanentError("route 'mhd' needs mhd_url (the PDSm FHIR base)")
    replaces: dict[str, str] = {}
    for entry, rendition in zip(entries, renditions, strict=True):
        held = envelope.held.get(rendition.set_id)
        if held is not None and held.document_id != rendition.document_id and held.remote_id:
            replaces[entry.entry_id] = held.remote_id.removeprefix("urn:uuid:")
    bundle = provide_bundle(envelope, entries, renditions, replaces, settings.source_id)
    resp = conn._http(
        envelope,
        identity,
        settings.mhd_url,
        json.dumps(bundle).encode(),
        {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
        what="ITI-65",
    )
    detail: dict[str, Any] = {"route": "mhd", "uniqueId": entries[0].unique_id, "replaced": sorted(replaces.values())}
    if resp.status_code in (200, 201):
        try:
            data = resp.json()
            locations = [e["response"]["location"] for e in data.get("entry", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PermanentError("DMP ITI-65: unreadable transaction-response") from exc
        doc = next((loc for loc in locations if str(loc).startswith("DocumentReference/")), None)
        remote = str(doc).split("/")[1] if doc else None
        return Receipt(remote_id=remote, detail={**detail, "status": "Created", "locations": locations})
    code, diagnostics = _issues(resp)
    if resp.status_code == 409 and code == "duplicate":
        existing = diagnostics.rsplit("|", 1)[-1].removeprefix("DocumentReference/")
        return Receipt(remote_id=existing or None, detail={**detail, "status": "AlreadyPresent", "duplicate": True})
    text = f"DMP ITI-65: HTTP {resp.status_code} {code} {diagnostics.split('|')[0]}".strip()
    if resp.status_code >= 500 or resp.status_code in (408, 425, 429):
        raise TransientError(text)
    from connectors.dmp.connector import DmpRefused

    raise DmpRefused(text, code=code or str(resp.status_code), context=diagnostics.split("|")[0])
