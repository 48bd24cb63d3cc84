"""The simulator's ITI-65 (PDSm Provide Document Bundle) endpoint: the PDSm required elements
(spec §5) checked line by line, the CDA cross-checked, documents stored beside the XDS ones."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from connectors.dmp._xml import UnsafeXml, parse_xml, q
from connectors.sandbox.dmp import rules
from connectors.sandbox.dmp.store import StoredEntry
from mappings import valuesets

if TYPE_CHECKING:
    from connectors.sandbox.dmp.server import DmpSimulator

__all__ = ["DOCREF_RULES", "provide_bundle"]

APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"


def _get(resource: Mapping[str, Any], path: str) -> Any:
    value: Any = resource
    for part in path.split("."):
        if isinstance(value, list):
            value = value[0] if value else None
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


# PDSm DocumentReference elements required (spec §5): (path, what the spec says)
DOCREF_RULES: tuple[tuple[str, str], ...] = (
    ("masterIdentifier.value", "masterIdentifier (= XDS uniqueId) 1..1"),
    ("contained", "contained (author/authenticator) 1.."),
    ("custodian", "custodian 1.."),
    ("date", "date 1.."),
    ("author", "author 1.."),
    ("content.attachment.size", "content.attachment.size 1.."),
    ("content.attachment.hash", "content.attachment.hash (SHA-1) 1.."),
    ("content.attachment.title", "content.attachment.title 1.."),
    ("context.period.start", "context.period.start 1.."),
    ("type.coding.code", "type (J07/J66)"),
    ("category.coding.code", "category (J06/J57)"),
    ("securityLabel.coding.code", "securityLabel (J08)"),
    ("content.format.code", "content.format (J10/J60)"),
    ("context.facilityType.coding.code", "context.facilityType (J02/J61)"),
    ("context.practiceSetting.coding.code", "context.practiceSetting (J04)"),
    ("subject.identifier.value", "subject = the patient's INS"),
)


def _outcome(status: int, code: str, diagnostics: str, expression: str = "") -> tuple[int, dict[str, Any]]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return status, {"resourceType": "OperationOutcome", "issue": [issue]}


def _oid(system: Any) -> str:
    return str(system or "").removeprefix("urn:oid:")


def provide_bundle(
    sim: DmpSimulator, body: bytes, content_type: str, peer: Mapping[str, Any] | None
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON answer) for one ITI-65 request."""
    if "json" not in content_type:
        return _outcome(415, "not-supported", "application/fhir+json expected")
    try:
        bundle = json.loads(body)
    except ValueError:
        return _outcome(400, "invalid", "the body is not JSON")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
        return _outcome(400, "invalid", "a transaction Bundle is expected")
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    by_url = {e.get("fullUrl"): e.get("resource") or {} for e in entries}
    lists = [r for r in by_url.values() if r.get("resourceType") == "List"]
    docrefs = [(u, r) for u, r in by_url.items() if r.get("resourceType") == "DocumentReference"]
    if len(lists) != 1 or not docrefs:
        return _outcome(422, "required", "one SubmissionSet List and at least one DocumentReference are required")
    ss = lists[0]
    urls = {str(x.get("url")) for x in ss.get("extension") or [] if isinstance(x, dict)}
    for needed in ("ihe-designationType", "ihe-sourceId"):
        if not any(u.endswith(needed) for u in urls):
            return _outcome(422, "required", f"SubmissionSet extension {needed} is required", "List.extension")
    oids = rules.INS_OIDS + (rules.INS_TEST_OIDS if sim.accept_test_ins else ())
    stored_rows: list[tuple[StoredEntry, bytes, str]] = []
    for url, doc in docrefs:
        for path, what in DOCREF_RULES:
            if _get(doc, path) in (None, "", []):
                return _outcome(422, "required", f"DocumentReference.{path}: {what}", f"DocumentReference.{path}")
        checks: list[tuple[str, bool]] = [
            ("type", _get(doc, "type.coding.code") in valuesets.TYPE_CODE),
            ("securityLabel", _get(doc, "securityLabel.coding.code") in ("N", "R", "V")),
            ("content.format", _get(doc, "content.format.code") in rules.FORMAT_CODES),
            ("context.facilityType", _get(doc, "context.facilityType.coding.code") in valuesets.FACILITY_TYPE),
            ("subject", _oid(_get(doc, "subject.identifier.system")) in oids),
        ]
        for path, ok in checks:
            if not ok:
                return _outcome(
                    422,
                    "code-invalid",
                    f"DocumentReference.{path} is not in its value set",
                    f"DocumentReference.{path}",
                )
        binary = by_url.get(_get(doc, "content.attachment.url")) or {}
        try:
            content = base64.b64decode(binary.get("data") or "", validate=True)
        except ValueError:
            return _outcome(422, "invalid", "Binary.data is not base64")
        if not content:
            return _outcome(422, "required", "the attachment url must point at a Binary of the Bundle")
        sha1 = hashlib.sha1(content, usedforsecurity=False).digest()
        if _get(doc, "content.attachment.hash") != base64.b64encode(sha1).decode() or _get(
            doc, "content.attachment.size"
        ) != len(content):
            return _outcome(422, "invalid", "attachment hash/size differ from the Binary", "DocumentReference.content")
        try:
            cda = parse_xml(content, max_depth=256)
        except UnsafeXml as exc:
            return _outcome(422, "invalid", f"document unreadable: {exc}")
        if cda.tag != q("hl7", "ClinicalDocument"):
            return _outcome(422, "invalid", "the Binary is not a CDA document")
        facts = rules.cda_facts(cda, content, accept_test_ins=sim.accept_test_ins)
        patient = f"{_get(doc, 'subject.identifier.value')}^^^&{_oid(_get(doc, 'subject.identifier.system'))}&ISO^NH"
        unique = str(_get(doc, "masterIdentifier.value")).removeprefix("urn:oid:")
        if patient != facts["patientId"]:
            return _outcome(
                422, "business-rule", "subject is not the INS of the CDA recordTarget", "DocumentReference.subject"
            )
        if unique != facts["uniqueId"]:
            return _outcome(
                422, "business-rule", "masterIdentifier is not the CDA id", "DocumentReference.masterIdentifier"
            )
        status = sim.store.patient_status(patient) or ("active" if sim.auto_open else "unknown")
        if status == "unknown":
            return _outcome(404, "not-found", "aucun DMP pour ce patient (INS inconnu)")
        if status == "closed":
            return _outcome(422, "business-rule", "le DMP de ce patient est fermé")
        sim.store.set_patient(patient, "active")
        existing = sim.store.entry_by_unique_id(unique)
        if existing is not None:
            if existing.hash == sha1.hex():
                return _outcome(
                    409,
                    "duplicate",
                    f"document {unique} déjà présent",
                    f"DocumentReference/{existing.entry_uuid.removeprefix('urn:uuid:')}",
                )
            return _outcome(409, "conflict", f"document {unique} déjà présent avec un autre contenu")
        replaces = None
        for relation in doc.get("relatesTo") or []:
            if relation.get("code") != "replaces":
                continue
            target = str(_get(relation, "target.reference") or "").removeprefix("DocumentReference/")
            old = sim.store.entry(f"urn:uuid:{target}")
            if old is None:
                return _outcome(422, "not-found", f"relatesTo replaces an unknown DocumentReference ({target})")
            if old.status != APPROVED:
                return _outcome(422, "business-rule", f"relatesTo replaces a superseded DocumentReference ({target})")
            replaces = old.entry_uuid
        entry = StoredEntry(
            entry_uuid=f"urn:uuid:{uuid.uuid4()}",
            unique_id=unique,
            patient_id=patient,
            status=APPROVED,
            hash=sha1.hex(),
            size=len(content),
            type_code=str(_get(doc, "type.coding.code")),
            format_code=str(_get(doc, "content.format.code")),
            confidentiality=tuple(str(c.get("coding", [{}])[0].get("code")) for c in doc.get("securityLabel") or []),
            submission_set=str(_get(ss, "identifier.value")),
            replaces=replaces,
            route="mhd",
        )
        stored_rows.append((entry, content, json.dumps(doc)))
        _ = url
    with sim.store.transaction() as db:
        for entry, content, metadata in stored_rows:
            sim.store.insert_entry(db, entry, metadata=metadata, content=content)
            if entry.replaces:
                db.execute("UPDATE entries SET status = ? WHERE entry_uuid = ?", (DEPRECATED, entry.replaces))
    sim.store.log("ITI-65", "success", [])
    response = [{"response": {"status": "201 Created", "location": f"List/{uuid.uuid4()}"}}]
    for entry, _, _ in stored_rows:
        response.append(
            {
                "response": {
                    "status": "201 Created",
                    "location": f"DocumentReference/{entry.entry_uuid.removeprefix('urn:uuid:')}",
                }
            }
        )
        response.append({"response": {"status": "201 Created", "location": f"Binary/{uuid.uuid4()}"}})
    return 200, {"resourceType": "Bundle", "type": "transaction-response", "entry": response}
