"""The SI-SdO simulator: an HTTPS FHIR R4 server on loopback that behaves like ViaTrajectoire PH
towards one or several ESSMS (IG ``ans.fhir.fr.sdo``), plus a small generic FHIR store.

Authentication (``auth``: ``oauth``, ``mtls`` or ``either``, the default):

- ``POST /oauth/token`` — OAuth 2.0 client credentials (``client_secret_basic`` or
  ``client_secret_post``); the client is enrolled for one ESSMS (FINESS); tokens live
  ``token_ttl`` seconds; ``invalid_client`` for a wrong secret;
- mutual TLS: a client certificate issued by the simulator's CA whose subject CN is a FINESS
  enrolled with :meth:`SdoSimulator.enroll`.

Every FHIR answer is filtered by the authenticated ESSMS, as the SI-SdO filters by the token.

FHIR surface (``[base]`` = ``https://127.0.0.1:<port>/fhir``)::

    GET  /metadata                                   CapabilityStatement (no authentication)
    GET  /DocumentReference?type=57830-2&_lastUpdated=gt<instant>[&_elements=id][&_count=n]
                                                     searchset of the ESSMS's decisions, oldest
                                                     first, paged (snapshot pages: ``next`` link)
    GET  /DocumentReference/<id>                     the decision (esms-document-reference)
    POST /Consent                                    accord (esms-consent), If-None-Exist honoured
    POST /Task, PUT /Task/<id>                       statut (sdo-task), If-None-Exist honoured
    GET  /Task?_lastUpdated=gt<instant>              statuses of the decisions notified to the ESSMS
    GET  /Task/<id>, /Consent/<id>
    generic: POST /<type>, PUT /<type>/<id>, GET /<type>/<id>, GET /<type>?identifier=s|v,
             POST / (transaction or batch Bundle)

Posted resources are validated with the project's ``profiles`` (the SDO profiles as data): an
invalid one is refused ``422`` with an OperationOutcome, nothing stored.

Fault injection (Python API or ``POST /_control`` with the same names)::

    down (bool)          every FHIR and token request answers 503 (an outage)
    fail_next (int)      the next n FHIR requests answer 503
    duplicates (bool)    search pages repeat each entry (a peer's duplicate notifications)
    reject_next (int)    the next n writes (Consent, Task, any resource) are refused 422 (business rule)
    slow_next (seconds)  the next FHIR request is answered after this delay
    token_ttl (seconds)  lifetime of new tokens; revoke_tokens() ends every issued token now
    publish_decision(..., late_by=timedelta)   a decision stamped in the past (late arrival)

``GET /_received`` lists what ESSMS posted (type, id, version, owner) for the demo.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import profiles
from connectors.sandbox.sdo.pki import CertPair, SandboxPki
from profiles.definitions import sdo as sdo_profiles

__all__ = ["Faults", "SdoSimulator"]

_FHIR = "application/fhir+json"
_LOINC = "http://loinc.org"
DECISION_TYPE = "57830-2"
_MAX_BODY = 8 * 1024 * 1024
_PAGE_TTL = 600.0
_SDO_TYPES = frozenset({"DocumentReference", "Consent", "Task"})


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_instant(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _outcome(code: str, text: str, severity: str = "error", expression: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": text}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


@dataclass
class Faults:
    """Current fault injection (guarded by the simulator's lock)."""

    down: bool = False
    fail_next: int = 0
    duplicates: bool = False
    reject_next: int = 0
    slow_next: float = 0.0
    token_ttl: float = 3600.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Version:
    resource: dict[str, Any]
    version: int
    last_updated: datetime


@dataclass
class _Stored:
    rtype: str
    id: str
    owner: str | None  # FINESS of the ESSMS it belongs to (None: any authenticated client)
    versions: list[_Version] = field(default_factory=list)
    decision: str | None = None  # idNat_Decision it is about (Task, DocumentReference)

    @property
    def current(self) -> _Version:
        return self.versions[-1]


@dataclass
class _Client:
    client_id: str
    secret: str
    finess: str


class HttpFailure(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def _cda(decision: Mapping[str, Any]) -> bytes:
    """A stand-in for the CDA 'individu + décision' (not a conformant CDA: the simulator's own XML)."""
    person = decision.get("person") or {}
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<ClinicalDocument xmlns="urn:hl7-org:v3">',
        f"<!-- dui-gateway SI-SdO sandbox: decision {decision['id_decision']} -->",
        f'<recordTarget><patientRole><id extension="{person.get("ins", "")}" root="1.2.250.1.213.1.4.8"/>'
        f"<patient><name><given>{person.get('given', '')}</given><family>{person.get('family', '')}</family>"
        f"</name></patient></patientRole></recordTarget>",
        f'<decision statut="{decision["status"]}" categorie="{decision.get("category", "")}"/>',
        "</ClinicalDocument>",
    ]
    return "\n".join(parts).encode("utf-8")


class _State:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.faults = Faults()
        self.clients: dict[str, _Client] = {}
        self.cert_finess: set[str] = set()
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (finess, expires at, time.time())
        self.store: dict[tuple[str, str], _Stored] = {}
        self.pages: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.token_requests = 0

    # -- writes -----------------------------------------------------------------------------
    def put(
        self,
        rtype: str,
        rid: str,
        resource: dict[str, Any],
        *,
        owner: str | None,
        decision: str | None = None,
        at: datetime | None = None,
    ) -> _Stored:
        with self.lock:
            stored = self.store.get((rtype, rid))
            if stored is None:
                stored = _Stored(rtype, rid, owner, decision=decision)
                self.store[(rtype, rid)] = stored
            moment = at or self.clock()
            moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)  # instants are ms
            version = len(stored.versions) + 1
            body = dict(resource)
            body["resourceType"] = rtype
            body["id"] = rid
            meta = dict(body.get("meta") or {})
            meta["versionId"] = str(version)
            meta["lastUpdated"] = _instant(moment)
            body["meta"] = meta
            stored.versions.append(_Version(body, version, moment))
            if decision is not None:
                stored.decision = decision
            return stored

    def find_identifier(self, rtype: str, system: str | None, value: str, owner: str | None) -> _Stored | None:
        with self.lock:
            for stored in self.store.values():
                if stored.rtype != rtype or (owner is not None and stored.owner not in (None, owner)):
                    continue
                idents = stored.current.resource.get("identifier") or []
                for ident in [idents] if isinstance(idents, Mapping) else idents:
                    if isinstance(ident, Mapping) and ident.get("value") == value:
                        if system is None or ident.get("system") == system:
                            return stored
        return None


