"""The DMP simulator's metadata rules, one line per line of ``shared/specs/dmp-mes.md`` §2.

Each :class:`Rule` says where the value is read in the ebRIM request (slot, classification,
external identifier, attribute), its requiredness (R / RE / O) and cardinality, its format or
value set, and, when the spec's "source" column names a CDA header element, the CDA value it must
equal. :func:`check_entry` / :func:`check_submission_set` apply them; the result is a list of
``(rule id, message)``, each answered as an ``XDSRegistryMetadataError`` (or the rule's code).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

from connectors.dmp._xml import NS
from mappings import valuesets

__all__ = ["DE_RULES", "SS_RULES", "Rule", "cda_facts", "check_entry", "check_submission_set", "read_object"]

# --- registry UUIDs (spec's objects table) ---
DE_OBJECT_TYPE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONF = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_EVENT = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
DE_FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_FACILITY = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_PATIENT = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_PATIENT = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
LIMITED_METADATA = "urn:uuid:5003a9db-8d8d-49e6-bf0c-990e34ac7707"

INS_OIDS = ("1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9")
INS_TEST_OIDS = ("1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11")
VISIBILITY_CODES = ("MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX")
VISIBILITY_SYSTEM = "1.2.250.1.213.1.1.4.13"
CONF_SYSTEM = "2.16.840.1.113883.5.25"
CLASS_SYSTEM = "1.2.250.1.213.1.1.4.1"  # TRE_A03
FORMAT_SYSTEMS = ("1.2.250.1.213.1.1.4.2.282", "1.3.6.1.4.1.19376.1.2.3")
FORMAT_CODES = (
    "urn:ihe:iti:xds-sd:pdf:2008",
    "urn:asip:ci-sis:dlu:2015",
    "urn:asip:ci-sis:fludt:2017",
    "urn:asip:ci-sis:fludr:2017",
    "urn:ihe:pcc:ips:2020",
    "urn:ihe:iti:dsg:detached:2014",  # the submission-set signature (IHE DSG)
)
CONTENT_TYPE_SYSTEMS = ("1.2.250.1.213.1.1.4.6", "1.2.250.1.213.2.2", "1.2.250.1.71.4.2.4")  # JDV_J03 sources
OID = r"[0-2](\.(0|[1-9][0-9]*))+"
TS = r"\d{14}"
XCN = r"[^^]+\^[^^]*\^[^^]*\^\^\^\^\^\^&1\.2\.250\.1\.71\.4\.2\.1&ISO\^D\^\^\^IDNPS"
XON = r"[^^]*\^\^\^\^\^&1\.2\.250\.1\.71\.4\.2\.2&ISO\^IDNST\^\^\^[0-4][^^]+"
CE = r"[^^]+\^[^^]*\^&" + OID + r"&ISO"

Where = tuple[
    str, ...
]  # ("slot", name) | ("class", scheme) | ("ext", scheme) | ("attr", name) | ("name",) | ("author", scheme, slot)
Value = str | tuple[str, str]


@dataclass(frozen=True)
class Rule:
    """One metadata line of the spec: ``id`` is "<object>.<metadata>", as the spec names it."""

    id: str
    where: Where
    req: Literal["R", "RE", "O"]
    max: int | None = 1
    pattern: str | None = None
    allowed: Callable[[Value], bool] | None = None
    allowed_text: str = ""
    cda: str | None = None  # key of cda_facts() the (first) value must equal
    applies: Literal["all", "cda"] = "all"


def _codes(*pairs: tuple[Sequence[str] | None, Sequence[str]]) -> Callable[[Value], bool]:
    def check(value: Value) -> bool:
        if not isinstance(value, tuple):
            return False
        code, scheme = value
        return any((codes is None or code in codes) and scheme in schemes for codes, schemes in pairs)

    return check


def _in_valueset(vs: valuesets.ValueSet) -> Callable[[Value], bool]:
    def check(value: Value) -> bool:
        return isinstance(value, tuple) and value[0] in vs and vs.get(value[0]).system == value[1]

    return check


def _first_confidentiality(values: Sequence[Value]) -> str | None:
    if not values or not isinstance(values[0], tuple) or values[0][1] != CONF_SYSTEM or values[0][0] not in "NRV":
        return "the first confidentialityCode must be N, R or V on 2.16.840.1.113883.5.25"
    for extra in values[1:]:
        if not isinstance(extra, tuple) or extra[1] != VISIBILITY_SYSTEM or extra[0] not in VISIBILITY_CODES:
            code = extra[0] if isinstance(extra, tuple) else ""
            return f"extra confidentialityCode {code!r} is not a masking/visibility code on {VISIBILITY_SYSTEM}"
    return None


# DocumentEntry ("fiche"), in the order of the spec's table.
DE_RULES: tuple[Rule, ...] = (
    Rule(
        "DE.patientId", ("ext", DE_PATIENT), "R", pattern=r"[0-9A-Z]{13,15}\^\^\^&" + OID + r"&ISO\^NH", cda="patientId"
    ),
    Rule("DE.sourcePatientId", ("slot", "sourcePatientId"), "R", pattern=r"[^^]+\^\^\^&" + OID + r"&ISO\^(PI|NH)"),
    Rule("DE.sourcePatientInfo", ("slot", "sourcePatientInfo"), "O", max=None, pattern=r"PID-\d+\|.*"),
    Rule("DE.uniqueId", ("ext", DE_UNIQUE), "R", pattern=OID + r"(\^[^^]{1,64})?", cda="uniqueId"),
    Rule(
        "DE.typeCode",
        ("class", DE_TYPE),
        "R",
        allowed=_in_valueset(valuesets.TYPE_CODE),
        allowed_text="JDV_J07 (CI-SIS superset of JDV_J66-TypeCode-DMP)",
        cda="typeCode",
    ),
    Rule(
        "DE.classCode",
        ("class", DE_CLASS),
        "R",
        pattern=None,
        allowed=lambda v: isinstance(v, tuple) and v[1] == CLASS_SYSTEM and re.fullmatch(r"\d{2}", v[0]) is not None,
        allowed_text="TRE_A03 classes (JDV_J57-ClassCode-DMP)",
    ),
    Rule(
        "DE.formatCode",
        ("class", DE_FORMAT),
        "R",
        allowed=_codes((FORMAT_CODES, FORMAT_SYSTEMS)),
        allowed_text="JDV_J60 formats (PDF, DLU, FLUDT, FLUDR, IPS; DSG for the signature)",
    ),
    Rule(
        "DE.healthcareFacilityTypeCode",
        ("class", DE_FACILITY),
        "R",
        allowed=_in_valueset(valuesets.FACILITY_TYPE),
        allowed_text="JDV_J02 (DMP J61)",
        cda="healthcareFacilityTypeCode",
    ),
    Rule(
        "DE.practiceSettingCode",
        ("class", DE_PRACTICE),
        "R",
        allowed=_in_valueset(valuesets.PRACTICE_SETTING),
        allowed_text="JDV_J04",
        cda="practiceSettingCode",
    ),
    Rule("DE.confidentialityCode", ("class", DE_CONF), "R", max=4, cda="confidentialityCode"),
    Rule("DE.creationTime", ("slot", "creationTime"), "R", pattern=TS, cda="creationTime"),
    Rule("DE.serviceStartTime", ("slot", "serviceStartTime"), "R", pattern=TS, cda="serviceStartTime"),
    Rule("DE.serviceStopTime", ("slot", "serviceStopTime"), "RE", pattern=TS, cda="serviceStopTime"),
    Rule("DE.languageCode", ("slot", "languageCode"), "R", pattern=r"fr-FR", cda="languageCode"),
    Rule("DE.title", ("name",), "R", pattern=r".*\S.*", cda="title"),
    Rule("DE.hash", ("slot", "hash"), "R", pattern=r"[0-9a-f]{40}", cda="hash"),
    Rule("DE.size", ("slot", "size"), "R", pattern=r"\d+", cda="size"),
    Rule("DE.mimeType", ("attr", "mimeType"), "R", pattern=r"text/xml"),
    Rule("DE.legalAuthenticator", ("slot", "legalAuthenticator"), "R", pattern=XCN, applies="cda"),
    Rule("DE.author.authorPerson", ("author", DE_AUTHOR, "authorPerson"), "R", pattern=XCN),
    Rule("DE.author.authorInstitution", ("author", DE_AUTHOR, "authorInstitution"), "RE", max=None, pattern=XON),
    Rule("DE.author.authorSpecialty", ("author", DE_AUTHOR, "authorSpecialty"), "RE", pattern=CE),
    Rule("DE.author.authorRole", ("author", DE_AUTHOR, "authorRole"), "RE", max=None, pattern=CE),
    Rule("DE.eventCodeList", ("class", DE_EVENT), "O", max=None),
    Rule(
        "DE.referenceIdList",
        ("slot", "urn:ihe:iti:xds:2013:referenceIdList"),
        "O",
        max=None,
        # CXi: id^^^&assigner OID&ISO^type, types of JDV_J197/J231
        pattern=r"[^^]+\^\^\^[^^]*\^(urn:ihe:iti:xds:2013:accession|urn:ihe:iti:xds:2013:order"
        r"|urn:ihe:iti:xds:2016:studyInstanceUID)",
    ),
)

# SubmissionSet ("lot de soumission").
SS_RULES: tuple[Rule, ...] = (
    Rule("SS.author.authorInstitution", ("author", SS_AUTHOR, "authorInstitution"), "RE", max=None, pattern=XON),
    Rule("SS.author.authorPerson", ("author", SS_AUTHOR, "authorPerson"), "R", pattern=XCN),
    Rule("SS.author.authorRole", ("author", SS_AUTHOR, "authorRole"), "RE", max=None, pattern=CE),
    Rule("SS.author.authorSpecialty", ("author", SS_AUTHOR, "authorSpecialty"), "RE", pattern=CE),
    Rule(
        "SS.contentTypeCode",
        ("class", SS_CONTENT),
        "R",
        allowed=lambda v: isinstance(v, tuple) and v[1] in CONTENT_TYPE_SYSTEMS,
        allowed_text="JDV_J03 sources (TRE_A00, TRE_R209, TRE_R02)",
    ),
    Rule("SS.patientId", ("ext", SS_PATIENT), "R", pattern=r"[0-9A-Z]{13,15}\^\^\^&" + OID + r"&ISO\^NH"),
    Rule("SS.sourceId", ("ext", SS_SOURCE), "R", pattern=OID),
    Rule("SS.submissionTime", ("slot", "submissionTime"), "R", pattern=TS),
    Rule("SS.title", ("name",), "O"),
    Rule("SS.uniqueId", ("ext", SS_UNIQUE), "R", pattern=OID),
)


def _ns(tag: str) -> str:
    prefix, local = tag.split(":")
    return f"{{{NS[prefix]}}}{local}"


def read_object(obj: Any, where: Where) -> list[Value]:
    """The values of one metadata of an ebRIM object (ExtrinsicObject or RegistryPackage)."""
    kind = where[0]
    if kind == "slot":
        return [
            v.text or ""
            for slot in obj.findall("rim:Slot", NS)
            if slot.get("name") == where[1]
            for v in slot.findall("rim:ValueList/rim:Value", NS)
        ]
    if kind == "attr":
        value = obj.get(where[1])
        return [value] if value is not None else []
    if kind == "name":
        return [ls.get("value", "") for ls in obj.findall("rim:Name/rim:LocalizedString", NS)]
    if kind == "ext":
        return [
            e.get("value", "")
            for e in obj.findall("rim:ExternalIdentifier", NS)
            if e.get("identificationScheme") == where[1]
        ]
    if kind == "class":
        out: list[Value] = []
        for c in obj.findall("rim:Classification", NS):
            if c.get("classificationScheme") != where[1]:
                continue
            schemes = read_object(c, ("slot", "codingScheme"))
            out.append((c.get("nodeRepresentation", ""), str(schemes[0]) if schemes else ""))
        return out
    if kind == "author":
        return [
            value
            for c in obj.findall("rim:Classification", NS)
            if c.get("classificationScheme") == where[1]
            for value in read_object(c, ("slot", where[2]))
        ]
    raise ValueError(f"unknown rule location {where!r}")


def _hl7_ts(value: str | None) -> str | None:
    match = re.fullmatch(r"(\d{8})(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?", value or "")
    if not match:
        return None
    day, hh, mm, ss, offset = match.groups()
    tz = UTC
    if offset:
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    moment = datetime.strptime(day, "%Y%m%d").replace(
        hour=int(hh or 0), minute=int(mm or 0), second=int(ss or 0), tzinfo=tz
    )
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def cda_facts(cda: Any, content: bytes, *, accept_test_ins: bool) -> dict[str, Any]:
    """What the spec's "source" column says each metadata must be, read from the CDA header."""
    h = "{urn:hl7-org:v3}"

    def find(path: str) -> Any:
        return cda.find(path.replace("h:", h))

    def attr(path: str, name: str) -> str | None:
        el = find(path)
        return el.get(name) if el is not None else None

    def code(el: Any) -> tuple[str, str] | None:
        return (el.get("code", ""), el.get("codeSystem", "")) if el is not None else None

    oids = INS_OIDS + (INS_TEST_OIDS if accept_test_ins else ())
    ins = [i for i in cda.findall(f"{h}recordTarget/{h}patientRole/{h}id") if i.get("root") in oids]
    doc_id = find("h:id")
    unique = None
    if doc_id is not None:
        unique = doc_id.get("root", "") + (f"^{doc_id.get('extension')}" if doc_id.get("extension") else "")
    service = find("h:documentationOf/h:serviceEvent/h:effectiveTime")
    low = service.find(f"{h}low") if service is not None else None
    high = service.find(f"{h}high") if service is not None else None
    title = find("h:title")
    return {
        "patientId": f"{ins[0].get('extension')}^^^&{ins[0].get('root')}&ISO^NH" if ins else None,
        "uniqueId": unique,
        "typeCode": code(find("h:code")),
        "confidentialityCode": code(find("h:confidentialityCode")),
        "creationTime": _hl7_ts(attr("h:effectiveTime", "value")),
        "serviceStartTime": _hl7_ts(low.get("value")) if low is not None else None,
        "serviceStopTime": _hl7_ts(high.get("value")) if high is not None else None,
        "languageCode": attr("h:languageCode", "code"),
        "title": (title.text or "").strip() if title is not None else None,
        "healthcareFacilityTypeCode": code(
            find("h:componentOf/h:encompassingEncounter/h:location/h:healthCareFacility/h:code")
        ),
        "practiceSettingCode": code(
            find("h:author/h:assignedAuthor/h:representedOrganization/h:standardIndustryClassCode")
        ),
        "hash": hashlib.sha1(content, usedforsecurity=False).hexdigest(),
        "size": str(len(content)),
    }


