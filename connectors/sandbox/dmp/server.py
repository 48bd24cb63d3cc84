"""The DMP simulator: an HTTPS server on loopback that answers like the DMP web services.

It requires a client certificate issued by the CA it is given (mutual TLS, "authentification
indirecte"), reads SOAP 1.2 + MTOM/XOP with the hardened parser, verifies the VIHF (signature,
validity window, attributes) and the XAdES signature of the submission set, checks every metadata
rule of :mod:`connectors.sandbox.dmp.rules`, stores documents in SQLite, applies RPLC and answers
ITI-18 stored queries. It is a test peer, not a mock: clients talk to it over real sockets.

HTTPS surface (all behind mutual TLS)::

    POST /dmp/xds/iti41     ITI-41 Provide and Register Document Set-b (TD2.1 / TD2.2)
    POST /dmp/xds/iti18     ITI-18 Registry Stored Query (GetDocuments, FindDocuments)
    POST /dmp/fhir          ITI-65 Provide Document Bundle (PDSm / MHD, draft for the DMP)
    GET  /_health           200 {"ok": true}
    GET  /_entries          stored document entries (JSON, no content)
    POST /_control          {"patient": "<CX>", "status": "closed"}, {"fail_next": 1, "fail_status": 503},
                            {"reject_next": 1}, {"delay_after_store": 2.0}, {"drop_next": 1},
                            {"refuse_type": "74207-2"}
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from lxml import etree
from signxml.exceptions import InvalidInput, InvalidSignature
from signxml.verifier import SignatureConfiguration, XMLVerifier
from signxml.xades.xades import XAdESSignatureConfiguration, XAdESVerifier

from connectors.dmp._xml import NS, UnsafeXml, parse_xml, q
from connectors.dmp.soap import MtomError, mtom, split_mtom
from connectors.sandbox.dmp import rules
from connectors.sandbox.dmp.store import DmpStore, StoredEntry

__all__ = ["VIHF_RULES", "DmpSimulator", "SimulatorFaults"]

MAX_BODY = 20 * 1024 * 1024
SKEW = timedelta(seconds=60)
ACTION_PNR = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
DSG_FORMAT = "urn:ihe:iti:dsg:detached:2014"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
# Simulator codes where the DMPi guide's own codes were not retrieved (see docs/dmp.md).
DMP_CLOSED = "DMP_FERME"
DMP_TYPE_REFUSED = "DMP_TYPE_DOCUMENT_REFUSE"

# VIHF attributes (spec §4): name -> (required, pattern of the value, what the spec says).
VIHF_RULES: Mapping[str, tuple[bool, str, str]] = {
    "VIHF_Version": (True, r"3\.0|4\.0", "3.0 or 4.0"),
    "Authentification_Mode": (True, r"INDIRECTE", "INDIRECTE for a structure certificate"),
    "Identifiant_Structure": (True, r"[0-4]\S+", "Struct_IdNat (1 + FINESS...)"),
    "Secteur_Activite": (True, r"SA\d{2}\^1\.2\.250\.1\.71\.4\.2\.4", "JDV_J61 code^1.2.250.1.71.4.2.4"),
    "urn:oasis:names:tc:xspa:1.0:subject:subject-id": (True, r".*\S.*", "user name or software name"),
    "urn:oasis:names:tc:xacml:2.0:subject:role": (True, r"CE:.+\|.+", "HL7 CE role (code, codeSystem)"),
    "urn:oasis:names:tc:xacml:2.0:resource:resource-id": (
        True,
        r"[0-9A-Z]{13,15}\^\^\^&1\.2\.250\.1\.213\.1\.4\.(8|9|10|11)&ISO\^NH",
        "patient INS (CX)",
    ),
    "Ressource_URN": (True, r"urn:dmp", "urn:dmp"),
    "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse": (True, r"CE:normal\|1\.2\.250\.1\.213\.1\.1\.4\.248", "normal"),
    "LPS_Nom": (True, r".*\S.*", "software name"),
    "LPS_Version": (True, r".*\S.*", "software version"),
    "LPS_ID_HOMOLOGATION_DMP": (True, r".*\S.*", "DMP homologation number"),
}


class _Refusal(Exception):
    """An answer other than success: a SOAP fault or a RegistryResponse Failure."""

    def __init__(
        self,
        code: str,
        context: str,
        *,
        fault: bool = False,
        subcode: str = "",
        location: str = "",
        more: tuple[tuple[str, str, str], ...] = (),
    ) -> None:
        super().__init__(f"{code}: {context}")
        self.code, self.context, self.fault, self.subcode, self.location = code, context, fault, subcode, location
        self.more = more  # further RegistryErrors (code, context, location) of the same answer

    @property
    def errors(self) -> tuple[tuple[str, str, str], ...]:
        return ((self.code, self.context, self.location), *self.more)


@dataclass
class SimulatorFaults:
    """Fault injection (guarded by the simulator's lock)."""

    fail_next: int = 0
    fail_status: int = 503  # 503: HTTP error; 500: SOAP Receiver fault (XDSRegistryBusy)
    reject_next: int = 0
    delay_after_store: float = 0.0
    drop_next: int = 0  # store, then close the connection without answering (lost response)
    refused_types: set[str] = field(default_factory=set)


def _utc(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sim: DmpSimulator
    ssl_context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(30)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.sim.tls_failures.append(getattr(exc, "reason", None) or type(exc).__name__)
            request.close()
            return
        self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.sim.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def do_GET(self) -> None:
        sim = self.server.sim
        if self.path == "/_health":
            self._json(200, {"ok": True})
        elif self.path == "/_entries":
            self._json(200, [e.as_dict() for e in sim.store.entries()])
        elif self.path == "/_answers":
            self._json(200, sim.store.answers())
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        sim = self.server.sim
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._send(413, b"request body too large", "text/plain")
            return
        body = self.rfile.read(length)
        if self.path == "/_control":
            self._json(200, sim.control(json.loads(body or b"{}")))
            return
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        ctype = self.headers.get("Content-Type", "")
        if self.path in ("/dmp/xds/iti41", "/dmp/xds/iti18"):
            status, out, out_type, drop = sim.handle_soap(body, ctype, peer, query=self.path.endswith("iti18"))
        elif self.path == "/dmp/fhir":
            status, out, out_type, drop = sim.handle_fhir(body, ctype, peer)
        else:
            self._json(404, {"error": "not found"})
            return
        if drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(status, out, out_type)


def _cert_structure(peer: Mapping[str, Any] | None) -> str | None:
    """The structure id (OU, as in IGC-Santé organisation certificates) of the TLS client."""
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "organizationalUnitName":
                return str(value)
    return None


class DmpSimulator:
    """The DMP simulator; ``start()`` serves in a thread, ``serve_forever()`` in the caller's."""

    def __init__(
        self,
        *,
        ca: Path,
        cert: Path,
        key: Path,
        db_path: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        accept_test_ins: bool = True,
        auto_open: bool = True,
        quiet: bool = True,
    ) -> None:
        self.ca_path = Path(ca)
        self.store = DmpStore(db_path)
        self.accept_test_ins = accept_test_ins
        self.auto_open = auto_open
        self.quiet = quiet
        self.faults = SimulatorFaults()
        self.tls_failures: list[str] = []
        self._lock = threading.Lock()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cert), str(key))
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
        self._server = _Server((host, port), _Handler)
        self._server.sim = self
        self._server.ssl_context = ctx
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def iti41_url(self) -> str:
        return f"{self.url}/dmp/xds/iti41"

    @property
    def iti18_url(self) -> str:
        return f"{self.url}/dmp/xds/iti18"

    @property
    def fhir_url(self) -> str:
        return f"{self.url}/dmp/fhir"

    def start(self) -> DmpSimulator:
        self._thread = threading.Thread(target=self._server.serve_forever, name="dmp-simulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.store.close()

    def control(self, order: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            f = self.faults
            if "patient" in order:
                self.store.set_patient(str(order["patient"]), str(order.get("status", "active")))
            f.fail_next = int(order.get("fail_next", f.fail_next))
            f.fail_status = int(order.get("fail_status", f.fail_status))
            f.reject_next = int(order.get("reject_next", f.reject_next))
            f.delay_after_store = float(order.get("delay_after_store", f.delay_after_store))
            f.drop_next = int(order.get("drop_next", f.drop_next))
            if "refuse_type" in order:
                f.refused_types.add(str(order["refuse_type"]))
            if order.get("reset"):
                self.faults = SimulatorFaults()
            return {"ok": True}

    def _take(self, name: str) -> bool:
        with self._lock:
            left = int(getattr(self.faults, name))
            if left > 0:
                setattr(self.faults, name, left - 1)
                return True
            return False

    # -- SOAP ------------------------------------------------------------------------------------
    def handle_soap(
        self, body: bytes, content_type: str, peer: Mapping[str, Any] | None, *, query: bool
    ) -> tuple[int, bytes, str, bool]:
        """(HTTP status, body, content type, drop the connection) for one SOAP request."""
        action = ACTION_QUERY if query else ACTION_PNR
        if self._take("fail_next"):
            self.store.log(action, "http", [str(self.faults.fail_status)])
            if self.faults.fail_status == 500:
                return self._fault("Receiver", "XDSRegistryBusy", "Service DMP momentanément indisponible")
            return self.faults.fail_status, b"service unavailable", "text/plain", False
        try:
            root, parts = split_mtom(body, content_type)
            env = parse_xml(root)
            if env.tag != q("soap", "Envelope"):
                raise _Refusal("MalformedRequest", "not a SOAP 1.2 envelope", fault=True, subcode="soap:Sender")
            header_action = env.findtext("soap:Header/wsa:Action", default="", namespaces=NS).strip()
            if header_action != action:
                raise _Refusal("ActionNotSupported", f"wsa:Action {header_action!r} (expected {action})", fault=True)
            for what in ("MessageID", "To"):
                if not env.findtext(f"soap:Header/wsa:{what}", default="", namespaces=NS).strip():
                    raise _Refusal("MessageAddressingHeaderRequired", f"wsa:{what} is missing", fault=True)
            vihf = self._verify_vihf(env, peer)
            payload = env.find("soap:Body", NS)
            if payload is None or len(payload) == 0:
                raise _Refusal("MalformedRequest", "empty SOAP body", fault=True)
            if query:
                result = self._query(payload[0], vihf)
                self.store.log(action, "success", [])
                return 200, result, "application/soap+xml; charset=UTF-8", False
            stored = self._provide(payload[0], parts, vihf)
        except (UnsafeXml, MtomError) as exc:
            self.store.log(action, "fault", ["MalformedRequest"])
            return self._fault("Sender", "MalformedRequest", f"requête illisible: {exc}")
        except _Refusal as refusal:
            self.store.log(action, "fault" if refusal.fault else "failure", [e[0] for e in refusal.errors])
            if refusal.fault:
                return self._fault("Sender", refusal.subcode or refusal.code, f"{refusal.code}: {refusal.context}")
            return 200, *self._response(FAILURE, [refusal]), False
        self.store.log(action, "success", [])
        if self._take("drop_next"):
            return 0, b"", "", True
        delay = self.faults.delay_after_store
        if delay:
            time.sleep(delay)
        answer, ctype = self._response(SUCCESS, [], stored=stored)
        return 200, answer, ctype, False

    def _fault(self, code: str, subcode: str, reason: str) -> tuple[int, bytes, str, bool]:
        env = etree.Element(q("soap", "Envelope"), nsmap={"soap": NS["soap"], "wsse": NS["wsse"]})
        body = etree.SubElement(env, q("soap", "Body"))
        fault = etree.SubElement(body, q("soap", "Fault"))
        c = etree.SubElement(fault, q("soap", "Code"))
        etree.SubElement(c, q("soap", "Value")).text = f"soap:{code}"
        sub = etree.SubElement(c, q("soap", "Subcode"))
        etree.SubElement(sub, q("soap", "Value")).text = subcode
        reason_el = etree.SubElement(fault, q("soap", "Reason"))
        etree.SubElement(
            reason_el, q("soap", "Text"), {"{http://www.w3.org/XML/1998/namespace}lang": "fr"}
        ).text = reason
        status = 500  # SOAP 1.2 HTTP binding: faults travel with 500 (Sender faults with 400 too)
        if code == "Sender":
            status = 400
        return (
            status,
            etree.tostring(env, xml_declaration=True, encoding="UTF-8"),
            "application/soap+xml; charset=UTF-8",
            False,
        )

    def _response(
        self, status: str, refusals: list[_Refusal], *, stored: list[StoredEntry] | None = None
    ) -> tuple[bytes, str]:
        env = etree.Element(q("soap", "Envelope"), nsmap={"soap": NS["soap"], "wsa": NS["wsa"], "rs": NS["rs"]})
        header = etree.SubElement(env, q("soap", "Header"))
        etree.SubElement(header, q("wsa", "Action")).text = ACTION_PNR + "Response"
        body = etree.SubElement(env, q("soap", "Body"))
        resp = etree.SubElement(body, q("rs", "RegistryResponse"), status=status)
        if refusals:
            errors = etree.SubElement(resp, q("rs", "RegistryErrorList"))
            for r in refusals:
                for code, context, location in r.errors:
                    etree.SubElement(
                        errors,
                        q("rs", "RegistryError"),
                        errorCode=code,
                        codeContext=context,
                        severity=ERROR,
                        location=location,
                    )
        # answered in MTOM, as a DMP does for ITI-41
        return mtom(env, [], action=ACTION_PNR + "Response")

    # -- VIHF --------------------------------------------------------------------------------
    def _verify_vihf(self, env: Any, peer: Mapping[str, Any] | None) -> dict[str, str]:
        assertion = env.find("soap:Header/wsse:Security/saml:Assertion", NS)
        if assertion is None:
            raise _Refusal(
                "InvalidSecurity", "VIHF absent du header WS-Security", fault=True, subcode="wsse:InvalidSecurity"
            )
        try:
            result: Any = XMLVerifier().verify(
                etree.tostring(assertion),
                ca_pem_file=str(self.ca_path),
                id_attribute="ID",
                expect_config=SignatureConfiguration(location="./"),
            )
        except (InvalidSignature, InvalidInput, ValueError) as exc:
            raise _Refusal(
                "FailedCheck", f"signature du VIHF invalide: {exc}", fault=True, subcode="wsse:FailedCheck"
            ) from exc
        signed = result.signed_xml
        if signed is None or signed.tag != q("saml", "Assertion") or signed.get("ID") != assertion.get("ID"):
            raise _Refusal(
                "FailedCheck", "the signature does not cover the VIHF assertion", fault=True, subcode="wsse:FailedCheck"
            )
        cert_b64 = assertion.findtext(
            "ds:Signature/ds:KeyInfo/ds:X509Data/ds:X509Certificate", default="", namespaces=NS
        )
        signer = x509.load_der_x509_certificate(base64.b64decode("".join(cert_b64.split())))
        if signed.findtext("saml:Issuer", default="", namespaces=NS).strip() != signer.subject.rfc4514_string():
            raise _Refusal(
                "FailedCheck",
                "VIHF Issuer is not the signing certificate's subject",
                fault=True,
                subcode="wsse:FailedCheck",
            )
        now = datetime.now(UTC)
        conditions = signed.find("saml:Conditions", NS)
        try:
            not_before = _utc(conditions.get("NotBefore")) if conditions is not None else None
            not_after = _utc(conditions.get("NotOnOrAfter")) if conditions is not None else None
            issued = _utc(signed.get("IssueInstant", ""))
        except (TypeError, ValueError) as exc:
            raise _Refusal(
                "InvalidSecurity", "VIHF dates are malformed", fault=True, subcode="wsse:InvalidSecurity"
            ) from exc
        if not_before is None or not_after is None:
            raise _Refusal(
                "InvalidSecurity",
                "VIHF without Conditions NotBefore/NotOnOrAfter",
                fault=True,
                subcode="wsse:InvalidSecurity",
            )
        if now + SKEW < not_before or now - SKEW >= not_after or issued > now + SKEW:
            raise _Refusal(
                "MessageExpired", "VIHF hors de sa période de validité", fault=True, subcode="wsse:MessageExpired"
            )
        attrs: dict[str, str] = {}
        for attr in signed.findall("saml:AttributeStatement/saml:Attribute", NS):
            value = attr.find("saml:AttributeValue", NS)
            if value is None:
                continue
            if len(value):
                ce = value[0]
                attrs[attr.get("Name", "")] = f"CE:{ce.get('code', '')}|{ce.get('codeSystem', '')}"
            else:
                attrs[attr.get("Name", "")] = (value.text or "").strip()
        for name, (required, pattern, expected) in VIHF_RULES.items():
            value = attrs.get(name)
            if value is None:
                if required:
                    raise _Refusal(
                        "InvalidSecurity",
                        f"VIHF attribute {name} is missing",
                        fault=True,
                        subcode="wsse:InvalidSecurity",
                    )
                continue
            if not re.fullmatch(pattern, value):
                raise _Refusal(
                    "InvalidSecurity",
                    f"VIHF attribute {name} {value!r}: expected {expected}",
                    fault=True,
                    subcode="wsse:InvalidSecurity",
                )
        name_id = signed.findtext("saml:Subject/saml:NameID", default="", namespaces=NS).strip()
        if not name_id:
            raise _Refusal(
                "InvalidSecurity", "VIHF Subject/NameID is missing", fault=True, subcode="wsse:InvalidSecurity"
            )
        structure = _cert_structure(peer)
        if structure is not None and attrs["Identifiant_Structure"] != structure:
            raise _Refusal(
                "FailedAuthentication",
                f"Identifiant_Structure {attrs['Identifiant_Structure']} is not the TLS certificate's structure",
                fault=True,
                subcode="wsse:FailedAuthentication",
            )
        return attrs

    # -- ITI-41 ------------------------------------------------------------------------------
    def _documents(self, request: Any, parts: Mapping[str, bytes]) -> dict[str, bytes]:
        docs: dict[str, bytes] = {}
        for doc in request.findall("xdsb:Document", NS):
            include = doc.find("xop:Include", NS)
            if include is not None:
                cid = include.get("href", "").removeprefix("cid:")
                if cid not in parts:
                    raise _Refusal("XDSMissingDocument", f"attachment {cid} absent", location=doc.get("id", ""))
                docs[doc.get("id", "")] = parts[cid]
            else:
                try:
                    docs[doc.get("id", "")] = base64.b64decode(doc.text or "", validate=True)
                except ValueError as exc:
                    raise _Refusal("XDSMissingDocument", "document not in base64", location=doc.get("id", "")) from exc
        return docs

    def _provide(self, request: Any, parts: Mapping[str, bytes], vihf: Mapping[str, str]) -> list[StoredEntry]:
        if request.tag != q("xdsb", "ProvideAndRegisterDocumentSetRequest"):
            raise _Refusal("XDSRegistryMetadataError", "body is not a ProvideAndRegisterDocumentSetRequest")
        objects = request.find("lcm:SubmitObjectsRequest/rim:RegistryObjectList", NS)
        if objects is None:
            raise _Refusal("XDSRegistryMetadataError", "SubmitObjectsRequest/RegistryObjectList is missing")
        docs = self._documents(request, parts)
        entries = objects.findall("rim:ExtrinsicObject", NS)
        packages = objects.findall("rim:RegistryPackage", NS)
        ss_ids = {
            c.get("classifiedObject")
            for c in objects.findall("rim:Classification", NS)
            if c.get("classificationNode") == rules.SS_NODE
        }
        submission_sets = [p for p in packages if p.get("id") in ss_ids]
        if len(submission_sets) != 1:
            raise _Refusal("XDSRegistryMetadataError", "exactly one SubmissionSet (classified a54d6aa5...) is required")
        ss = submission_sets[0]
        if not entries:
            raise _Refusal("XDSRegistryMetadataError", "no DocumentEntry in the submission")
        # every metadata rule of the spec's tables
        problems = rules.check_submission_set(ss)
        facts: dict[str, Mapping[str, Any] | None] = {}
        for eo in entries:
            content = docs.get(eo.get("id", ""))
            if content is None:
                raise _Refusal(
                    "XDSMissingDocument", "no xdsb:Document for this DocumentEntry", location=eo.get("id", "")
                )
            cda = None
            try:
                parsed = parse_xml(content, max_depth=256)
                if parsed.tag == q("hl7", "ClinicalDocument"):
                    cda = parsed
            except UnsafeXml as exc:
                raise _Refusal(
                    "XDSRegistryMetadataError", f"document unreadable: {exc}", location=eo.get("id", "")
                ) from exc
            facts[eo.get("id", "")] = (
                rules.cda_facts(cda, content, accept_test_ins=self.accept_test_ins)
                if cda is not None
                else {"hash": hashlib.sha1(content, usedforsecurity=False).hexdigest(), "size": str(len(content))}
            )
            problems += [
                (rule, f"{message} [{eo.get('id')}]")
                for rule, message in rules.check_entry(eo, facts[eo.get("id", "")], is_cda=cda is not None)
            ]
            if cda is not None:
                conf = cda.find("{urn:hl7-org:v3}confidentialityCode")
                if conf is not None and conf.get("code") in rules.VISIBILITY_CODES:
                    problems.append(
                        ("DE.confidentialityCode", "masking/visibility codes must never be written in the CDA")
                    )
        if problems:  # one RegistryError per broken rule
            rule_id, message = problems[0]
            raise _Refusal(
                "XDSRegistryMetadataError",
                f"{rule_id}: {message}",
                location=rule_id,
                more=tuple(("XDSRegistryMetadataError", f"{r}: {m}", r) for r, m in problems[1:]),
            )
        patient = rules.read_object(ss, ("ext", rules.SS_PATIENT))[0]
        assert isinstance(patient, str)
        for eo in entries:
            if rules.read_object(eo, ("ext", rules.DE_PATIENT)) != [patient]:
                raise _Refusal(
                    "XDSPatientIdDoesNotMatch",
                    "DocumentEntry and SubmissionSet patientId differ",
                    location=eo.get("id", ""),
                )
        oid = patient.split("&")[1] if "&" in patient else ""
        if oid in rules.INS_TEST_OIDS and not self.accept_test_ins:
            raise _Refusal("XDSUnknownPatientId", "test INS refused by this DMP instance")
        if vihf.get("urn:oasis:names:tc:xacml:2.0:resource:resource-id") != patient:
            raise _Refusal("XDSPatientIdDoesNotMatch", "the VIHF resource-id is not the submission's patient")
        # associations: each DocumentEntry is a HasMember of the submission set (Original)
        assocs = objects.findall("rim:Association", NS)
        members = {
            a.get("targetObject")
            for a in assocs
            if a.get("associationType") == HAS_MEMBER
            and a.get("sourceObject") == ss.get("id")
            and rules.read_object(a, ("slot", "SubmissionSetStatus")) == ["Original"]
        }
        for eo in entries:
            if eo.get("id") not in members:
                raise _Refusal(
                    "XDSRegistryMetadataError",
                    "DocumentEntry without a HasMember association (Original)",
                    location=eo.get("id", ""),
                )
        # the submission set's XAdES signature (IHE DSG), sent as one more document
        signatures = [
            eo
            for eo in entries
            if rules.read_object(eo, ("class", rules.DE_FORMAT))[:1] == [(DSG_FORMAT, "1.3.6.1.4.1.19376.1.2.3")]
        ]
        if len(signatures) != 1:
            raise _Refusal(
                "XDSRegistryMetadataError", "the submission set must carry exactly one XAdES signature document"
            )
        signed_docs = {
            str(rules.read_object(eo, ("ext", rules.DE_UNIQUE))[0]): docs[eo.get("id", "")]
            for eo in entries
            if eo is not signatures[0]
        }
        if not signed_docs:
            raise _Refusal("XDSRegistryMetadataError", "a submission with only a signature document")
        self._verify_xades(docs[signatures[0].get("id", "")], signed_docs)
        # the DMP's business rules
        status = self.store.patient_status(patient)
        if status is None:
            status = "active" if self.auto_open else "unknown"
            if self.auto_open:
                self.store.set_patient(patient, "active")
        if status == "unknown":
            raise _Refusal("XDSUnknownPatientId", "aucun DMP pour ce patient (INS inconnu)")
        if status == "closed":
            raise _Refusal(DMP_CLOSED, "le DMP de ce patient est fermé")
        for eo in entries:
            type_code = rules.read_object(eo, ("class", rules.DE_TYPE))[0]
            if isinstance(type_code, tuple) and type_code[0] in self.faults.refused_types:
                raise _Refusal(
                    DMP_TYPE_REFUSED, f"type de document {type_code[0]} refusé par le DMP", location=eo.get("id", "")
                )
        if self._take("reject_next"):
            raise _Refusal("XDSRegistryMetadataError", "refus injecté (simulateur)")
        for eo in entries:
            unique = str(rules.read_object(eo, ("ext", rules.DE_UNIQUE))[0])
            existing = self.store.entry_by_unique_id(unique)
            if existing is not None:
                digest = facts[eo.get("id", "")]
                if digest is not None and existing.hash == digest["hash"]:
                    raise _Refusal(
                        "XDSDuplicateUniqueIdInRegistry",
                        f"document {unique} déjà présent (entryUUID {existing.entry_uuid})",
                        location=existing.entry_uuid,
                    )
                raise _Refusal("XDSNonIdenticalHash", f"document {unique} déjà présent avec un autre contenu")
        replaced: dict[str, str] = {}
        for a in assocs:
            if a.get("associationType") != RPLC:
                continue
            source, target = a.get("sourceObject", ""), a.get("targetObject", "")
            if source not in {eo.get("id") for eo in entries}:
                raise _Refusal("XDSRegistryMetadataError", "RPLC source is not a DocumentEntry of this submission")
            old = self.store.entry(target)
            if old is None:
                raise _Refusal(
                    "UnresolvedReferenceException", f"RPLC vers une fiche inconnue du DMP ({target})", location=target
                )
            if old.status != APPROVED:
                raise _Refusal(
                    "XDSRegistryDeprecatedDocumentError",
                    f"RPLC vers une fiche déjà remplacée ({target})",
                    location=target,
                )
            if old.patient_id != patient:
                raise _Refusal("XDSPatientIdDoesNotMatch", "RPLC vers le document d'un autre patient", location=target)
            replaced[source] = target
        stored: list[StoredEntry] = []
        ss_unique = str(rules.read_object(ss, ("ext", rules.SS_UNIQUE))[0])
        with self.store.transaction() as db:
            for eo in entries:
                symbolic = eo.get("id", "")
                entry_uuid = (
                    symbolic if re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", symbolic) else f"urn:uuid:{uuid.uuid4()}"
                )
                if self.store.entry(entry_uuid) is not None:
                    entry_uuid = f"urn:uuid:{uuid.uuid4()}"
                type_code = rules.read_object(eo, ("class", rules.DE_TYPE))[0]
                format_code = rules.read_object(eo, ("class", rules.DE_FORMAT))[0]
                entry = StoredEntry(
                    entry_uuid=entry_uuid,
                    unique_id=str(rules.read_object(eo, ("ext", rules.DE_UNIQUE))[0]),
                    patient_id=patient,
                    status=APPROVED,
                    hash=str(rules.read_object(eo, ("slot", "hash"))[0]),
                    size=int(str(rules.read_object(eo, ("slot", "size"))[0])),
                    type_code=type_code[0] if isinstance(type_code, tuple) else "",
                    format_code=format_code[0] if isinstance(format_code, tuple) else "",
                    confidentiality=tuple(
                        c[0] for c in rules.read_object(eo, ("class", rules.DE_CONF)) if isinstance(c, tuple)
                    ),
                    submission_set=ss_unique,
                    replaces=replaced.get(symbolic),
                    route="xds",
                )
                self.store.insert_entry(db, entry, metadata=etree.tostring(eo).decode(), content=docs[symbolic])
                if entry.replaces:
                    db.execute("UPDATE entries SET status = ? WHERE entry_uuid = ?", (DEPRECATED, entry.replaces))
                stored.append(entry)
            source_id = str(rules.read_object(ss, ("ext", rules.SS_SOURCE))[0])
            self.store.record_submission_set(db, ss_unique, patient, source_id)
        return stored

    def _verify_xades(self, signature: bytes, signed_docs: Mapping[str, bytes]) -> None:
        try:
            parse_xml(signature)
            results: Any = XAdESVerifier().verify(
                signature,
                ca_pem_file=str(self.ca_path),
                expect_config=XAdESSignatureConfiguration(location="./", expect_references=3),
            )
        except (UnsafeXml, InvalidSignature, InvalidInput, ValueError) as exc:
            raise _Refusal(
                "FailedCheck", f"signature XAdES du lot invalide: {exc}", fault=True, subcode="wsse:FailedCheck"
            ) from exc
        manifest = None
        for result in results:
            node = result.signed_xml
            if node is not None and node.tag == q("ds", "Object"):
                manifest = node.find("ds:Manifest", NS)
        if manifest is None:
            raise _Refusal(
                "FailedCheck", "the XAdES signature does not sign a ds:Manifest", fault=True, subcode="wsse:FailedCheck"
            )
        refs = {
            ref.get("URI", ""): (ref.findtext("ds:DigestValue", default="", namespaces=NS) or "").strip()
            for ref in manifest.findall("ds:Reference", NS)
        }
        expected = {
            f"urn:oid:{unique}": base64.b64encode(hashlib.sha256(content).digest()).decode()
            for unique, content in signed_docs.items()
        }
        if refs != expected:
            raise _Refusal(
                "FailedCheck",
                "the XAdES manifest does not match the submitted documents",
                fault=True,
                subcode="wsse:FailedCheck",
            )

    # -- ITI-18 ------------------------------------------------------------------------------
    def _query(self, request: Any, vihf: Mapping[str, str]) -> bytes:
        adhoc = request.find("rim:AdhocQuery", NS)
        if request.tag != q("query", "AdhocQueryRequest") or adhoc is None:
            raise _Refusal("XDSRegistryError", "not an AdhocQueryRequest")
        slots = {
            s.get("name", ""): [v.text or "" for v in s.findall("rim:ValueList/rim:Value", NS)]
            for s in adhoc.findall("rim:Slot", NS)
        }
        patient = vihf.get("urn:oasis:names:tc:xacml:2.0:resource:resource-id", "")

        def values(name: str) -> list[str]:
            out: list[str] = []
            for raw in slots.get(name, []):
                out += [v.strip().strip("'") for v in raw.strip().strip("()").split(",") if v.strip()]
            return out

        if adhoc.get("id") == GET_DOCUMENTS:
            found = [e for u in values("$XDSDocumentEntryUniqueId") if (e := self.store.entry_by_unique_id(u))]
            found += [e for u in values("$XDSDocumentEntryEntryUUID") if (e := self.store.entry(u))]
        elif adhoc.get("id") == FIND_DOCUMENTS:
            wanted = values("$XDSDocumentEntryPatientId")
            if wanted != [patient]:
                raise _Refusal("XDSPatientIdDoesNotMatch", "FindDocuments patient is not the VIHF's")
            statuses = values("$XDSDocumentEntryStatus") or [APPROVED]
            found = [e for e in self.store.entries(patient) if e.status in statuses]
        else:
            raise _Refusal("XDSUnknownStoredQuery", f"stored query {adhoc.get('id')} not supported")
        found = [e for e in found if e.patient_id == patient]  # the VIHF scopes what may be read
        env = etree.Element(
            q("soap", "Envelope"), nsmap={"soap": NS["soap"], "wsa": NS["wsa"], "query": NS["query"], "rim": NS["rim"]}
        )
        header = etree.SubElement(env, q("soap", "Header"))
        etree.SubElement(header, q("wsa", "Action")).text = ACTION_QUERY + "Response"
        body = etree.SubElement(env, q("soap", "Body"))
        resp = etree.SubElement(body, q("query", "AdhocQueryResponse"), status=SUCCESS)
        lst = etree.SubElement(resp, q("rim", "RegistryObjectList"))
        for e in found:
            eo = etree.SubElement(
                lst, q("rim", "ExtrinsicObject"), id=e.entry_uuid, status=e.status, objectType=rules.DE_OBJECT_TYPE
            )
            slot = etree.SubElement(eo, q("rim", "Slot"), name="hash")
            etree.SubElement(etree.SubElement(slot, q("rim", "ValueList")), q("rim", "Value")).text = e.hash
            etree.SubElement(
                eo,
                q("rim", "ExternalIdentifier"),
                identificationScheme=rules.DE_UNIQUE,
                value=e.unique_id,
                registryObject=e.entry_uuid,
            )
            etree.SubElement(
                eo,
                q("rim", "ExternalIdentifier"),
                identificationScheme=rules.DE_PATIENT,
                value=e.patient_id,
                registryObject=e.entry_uuid,
            )
        return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))

    # -- ITI-65 (PDSm / MHD) ---------------------------------------------------------------------
    def handle_fhir(
        self, body: bytes, content_type: str, peer: Mapping[str, Any] | None
    ) -> tuple[int, bytes, str, bool]:
        from connectors.sandbox.dmp.mhd import provide_bundle

        if self._take("fail_next"):
            return self.faults.fail_status, b"service unavailable", "text/plain", False
        status, answer = provide_bundle(self, body, content_type, peer)
        return status, json.dumps(answer).encode(), "application/fhir+json", False