def _token_param(value: str) -> tuple[str | None, str]:
    if "|" in value:
        system, _, code = value.partition("|")
        return (system or None), code
    return None, value


def _date_filter(values: list[str]) -> Callable[[datetime], bool]:
    tests: list[Callable[[datetime], bool]] = []
    for raw in values:
        prefix = raw[:2] if raw[:2] in ("gt", "ge", "lt", "le", "eq") else "eq"
        text = raw[2:] if raw[:2] in ("gt", "ge", "lt", "le", "eq") else raw
        try:
            moment = _parse_instant(text)
        except ValueError:
            raise HttpFailure(400, _outcome("invalid", "_lastUpdated is not a FHIR instant")) from None
        ops: dict[str, Callable[[datetime, datetime], bool]] = {
            "gt": lambda a, b: a > b,
            "ge": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "le": lambda a, b: a <= b,
            "eq": lambda a, b: a == b,
        }
        tests.append(functools.partial(_compare, ops[prefix], moment))
    return lambda t: all(test(t) for test in tests)


def _compare(op: Callable[[datetime, datetime], bool], moment: datetime, value: datetime) -> bool:
    return op(value, moment)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None, media: str = _FHIR) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8") if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        with self.server.state.lock:
            self.server.state.requests.append((self.command, urlsplit(self.path).path, status))

    def _read_body(self) -> None:
        """Read the whole body first, whatever the answer: a keep-alive connection stays in sync."""
        self._raw = b""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY:
            self.close_connection = True
            raise HttpFailure(413, _outcome("too-costly", "body too large or without a valid length"))
        self._raw = self.rfile.read(length) if length else b""

    def _body(self) -> bytes:
        return self._raw

    def _json(self) -> dict[str, Any]:
        try:
            data = json.loads(self._body())
        except ValueError:
            raise HttpFailure(400, _outcome("structure", "body is not JSON")) from None
        if not isinstance(data, dict):
            raise HttpFailure(400, _outcome("structure", "body is not a FHIR resource"))
        return data

    def _dispatch(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        try:
            self._read_body()
            if path.startswith("/_"):
                self._control(path, query)
                return
            with state.lock:
                if state.faults.down:
                    raise HttpFailure(503, _outcome("transient", "SI-SdO unavailable (simulated outage)"))
                if path.startswith("/fhir") and path != "/fhir/metadata" and state.faults.fail_next > 0:
                    state.faults.fail_next -= 1
                    raise HttpFailure(503, _outcome("transient", "SI-SdO unavailable (simulated)"))
                delay = state.faults.slow_next if path.startswith("/fhir") else 0.0
                if delay:
                    state.faults.slow_next = 0.0
            if delay:
                time.sleep(delay)
            if path == "/oauth/token" and self.command == "POST":
                self._token()
                return
            if not path.startswith("/fhir"):
                raise HttpFailure(404, _outcome("not-found", "unknown path"))
            rest = [p for p in path[len("/fhir") :].split("/") if p]
            if rest == ["metadata"] and self.command == "GET":
                self._send(200, self.server.capability())
                return
            finess = self._authenticate()
            self._fhir(finess, rest, query)
        except HttpFailure as exc:
            self._send(exc.status, exc.body, exc.headers)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    # -- authentication ---------------------------------------------------------------------
    def _token(self) -> None:
        state = self.server.state
        with state.lock:
            state.token_requests += 1
        form = parse_qs(self._body().decode("utf-8", "replace"))
        client_id = (form.get("client_id") or [""])[0]
        secret = (form.get("client_secret") or [""])[0]
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(auth[6:]).decode("utf-8").partition(":")
            except ValueError:
                pass
        if (form.get("grant_type") or [""])[0] != "client_credentials":
            self._send(400, {"error": "unsupported_grant_type"}, media="application/json")
            return
        with state.lock:
            client = state.clients.get(client_id)
            if client is None or not secrets.compare_digest(client.secret, secret):
                self._send(401, {"error": "invalid_client"}, media="application/json")
                return
            token = secrets.token_urlsafe(24)
            ttl = state.faults.token_ttl
            state.tokens[token] = (client.finess, time.time() + ttl)
        self._send(
            200,
            {"access_token": token, "token_type": "Bearer", "expires_in": int(max(ttl, 1))},
            headers={"Cache-Control": "no-store"},
            media="application/json",
        )

    def _authenticate(self) -> str:
        state = self.server.state
        mode = self.server.auth
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer ") and mode in ("oauth", "either"):
            with state.lock:
                found = state.tokens.get(auth[7:].strip())
            if found is not None and found[1] > time.time():
                return found[0]
            raise HttpFailure(
                401,
                _outcome("login", "invalid or expired token"),
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if mode in ("mtls", "either"):
            peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
            if peer:
                for rdn in peer.get("subject", ()):
                    for pair in rdn:
                        key, value = pair[0], pair[1]
                        if key == "commonName" and value in state.cert_finess:
                            return str(value)
        raise HttpFailure(401, _outcome("login", "authentication required"), {"WWW-Authenticate": "Bearer"})

    # -- FHIR -------------------------------------------------------------------------------
    def _fhir(self, finess: str, rest: list[str], query: dict[str, list[str]]) -> None:
        method = self.command
        if not rest and method == "POST":
            self._bundle(finess, self._json())
            return
        if not rest:
            raise HttpFailure(404, _outcome("not-found", "unknown path"))
        rtype = rest[0]
        if len(rest) == 1 and method == "GET" and "_getpages" in query:
            self._page(query)
            return
        if len(rest) == 1 and method == "GET":
            self._search(finess, rtype, query)
            return
        if len(rest) == 2 and method == "GET":
            stored = self._visible(finess, rtype, rest[1])
            self._send(200, stored.current.resource, {"ETag": f'W/"{stored.current.version}"'})
            return
        if len(rest) == 1 and method == "POST":
            status, stored = self._create(finess, rtype, self._json(), self.headers.get("If-None-Exist"))
            self._answer_write(status, stored)
            return
        if len(rest) == 2 and method == "PUT":
            status, stored = self._update(finess, rtype, rest[1], self._json())
            self._answer_write(status, stored)
            return
        raise HttpFailure(405, _outcome("not-supported", f"{method} not supported here"))

    def _answer_write(self, status: int, stored: _Stored) -> None:
        current = stored.current
        self._send(
            status,
            current.resource,
            {
                "Location": f"{self.server.base_url}/{stored.rtype}/{stored.id}/_history/{current.version}",
                "ETag": f'W/"{current.version}"',
                "Last-Modified": current.last_updated.strftime("%a, %d %b %Y %H:%M:%S GMT"),
            },
        )

    def _visible(self, finess: str, rtype: str, rid: str) -> _Stored:
        state = self.server.state
        with state.lock:
            stored = state.store.get((rtype, rid))
            if stored is None or (stored.owner is not None and stored.owner != finess and rtype != "Task"):
                raise HttpFailure(404, _outcome("not-found", f"{rtype}/{rid} not found"))
            if rtype == "Task" and stored.owner != finess and stored.decision not in self.server.decisions_of(finess):
                raise HttpFailure(404, _outcome("not-found", f"{rtype}/{rid} not found"))
            return stored

    def _validate(self, finess: str, rtype: str, resource: dict[str, Any]) -> None:
        if resource.get("resourceType") != rtype:
            raise HttpFailure(400, _outcome("invalid", f"a {resource.get('resourceType')} posted to {rtype}"))
        profile = {"Consent": sdo_profiles.ESMS_CONSENT.url, "Task": sdo_profiles.SDO_TASK.url}.get(rtype)
        report = profiles.validate(resource, profile)
        if not report.ok:
            raise HttpFailure(422, report.to_operation_outcome())
        if rtype in ("Consent", "Task"):
            self._business_rules(finess, rtype, resource)
        with self.server.state.lock:
            if self.server.state.faults.reject_next > 0:
                self.server.state.faults.reject_next -= 1
                raise HttpFailure(422, _outcome("business-rule", f"{rtype} refused (simulated)", expression=rtype))

    def _business_rules(self, finess: str, rtype: str, resource: dict[str, Any]) -> None:
        struct = f"1{finess}"
        decisions = self.server.decisions_of(finess)
        if rtype == "Consent":
            if (resource.get("meta") or {}).get("source") != struct:
                raise HttpFailure(403, _outcome("forbidden", "meta.source is not the authenticated ESSMS"))
            ref = ((resource.get("provision") or {}).get("data") or [{}])[0].get("reference") or {}
            decision = (ref.get("identifier") or {}).get("value")
        else:
            inputs = _task_inputs(resource)
            if (inputs.get("idNat_Struct") or {}).get("value") != struct:
                raise HttpFailure(403, _outcome("forbidden", "idNat_Struct is not the authenticated ESSMS"))
            decision = (inputs.get("idNat_Decision") or {}).get("value")
        if decision not in decisions:
            raise HttpFailure(
                422, _outcome("business-rule", "no decision with this idNat_Decision was notified to the ESSMS")
            )

    def _create(
        self, finess: str, rtype: str, resource: dict[str, Any], if_none_exist: str | None
    ) -> tuple[int, _Stored]:
        state = self.server.state
        self._validate(finess, rtype, resource)
        with state.lock:
            if if_none_exist:
                params = parse_qs(if_none_exist)
                ident = (params.get("identifier") or [""])[0]
                if ident:
                    system, value = _token_param(ident)
                    found = state.find_identifier(rtype, system, value, finess)
                    if found is not None:
                        return 200, found
            return 201, state.put(
                rtype, uuid.uuid4().hex[:16], resource, owner=finess, decision=self._decision_of(rtype, resource)
            )

    def _update(self, finess: str, rtype: str, rid: str, resource: dict[str, Any]) -> tuple[int, _Stored]:
        state = self.server.state
        if resource.get("id") not in (None, rid):
            raise HttpFailure(400, _outcome("invalid", "the resource id differs from the URL"))
        self._validate(finess, rtype, resource)
        with state.lock:
            stored = state.store.get((rtype, rid))
            if stored is not None and stored.owner not in (None, finess):
                raise HttpFailure(403, _outcome("forbidden", f"{rtype}/{rid} belongs to another ESSMS"))
            if stored is None and rtype in _SDO_TYPES:
                raise HttpFailure(404, _outcome("not-found", f"{rtype}/{rid} not found (create it with POST)"))
            created = stored is None
            stored = state.put(rtype, rid, resource, owner=finess, decision=self._decision_of(rtype, resource))
            return (201 if created else 200), stored

    @staticmethod
    def _decision_of(rtype: str, resource: Mapping[str, Any]) -> str | None:
        if rtype == "Task":
            value = (_task_inputs(resource).get("idNat_Decision") or {}).get("value")
            return value if isinstance(value, str) else None
        return None

    def _search(self, finess: str, rtype: str, query: dict[str, list[str]]) -> None:
        state = self.server.state
        when = _date_filter(query.get("_lastUpdated", []))
        type_filter = [_token_param(v) for v in query.get("type", []) if v]
        ident_filter = [_token_param(v) for v in query.get("identifier", []) if v]
        elements = {e for v in query.get("_elements", []) for e in v.split(",") if e}
        try:
            count = max(1, min(int((query.get("_count") or ["50"])[0]), 200))
        except ValueError:
            raise HttpFailure(400, _outcome("invalid", "_count is not a number")) from None
        decisions = self.server.decisions_of(finess)
        matches: list[_Version] = []
        with state.lock:
            for stored in state.store.values():
                if stored.rtype != rtype:
                    continue
                if rtype == "Task":
                    if stored.owner != finess and stored.decision not in decisions:
                        continue
                elif stored.owner is not None and stored.owner != finess:
                    continue
                current = stored.current
                if not when(current.last_updated):
                    continue
                res = current.resource
                if type_filter and not any(
                    c.get("code") == code and (system is None or c.get("system") == system)
                    for system, code in type_filter
                    for c in ((res.get("type") or {}).get("coding") or [])
                ):
                    continue
                if ident_filter and not any(
                    i.get("value") == value and (system is None or i.get("system") == system)
                    for system, value in ident_filter
                    for i in (res.get("identifier") or [])
                ):
                    continue
                matches.append(current)
            duplicates = state.faults.duplicates
        matches.sort(key=lambda v: (v.last_updated, v.resource["id"]))
        entries: list[dict[str, Any]] = []
        for current in matches:
            resource = current.resource
            if elements:
                kept = {k: v for k, v in resource.items() if k in elements or k in ("resourceType", "id")}
                meta = dict(resource.get("meta") or {})
                meta["tag"] = [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
                ]
                kept["meta"] = meta
                resource = kept
            entry = {
                "fullUrl": f"{self.server.base_url}/{rtype}/{resource['id']}",
                "resource": resource,
                "search": {"mode": "match"},
            }
            entries.append(entry)
            if duplicates:
                entries.append(json.loads(json.dumps(entry)))
        page_id = uuid.uuid4().hex
        with state.lock:
            now = time.time()
            state.pages = {k: v for k, v in state.pages.items() if v[0] > now}
            state.pages[page_id] = (now + _PAGE_TTL, entries)
        self._send(200, self._page_bundle(page_id, entries, 0, count, len(matches)))

    def _page(self, query: dict[str, list[str]]) -> None:
        state = self.server.state
        page_id = (query.get("_getpages") or [""])[0]
        try:
            offset = int((query.get("_offset") or ["0"])[0])
            count = max(1, min(int((query.get("_count") or ["50"])[0]), 200))
        except ValueError:
            raise HttpFailure(400, _outcome("invalid", "bad paging parameters")) from None
        with state.lock:
            found = state.pages.get(page_id)
        if found is None or found[0] < time.time():
            raise HttpFailure(410, _outcome("not-found", "this search's pages have expired: search again"))
        self._send(200, self._page_bundle(page_id, found[1], offset, count, None))

    def _page_bundle(
        self, page_id: str, entries: list[dict[str, Any]], offset: int, count: int, total: int | None
    ) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "id": uuid.uuid4().hex,
            "meta": {"lastUpdated": _instant(self.server.state.clock())},
            "type": "searchset",
            "link": [],
            "entry": entries[offset : offset + count],
        }
        if total is not None:
            bundle["total"] = total
        if offset + count < len(entries):
            params = urlencode({"_getpages": page_id, "_offset": offset + count, "_count": count})
            bundle["link"].append({"relation": "next", "url": f"{self.server.base_url}/Bundle?{params}"})
        return bundle

    def _bundle(self, finess: str, bundle: dict[str, Any]) -> None:
        """Generic transaction/batch processing (references to urn:uuid fullUrls rewritten)."""
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in ("transaction", "batch"):
            raise HttpFailure(400, _outcome("invalid", "POST [base] takes a transaction or batch Bundle"))
        transaction = bundle["type"] == "transaction"
        entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
        ids: dict[str, str] = {}
        for entry in entries:
            resource = entry.get("resource") or {}
            full = entry.get("fullUrl")
            method = (entry.get("request") or {}).get("method")
            if isinstance(full, str) and full.startswith("urn:") and method == "POST":
                ids[full] = f"{resource.get('resourceType')}/{uuid.uuid4().hex[:16]}"
        text = json.dumps(entries)
        for full, ref in ids.items():
            text = text.replace(f'"{full}"', f'"{ref}"')
        resolved = json.loads(text)
        results: list[dict[str, Any]] = []
        if transaction:  # all or nothing: validate first
            for entry in resolved:
                resource = entry.get("resource")
                if isinstance(resource, dict) and (entry.get("request") or {}).get("method") in ("POST", "PUT"):
                    report = profiles.validate(resource)
                    if not report.ok:
                        raise HttpFailure(422, report.to_operation_outcome())
        for original, entry in zip(entries, resolved, strict=True):
            request = entry.get("request") or {}
            method, url = request.get("method"), str(request.get("url") or "")
            resource = entry.get("resource") or {}
            try:
                if method == "POST":
                    rtype = url.split("?")[0] or str(resource.get("resourceType"))
                    pre = ids.get(str(original.get("fullUrl")))
                    if pre is not None and not request.get("ifNoneExist"):
                        self._validate(finess, rtype, resource)
                        stored = self.server.state.put(rtype, pre.split("/")[1], resource, owner=finess)
                        status = 201
                    else:
                        status, stored = self._create(finess, rtype, resource, request.get("ifNoneExist"))
                elif method == "PUT":
                    rtype, _, rid = url.partition("/")
                    status, stored = self._update(finess, rtype, rid, resource)
                else:
                    raise HttpFailure(400, _outcome("not-supported", f"method {method} not supported in a Bundle"))
            except HttpFailure as exc:
                if transaction:
                    raise
                results.append({"response": {"status": str(exc.status), "outcome": exc.body}})
                continue
            results.append(
                {
                    "response": {
                        "status": f"{status} {'Created' if status == 201 else 'OK'}",
                        "location": f"{stored.rtype}/{stored.id}/_history/{stored.current.version}",
                        "etag": f'W/"{stored.current.version}"',
                        "lastModified": _instant(stored.current.last_updated),
                    }
                }
            )
        kind = "transaction-response" if transaction else "batch-response"
        self._send(200, {"resourceType": "Bundle", "type": kind, "entry": results})

    # -- control ------------------------------------------------------------------------------
    def _control(self, path: str, query: dict[str, list[str]]) -> None:
        sim = self.server.simulator
        if path == "/_health":
            self._send(200, {"ok": True}, media="application/json")
        elif path == "/_control" and self.command == "POST":
            orders = self._json()
            publish = orders.pop("publish", None)
            if orders.pop("revoke_tokens", False):
                sim.revoke_tokens()
            sim.set_faults(**orders)
            out: dict[str, Any] = {"faults": sim.faults()}
            if isinstance(publish, dict):
                late = float(publish.pop("late_by_seconds", 0) or 0)
                out["published"] = sim.publish_decision(**publish, late_by=timedelta(seconds=late))
            self._send(200, out, media="application/json")
        elif path == "/_control":
            self._send(200, {"faults": sim.faults()}, media="application/json")
        elif path == "/_received":
            self._send(200, sim.received(), media="application/json")
        else:
            raise HttpFailure(404, _outcome("not-found", "unknown control path"))


def _task_inputs(resource: Mapping[str, Any]) -> dict[str, Any]:
    """Task.input by InputTaskSDOCodeSystem code -> its value (first value[x])."""
    out: dict[str, Any] = {}
    for item in resource.get("input") or []:
        if not isinstance(item, Mapping):
            continue
        codes = [
            c.get("code")
            for c in ((item.get("type") or {}).get("coding") or [])
            if isinstance(c, Mapping) and c.get("system") == sdo_profiles.INPUT_TASK_CS
        ]
        value = next((v for k, v in item.items() if k.startswith("value")), None)
        for code in codes:
            if isinstance(code, str):
                out[code] = value
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: SdoSimulator, quiet: bool, auth: str) -> None:
        self.simulator = simulator
        self.state = simulator.state
        self.quiet = quiet
        self.auth = auth
        self.base_url = ""
        super().__init__(address, _Handler)

    def decisions_of(self, finess: str) -> set[str]:
        return self.simulator.decisions_of(finess)

    def capability(self) -> dict[str, Any]:
        interactions = [{"code": c} for c in ("read", "search-type", "create", "update")]
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-11-30",
            "kind": "instance",
            "software": {"name": "dui-gateway SI-SdO sandbox"},
            "fhirVersion": "4.0.1",
            "format": ["application/fhir+json"],
            "implementationGuide": ["https://interop.esante.gouv.fr/ig/fhir/sdo"],
            "rest": [
                {
                    "mode": "server",
                    "interaction": [{"code": "transaction"}, {"code": "batch"}],
                    "resource": [
                        {
                            "type": t,
                            "interaction": interactions,
                            "conditionalCreate": True,
                            "updateCreate": t not in _SDO_TYPES,
                        }
                        for t in ("DocumentReference", "Consent", "Task", "Bundle", "Patient", "Organization", "List")
                    ],
                }
            ],
        }