def _apply(rules: Sequence[Rule], obj: Any, facts: Mapping[str, Any] | None, *, is_cda: bool) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for rule in rules:
        if rule.applies == "cda" and not is_cda:
            continue
        values = read_object(obj, rule.where)
        if not values or all(v in ("", ("", "")) for v in values):
            if rule.req == "R":
                problems.append((rule.id, f"{rule.id} is required"))
            continue
        if rule.max is not None and len(values) > rule.max:
            problems.append((rule.id, f"{rule.id} occurs {len(values)} times (at most {rule.max})"))
            continue
        bad = False
        for value in values:
            if rule.pattern is not None and (not isinstance(value, str) or not re.fullmatch(rule.pattern, value)):
                # values are not quoted back: they may be personal data (INS, names)
                problems.append((rule.id, f"{rule.id} does not have the expected format"))
                bad = True
                break
            if rule.allowed is not None and not rule.allowed(value):
                problems.append((rule.id, f"{rule.id} {value!r} is not in {rule.allowed_text}"))
                bad = True
                break
        if bad:
            continue
        if rule.id == "DE.confidentialityCode":
            message = _first_confidentiality(values)
            if message:
                problems.append((rule.id, message))
                continue
        if rule.cda and facts is not None and (is_cda or rule.cda in ("hash", "size")):
            expected = facts.get(rule.cda)
            if values[0] != expected:
                problems.append((rule.id, f"{rule.id} differs from the document's {rule.cda}"))
    return problems


def check_entry(obj: Any, facts: Mapping[str, Any] | None, *, is_cda: bool) -> list[tuple[str, str]]:
    """Every DocumentEntry rule against one ExtrinsicObject (``facts`` from its document)."""
    problems = []
    if obj.get("objectType") != DE_OBJECT_TYPE:
        problems.append(("DE.objectType", f"ExtrinsicObject objectType must be {DE_OBJECT_TYPE}"))
    if any(c.get("classificationNode") == LIMITED_METADATA for c in obj.findall("rim:Classification", NS)):
        problems.append(("DE.limitedMetadata", "limited metadata is not accepted by the DMP"))
    if is_cda and facts is not None and facts.get("patientId") is None:
        problems.append(("DE.patientId", "the CDA recordTarget carries no INS (qualified identity required)"))
    return problems + _apply(DE_RULES, obj, facts, is_cda=is_cda)


def check_submission_set(obj: Any) -> list[tuple[str, str]]:
    return _apply(SS_RULES, obj, None, is_cda=False)