class SdoSimulator:
    """A running SI-SdO simulator; ``start()`` serves in a background thread.

    ``clock`` stamps ``meta.lastUpdated`` (tests move it); tokens expire on the real clock.
    With ``tls=True`` (the default) it serves HTTPS with a certificate of its own CA
    (:attr:`ca_file` for clients' ``verify``) and asks for client certificates (optional,
    ``auth`` decides whether they suffice).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auth: str = "either",
        tls: bool = True,
        clock: Callable[[], datetime] | None = None,
        quiet: bool = True,
        state_dir: Path | None = None,
    ) -> None:
        if auth not in ("oauth", "mtls", "either"):
            raise ValueError("auth is oauth, mtls or either")
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the simulator listens on loopback only")
        self.state = _State(clock or (lambda: datetime.now(UTC)))
        self.pki = SandboxPki()
        self._tmp: TemporaryDirectory[str] | None = None
        directory = state_dir
        if directory is None:
            self._tmp = TemporaryDirectory(prefix="dui-sdo-sandbox-")
            directory = Path(self._tmp.name)
        self.directory = directory
        server_pair = self.pki.server(host)
        self.files = self.pki.write(directory, {"server": server_pair})
        self._server = _Server((host, port), self, quiet, auth)
        self.host = host
        self.port: int = self._server.server_address[1]
        self.tls = tls
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self.files["server"], self.files["server-key"])
            context.load_verify_locations(cadata=self.pki.ca_pem.decode("ascii"))
            context.verify_mode = ssl.CERT_OPTIONAL
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.base_url = f"{self.url}/fhir"
        self._thread: threading.Thread | None = None
        self._decisions: dict[str, dict[str, Any]] = {}  # idNat_Decision -> facts

    # -- addresses --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.url}/oauth/token"

    @property
    def ca_file(self) -> Path:
        return self.files["ca"]

    # -- enrolment ------------------------------------------------------------------------------
    def enroll(self, finess: str, *, client_id: str | None = None, secret: str | None = None) -> _Client:
        """Enrol an ESSMS: an OAuth client (id, secret) and its certificate's FINESS."""
        if not (len(finess) == 9 and finess.isdigit()):
            raise ValueError("FINESS is 9 digits")
        client = _Client(client_id or f"essms-{finess}", secret or secrets.token_urlsafe(18), finess)
        with self.state.lock:
            self.state.clients[client.client_id] = client
            self.state.cert_finess.add(finess)
        return client

    def client_certificate(self, finess: str) -> CertPair:
        """A client certificate for ``finess`` issued by the simulator's CA (enrol it too)."""
        return self.pki.client(finess)

    # -- decisions ------------------------------------------------------------------------------
    def publish_decision(
        self,
        *,
        finess: str,
        id_decision: str,
        id_nat_decision: str | None = None,
        status: str = "active",
        person: Mapping[str, str] | None = None,
        category: str = "183",
        late_by: timedelta = timedelta(0),
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Create or update the decision notified to ``finess``; returns its id, version and lastUpdated.

        ``status``: ``active`` or ``cancelled`` (a cancellation is a new version of the same
        DocumentReference, ``status: entered-in-error``; ``active`` again is a reactivation).
        ``late_by`` stamps it in the past: it shows up now with an old ``lastUpdated``.
        """
        if status not in ("active", "cancelled"):
            raise ValueError("status is active or cancelled")
        national = id_nat_decision or f"VT-{uuid.uuid5(uuid.NAMESPACE_URL, finess + id_decision).hex[:12]}"
        decision = {"id_decision": id_decision, "status": status, "person": dict(person or {}), "category": category}
        cda = _cda(decision)
        resource = {
            "resourceType": "DocumentReference",
            "meta": {"profile": [sdo_profiles.ESMS_DOCUMENT_REFERENCE.url]},
            "identifier": [{"use": "usual", "value": id_decision}, {"use": "official", "value": national}],
            "status": "current" if status == "active" else "entered-in-error",
            "type": {"coding": [{"system": _LOINC, "code": DECISION_TYPE, "display": "Admission request Document"}]},
            "content": [
                {
                    "attachment": {
                        "contentType": "application/xml",
                        "language": "fr",
                        "title": "Document Individu et décision",
                        "data": base64.b64encode(cda).decode("ascii"),
                    }
                }
            ],
        }
        rid = f"dec-{uuid.uuid5(uuid.NAMESPACE_URL, national).hex[:16]}"
        moment = (at or self.state.clock()) - late_by
        stored = self.state.put("DocumentReference", rid, resource, owner=finess, decision=national, at=moment)
        with self.state.lock:
            self._decisions[national] = {"finess": finess, "id_decision": id_decision}
        return {
            "id": rid,
            "idDecision": id_decision,
            "idNat_Decision": national,
            "version": stored.current.version,
            "lastUpdated": _instant(stored.current.last_updated),
        }

    def decisions_of(self, finess: str) -> set[str]:
        with self.state.lock:
            return {k for k, v in self._decisions.items() if v["finess"] == finess}

    # -- faults and inspection -----------------------------------------------------------------------
    def set_faults(self, **changes: Any) -> None:
        with self.state.lock:
            for key, value in changes.items():
                if not hasattr(self.state.faults, key):
                    raise ValueError(f"unknown fault {key!r}")
                current = getattr(self.state.faults, key)
                setattr(self.state.faults, key, type(current)(value))

    def faults(self) -> dict[str, Any]:
        with self.state.lock:
            return self.state.faults.as_dict()

    def revoke_tokens(self) -> None:
        with self.state.lock:
            self.state.tokens.clear()

    @property
    def token_requests(self) -> int:
        with self.state.lock:
            return self.state.token_requests

    def requests(self) -> list[tuple[str, str, int]]:
        with self.state.lock:
            return list(self.state.requests)

    def received(self, rtype: str | None = None) -> list[dict[str, Any]]:
        """What ESSMS posted (current versions): type, id, owner, version, resource."""
        with self.state.lock:
            return [
                {
                    "type": s.rtype,
                    "id": s.id,
                    "owner": s.owner,
                    "version": s.current.version,
                    "resource": s.current.resource,
                }
                for s in self.state.store.values()
                if s.rtype != "DocumentReference" and (rtype is None or s.rtype == rtype)
            ]

    def resource(self, rtype: str, rid: str) -> dict[str, Any] | None:
        with self.state.lock:
            stored = self.state.store.get((rtype, rid))
            return stored.current.resource if stored else None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> SdoSimulator:
        self._thread = threading.Thread(target=self._server.serve_forever, name="sdo-sandbox", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SdoSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
