"""The ``dmp`` connector: feeds Mon espace santé through the DMP web services.

Route ``xds`` (production today): IHE XDS.b ITI-41 over SOAP 1.2 + MTOM, mutual TLS with the
ESSMS's organisation certificate, signed VIHF in WS-Security, XAdES signature of the submission
set; ITI-18 to find the entry a replacement points at. Route ``mhd`` (draft for the DMP): PDSm
ITI-65 transaction Bundle. See ``docs/dmp.md``.
"""

from __future__ import annotations

import re
import ssl
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import requests
from lxml import etree
from pydantic import BaseModel, ConfigDict, Field

from connectors._errors import http_status_error, map_errors
from connectors.base import Envelope, Health, PermanentError, Receipt, TransientError
from connectors.dmp._xml import NS, UnsafeXml, q
from connectors.dmp.metadata import (
    Coded,
    DocumentEntry,
    MetadataError,
    SubmissionSet,
    document_entry,
    oid_from_key,
    submit_objects_request,
    utc,
    visibility_codes,
)
from connectors.dmp.security import (
    DSG_FORMAT,
    CredentialError,
    OrgIdentity,
    TlsFiles,
    VihfProfile,
    load_identity,
    sign_submission_set,
    vihf_assertion,
)
from connectors.dmp.soap import (
    ACTION_PNR,
    ACTION_QUERY,
    Answer,
    MtomError,
    QueriedEntry,
    build_envelope,
    get_documents_query,
    mtom,
    read_answer,
)
from mappings.base import Rendition
from mappings.consent import ConsentFamily, read_refusals

__all__ = ["DmpConnector", "DmpRefused", "DmpSettings", "Submission"]

MAX_TIMEOUT = 120.0
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DUPLICATE = "XDSDuplicateUniqueIdInRegistry"
# Registry/repository errors a later attempt may clear (IHE ITI TF-3 Table 4.2.4.1-2).
TRANSIENT_CODES = frozenset(
    {
        "XDSRegistryBusy",
        "XDSRepositoryBusy",
        "XDSRegistryOutOfResources",
        "XDSRepositoryOutOfResources",
        "XDSRegistryNotAvailable",
        "XDSRegistryError",
        "XDSRepositoryError",
    }
)
# TLS alerts meaning "the peer refused our certificate" (OpenSSL reason names)
_CERT_REFUSED = (
    "UNKNOWN_CA",
    "CERTIFICATE_EXPIRED",
    "BAD_CERTIFICATE",
    "CERTIFICATE_REQUIRED",
    "CERTIFICATE_REVOKED",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
)
SIGNATURE_TYPE = Coded("E1762", "ASTM", "Document complet (signature)")
SIGNATURE_FORMAT = Coded(DSG_FORMAT, "1.3.6.1.4.1.19376.1.2.3", "Signature détachée IHE DSG")


class DmpSettings(BaseModel):
    """One DMP destination (the DMP's endpoints and the gateway's identity as an LPS)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    route: Literal["xds", "mhd"] = "xds"
    iti41_url: str = Field(pattern=r"^https://")  # Provide and Register Document Set-b
    iti18_url: str = Field(pattern=r"^https://")  # Registry Stored Query
    mhd_url: str | None = Field(default=None, pattern=r"^https://")  # PDSm ITI-65 base
    timeout: float = Field(default=30.0, gt=0, le=MAX_TIMEOUT)
    ca_bundle: Path | None = None  # CA certificates the DMP's server certificate chains to
    verify_tls: bool = True
    source_id: str = Field(default="1.2.250.1.999.1.1", pattern=r"^[0-2](\.(0|[1-9][0-9]*))+$")  # SS.sourceId
    home_community_id: str | None = Field(default=None, pattern=r"^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$")
    kinds: tuple[str, ...] = ("cda",)  # renditions sent (CDA DLU, CDA N1 PPA...)
    lps_name: str = "dui-gateway"
    lps_version: str = "0.1.0"
    lps_homologation: str = "NON-HOMOLOGUE"  # LPS_ID_HOMOLOGATION_DMP, given by the CNAM/ANS
    vihf_version: Literal["3.0", "4.0"] = "3.0"
    vihf_role_code: str | None = None  # defaults for the ESSMS's VIHF role when its credentials lack one
    vihf_role_system: str | None = None
    vihf_role_display: str = ""


class DmpRefused(PermanentError):
    """The DMP refused the submission: ``code`` and ``context`` are what it answered."""

    def __init__(self, message: str, *, code: str, context: str = "") -> None:
        super().__init__(message)
        self.code, self.context = code, context


@dataclass(frozen=True)
class _Described:
    identity: OrgIdentity
    profile: VihfProfile
    entries: tuple[DocumentEntry, ...]
    renditions: tuple[Rendition, ...]


@dataclass
class Submission:
    """An ITI-41 request ready to go: ``request`` (ProvideAndRegisterDocumentSetRequest),
    ``attachments`` (content id, media type, bytes), ``security`` (the signed VIHF)."""

    described: _Described
    request: Any
    attachments: list[tuple[str, str, bytes]]
    security: list[Any]
    detail: dict[str, Any]


def _entry_uuid(document_id: str) -> str:
    """Stable entryUUID for a document: a resend carries the same one."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, 'dmp-entry|' + document_id)}"


_INS_LIKE = re.compile(r"(?<![0-9A-Za-z])[0-9]{13}(?:[0-9]{2})?(?![0-9A-Za-z])")


def _redact(text: str) -> str:
    """The DMP's text without anything shaped like an INS/NIR (it may quote what it was sent)."""
    return _INS_LIKE.sub("[INS]", text)


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 32:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo.extend(e for e in nested if isinstance(e, BaseException))
    return None


def _ssl_reasons(exc: BaseException) -> Iterator[str]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            yield str(current.reason or current)
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException):
                yield from _ssl_reasons(arg)
            elif isinstance(arg, str) and ("alert" in arg or "CERTIFICATE" in arg.upper()):
                yield arg
        current = current.__cause__ or current.__context__


class DmpConnector:
    name: ClassVar[str] = "dmp"
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[BaseModel]] = DmpSettings
    credentials_purpose: ClassVar[str] = "dmp"

    def __init__(self, settings: DmpSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._tls = TlsFiles()

    @property
    def send_timeout(self) -> float:
        # at most: a lookup (ITI-18) and the submission (ITI-41), plus a duplicate check
        return 3 * self.settings.timeout

    @property
    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy/CA bundle from the environment: the settings decide
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._tls.close()

    @property
    def _verify(self) -> bool | str:
        # per request: requests lets REQUESTS_CA_BUNDLE override a session-level verify
        if self.settings.verify_tls and self.settings.ca_bundle is not None:
            return str(self.settings.ca_bundle)
        return self.settings.verify_tls

    # -- send ------------------------------------------------------------------------------------
    def _describe(self, envelope: Envelope) -> _Described:
        facts = envelope.facts
        if read_refusals(facts.sharing_refused_with).refuses(ConsentFamily.DMP):
            raise PermanentError("the person refused the DMP: nothing is sent (routing should not have chosen it)")
        if not facts.ins_qualified:
            raise PermanentError("no qualified INS: a document is sent to the DMP only for a qualified identity (RNIV)")
        try:
            identity = load_identity(envelope.credentials)
        except CredentialError as exc:
            raise PermanentError(str(exc)) from exc
        renditions = [r for r in envelope.renditions if r.kind in self._kinds(envelope)]
        if not renditions:
            raise PermanentError(f"no rendition of kind {'/'.join(self._kinds(envelope))} to send to the DMP")
        choices = self._sharing_choices(envelope, renditions)
        try:
            entries = [
                document_entry(
                    r.content,
                    r.metadata,
                    document_id=r.document_id,
                    entry_id=_entry_uuid(r.document_id),
                    document_ref=f"doc{i}",
                    visibility=visibility_codes(choices),
                )
                for i, r in enumerate(renditions, start=1)
                if r.metadata is not None
            ]
        except MetadataError as exc:
            raise PermanentError(f"the document cannot be described for the DMP: {exc}") from exc
        if len(entries) != len(renditions):
            raise PermanentError("a rendition for the DMP has no exchange metadata")
        profile = self._profile(envelope, identity, renditions[0])
        return _Described(identity, profile, tuple(entries), tuple(renditions))

    def send(self, envelope: Envelope) -> Receipt:
        """Describe, find what this version replaces in this DMP, submit (see the module doc)."""
        if self.settings.route == "mhd":
            from connectors.dmp.mhd import send_mhd

            described = self._describe(envelope)
            return send_mhd(self, envelope, described.identity, list(described.entries), list(described.renditions))
        return self.submit(envelope, self.prepare(envelope))

    def prepare(self, envelope: Envelope) -> Submission:
        """The ITI-41 request for ``envelope`` (RPLC targets resolved), not yet sent."""
        d = self._describe(envelope)
        patient = d.entries[0].patient_id
        replaces: dict[str, str] = {}
        for entry, rendition in zip(d.entries, d.renditions, strict=True):
            target = self._replacement_target(envelope, rendition, d.identity, d.profile, patient)
            if target is not None:
                replaces[entry.entry_id] = target
        return self._build(envelope, d, replaces)

    def _kinds(self, envelope: Envelope) -> tuple[str, ...]:
        kinds = envelope.options.get("kinds")
        if isinstance(kinds, list | tuple) and kinds:
            return tuple(str(k) for k in kinds)
        return self.settings.kinds

    @staticmethod
    def _sharing_choices(envelope: Envelope, renditions: list[Rendition]) -> set[str]:
        """The person's DMP visibility choices: ``facts.extra["sharing_choices"]`` and the
        rendition metadata's ``extra["sharing_choices"]`` (closed vocabulary, see metadata.VISIBILITY)."""
        out: set[str] = set()
        sources: list[Any] = [envelope.facts.extra.get("sharing_choices")]
        sources += [r.metadata.extra.get("sharing_choices") for r in renditions if r.metadata is not None]
        for value in sources:
            if isinstance(value, list | tuple | set | frozenset):
                out |= {str(v) for v in value}
        return out

    def _profile(self, envelope: Envelope, identity: OrgIdentity, rendition: Rendition) -> VihfProfile:
        creds = envelope.credentials
        attrs: Mapping[str, str] = creds.attributes if creds is not None else {}
        finess = creds.essms_finess if creds is not None else envelope.facts.essms_finess
        subject_id = attrs.get("vihf_subject_id")
        if not subject_id:
            raise PermanentError(
                "the ESSMS's DMP credentials lack the VIHF attribute vihf_subject_id "
                "(idNatPS of the responsible person)"
            )
        role_code = attrs.get("vihf_role_code") or self.settings.vihf_role_code
        role_system = attrs.get("vihf_role_system") or self.settings.vihf_role_system
        if not role_code or not role_system:
            raise PermanentError("no VIHF role (vihf_role_code/vihf_role_system) in the ESSMS credentials or settings")
        sector = attrs.get("secteur_activite")
        meta = rendition.metadata
        if not sector and meta is not None and meta.healthcare_facility_type_code.system == "1.2.250.1.71.4.2.4":
            sector = f"{meta.healthcare_facility_type_code.code}^1.2.250.1.71.4.2.4"
        if not sector:
            raise PermanentError("no VIHF Secteur_Activite (secteur_activite attribute or facility type code)")
        return VihfProfile(
            subject_id=subject_id,
            subject_name=attrs.get("vihf_subject_name") or self.settings.lps_name,
            structure_id=attrs.get("structure_id") or f"1{finess}",
            sector=sector,
            role_code=role_code,
            role_system=role_system,
            role_display=attrs.get("vihf_role_display") or self.settings.vihf_role_display,
            lps_name=self.settings.lps_name,
            lps_version=self.settings.lps_version,
            lps_homologation=self.settings.lps_homologation,
            vihf_version=self.settings.vihf_version,
        )

    # -- replacement -------------------------------------------------------------------------
    def _replacement_target(
        self, envelope: Envelope, rendition: Rendition, identity: OrgIdentity, profile: VihfProfile, patient: str
    ) -> str | None:
        """The entryUUID this version replaces in *this* DMP, or None for an original.

        Only an entry the DMP acknowledged (``envelope.held``) or that the DMP itself returns from
        an ITI-18 query is ever targeted: never a version it did not receive.
        """
        held = envelope.held.get(rendition.set_id)
        if held is not None:
            if held.document_id == rendition.document_id:
                return None  # a resend of the version it holds: recognised by its uniqueId
            if held.version > rendition.version:
                raise PermanentError(
                    f"the DMP already holds version {held.version} of this document; "
                    f"version {rendition.version} is older"
                )
            if held.remote_id:
                return held.remote_id
            found = self._lookup(envelope, identity, profile, patient, [held.document_id])
            if not found:
                raise PermanentError(
                    f"the DMP does not know version {held.version} it acknowledged (uniqueId {held.document_id}); "
                    "an operator must check the person's DMP before replacing it"
                )
            return found[0].entry_uuid
        if rendition.replaces:
            found = self._lookup(envelope, identity, profile, patient, [rendition.replaces])
            approved = [e for e in found if e.status == APPROVED]
            if approved:
                return approved[0].entry_uuid
        return None

    def _lookup(
        self, envelope: Envelope, identity: OrgIdentity, profile: VihfProfile, patient: str, unique_ids: list[str]
    ) -> tuple[QueriedEntry, ...]:
        """ITI-18 GetDocuments by uniqueId (TD3.1)."""
        assertion = vihf_assertion(identity, profile, patient_cx=patient)
        env = build_envelope(
            action=ACTION_QUERY,
            to=self.settings.iti18_url,
            body=get_documents_query(unique_ids, home=self.settings.home_community_id),
            security=[assertion],
        )
        body = etree.tostring(env, xml_declaration=True, encoding="UTF-8")
        answer = self._post(
            envelope,
            identity,
            self.settings.iti18_url,
            body,
            f'application/soap+xml; charset=UTF-8; action="{ACTION_QUERY}"',
            what="ITI-18 query",
        )
        if answer.is_fault or not answer.succeeded:
            self._raise_for(answer, what="ITI-18 query")
        return answer.entries

    # -- ITI-41 ------------------------------------------------------------------------------
    def _build(self, envelope: Envelope, d: _Described, replaces: Mapping[str, str]) -> Submission:
        identity, entries, renditions = d.identity, list(d.entries), list(d.renditions)
        now = datetime.now(UTC)
        patient = entries[0].patient_id
        ss_uid = oid_from_key("dmp-submission-set", envelope.idempotency_key)
        signature = sign_submission_set(
            identity,
            submission_set_uid=ss_uid,
            documents=[(e.unique_id, r.content) for e, r in zip(entries, renditions, strict=True)],
        )
        first = entries[0]
        sig_entry = DocumentEntry(
            **{
                **first.__dict__,
                "entry_id": f"urn:uuid:{uuid.uuid4()}",
                "document_ref": "signature",
                "unique_id": f"2.25.{uuid.uuid4().int}",
                "source_patient_info": (),
                "type_code": SIGNATURE_TYPE,
                "format_code": SIGNATURE_FORMAT,
                "confidentiality": first.confidentiality[:1],
                "creation_time": utc(now),
                "title": "Signature du lot de soumission",
                "hash": _sha1(signature),
                "size": len(signature),
                "legal_authenticator": None,
            }
        )
        ss = SubmissionSet(
            entry_id="urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_OID, "dmp-ss|" + envelope.idempotency_key)),
            unique_id=ss_uid,
            source_id=self.settings.source_id,
            patient_id=patient,
            submission_time=utc(now),
            content_type=Coded(
                first.facility_type_code.code, first.facility_type_code.scheme, first.facility_type_code.display
            ),
            author_person=first.author_person,
            author_institution=first.author_institution,
            members=(*entries, sig_entry),
            replaces=dict(replaces),
        )
        request = etree.Element(
            q("xdsb", "ProvideAndRegisterDocumentSetRequest"), nsmap={"xdsb": NS["xdsb"], "xop": NS["xop"]}
        )
        request.append(submit_objects_request(ss))
        attachments: list[tuple[str, str, bytes]] = []
        for entry, content in [
            *((e, r.content) for e, r in zip(entries, renditions, strict=True)),
            (sig_entry, signature),
        ]:
            cid = f"{entry.document_ref}.{uuid.uuid4().hex}@dui-gateway"
            doc = etree.SubElement(request, q("xdsb", "Document"), id=entry.entry_id)
            etree.SubElement(doc, q("xop", "Include"), href=f"cid:{cid}")
            attachments.append((cid, "text/xml", content))
        return Submission(
            described=d,
            request=request,
            attachments=attachments,
            security=[vihf_assertion(identity, d.profile, patient_cx=patient)],
            detail={
                "route": "xds",
                "uniqueId": first.unique_id,
                "submissionSetUniqueId": ss_uid,
                "replaced": sorted(replaces.values()),
            },
        )

    def submit(self, envelope: Envelope, submission: Submission) -> Receipt:
        """Send a prepared ITI-41 request and read the DMP's answer into a receipt or an error."""
        d = submission.described
        env = build_envelope(
            action=ACTION_PNR,
            to=self.settings.iti41_url,
            body=submission.request,
            security=submission.security,
            message_id=f"urn:uuid:{uuid.uuid4()}",
        )
        body, content_type = mtom(env, submission.attachments, action=ACTION_PNR)
        answer = self._post(envelope, d.identity, self.settings.iti41_url, body, content_type, what="ITI-41 submission")
        detail = dict(submission.detail)
        first = d.entries[0]
        if answer.succeeded:
            warnings = [f"{e.code}: {_redact(e.context)}" for e in answer.errors]
            return Receipt(
                remote_id=first.entry_id,
                detail={**detail, "entryUUID": first.entry_id, "status": "Success", "warnings": warnings},
            )
        if not answer.is_fault and answer.errors and all(e.code == DUPLICATE for e in answer.errors if e.is_error):
            return self._already_there(envelope, d.identity, d.profile, list(d.entries), detail)
        self._raise_for(answer, what="ITI-41 submission")
        raise AssertionError("unreachable")

    def _already_there(
        self,
        envelope: Envelope,
        identity: OrgIdentity,
        profile: VihfProfile,
        entries: list[DocumentEntry],
        detail: dict[str, Any],
    ) -> Receipt:
        """ "Document already exists": delivered when the DMP holds the same bytes under our uniqueId."""
        found = {
            e.unique_id: e
            for e in self._lookup(envelope, identity, profile, entries[0].patient_id, [e.unique_id for e in entries])
        }
        for entry in entries:
            held = found.get(entry.unique_id)
            if held is None or (held.hash and held.hash != entry.hash):
                raise DmpRefused(
                    f"the DMP holds another document under uniqueId {entry.unique_id} ({DUPLICATE})",
                    code=DUPLICATE,
                )
        first = found[entries[0].unique_id]
        return Receipt(
            remote_id=first.entry_uuid,
            detail={**detail, "entryUUID": first.entry_uuid, "status": "AlreadyPresent", "duplicate": True},
        )

    # -- transport -----------------------------------------------------------------------------
    def _http(
        self, envelope: Envelope, identity: OrgIdentity, url: str, body: bytes, headers: Mapping[str, str], *, what: str
    ) -> requests.Response:
        """POST with the ESSMS's certificate; library errors through the shared mapper, then the
        DMP's reading of TLS failures (a refused client certificate is an operator's matter)."""
        timeout = envelope.timeout(self.settings.timeout)
        try:
            with map_errors(f"DMP {what}"):
                return self._session.post(
                    url,
                    data=body,
                    headers=dict(headers),
                    cert=self._tls.paths(identity),
                    verify=self._verify,
                    timeout=timeout,
                    allow_redirects=False,
                )
        except PermanentError as error:
            if _find(error, ssl.SSLCertVerificationError) is not None and "certificate" in str(error).lower():
                raise PermanentError(
                    f"{error}; the DMP's server certificate must chain to ca_bundle "
                    f"({self.settings.ca_bundle or 'system store'})"
                ) from error.__cause__
            raise
        except TransientError as error:
            cause = error.__cause__
            if isinstance(cause, requests.Timeout):
                raise TransientError(
                    f"DMP {what}: no answer within {timeout:.1f}s (the resend carries the same uniqueId "
                    "and is recognised)"
                ) from cause
            reasons = " ".join(_ssl_reasons(cause)).upper() if cause is not None else ""
            alert = next((a for a in _CERT_REFUSED if a in reasons or a.replace("_", " ") in reasons), None)
            if alert is None and isinstance(cause, requests.exceptions.SSLError | requests.ConnectionError):
                # TLS 1.3: a refused client certificate often shows as a bare EOF/reset on the
                # request; a handshake probe that waits for the peer's alert tells which it was
                alert = self._probe_client_certificate(url, identity, envelope)
            if alert is not None:
                raise self._certificate_refused(alert, what) from cause
            raise

    def _post(
        self, envelope: Envelope, identity: OrgIdentity, url: str, body: bytes, content_type: str, *, what: str
    ) -> Answer:
        resp = self._http(envelope, identity, url, body, {"Content-Type": content_type}, what=what)
        ctype = resp.headers.get("Content-Type", "")
        status = resp.status_code
        if "soap+xml" in ctype or "multipart/related" in ctype:
            try:
                return read_answer(resp.content, ctype)
            except (UnsafeXml, MtomError) as exc:
                if status >= 500:
                    raise TransientError(f"DMP {what}: HTTP {status} with an unreadable answer") from exc
                raise PermanentError(f"DMP {what}: unreadable answer (HTTP {status}): {exc}") from exc
        raise (
            http_status_error(f"DMP {what}", status)
            if status >= 300
            else PermanentError(f"DMP {what}: HTTP {status} without a SOAP answer")
        )

    @staticmethod
    def _certificate_refused(alert: str, what: str) -> PermanentError:
        return PermanentError(
            f"DMP {what}: the DMP refused the ESSMS's certificate (TLS alert {alert.lower()}): "
            "check it is a valid IGC-Santé organisation certificate of this FINESS"
        )

    def _probe_client_certificate(self, url: str, identity: OrgIdentity, envelope: Envelope) -> str | None:
        """Handshake with the ESSMS's certificate and wait briefly for the DMP's TLS alert.

        Returns the alert (e.g. ``UNKNOWN_CA``) when the DMP refuses the certificate, else None.
        """
        import socket
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 443
        ctx = ssl.create_default_context(cafile=str(self.settings.ca_bundle) if self.settings.ca_bundle else None)
        if not self.settings.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        cert_path, key_path = self._tls.paths(identity)
        ctx.load_cert_chain(cert_path, key_path)
        wait = min(2.0, envelope.timeout(self.settings.timeout))
        try:
            with socket.create_connection((host, port), timeout=wait) as raw:
                with ctx.wrap_socket(raw, server_hostname=host) as tls:
                    tls.settimeout(wait)
                    tls.recv(1)  # a server that accepted us waits for the request: timeout
        except ssl.SSLError as exc:
            reason = str(exc.reason or exc).upper()
            return next((a for a in _CERT_REFUSED if a in reason), None)
        except OSError:
            return None
        return None

    @staticmethod
    def _raise_for(answer: Answer, *, what: str) -> None:
        if answer.is_fault:
            reason = _redact(answer.fault_reason)
            text = f"DMP {what}: SOAP fault {answer.fault_code} {answer.fault_subcode}: {reason}".strip()
            if answer.fault_code == "Receiver":
                raise TransientError(text)
            raise DmpRefused(text, code=answer.fault_subcode or answer.fault_code, context=reason)
        errors = [e for e in answer.errors if e.is_error] or list(answer.errors)
        if not errors:
            raise PermanentError(f"DMP {what}: status {answer.status or 'missing'} without an error")
        summary = "; ".join(
            f"{e.code}: {_redact(e.context)}" + (f" (at {_redact(e.location)})" if e.location else "") for e in errors
        )
        if all(e.code in TRANSIENT_CODES for e in errors):
            raise TransientError(f"DMP {what}: {summary}")
        raise DmpRefused(f"DMP {what} refused: {summary}", code=errors[0].code, context=_redact(errors[0].context))

    # -- health ----------------------------------------------------------------------------------
    def health(self) -> Health:
        """A TLS handshake with the DMP (its server certificate checked); no ESSMS credentials needed."""
        import socket
        from urllib.parse import urlsplit

        url = urlsplit(
            self.settings.mhd_url if self.settings.route == "mhd" and self.settings.mhd_url else self.settings.iti41_url
        )
        host, port = url.hostname or "", url.port or 443
        ctx = ssl.create_default_context(cafile=str(self.settings.ca_bundle) if self.settings.ca_bundle else None)
        if not self.settings.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((host, port), timeout=min(self.settings.timeout, 5.0)) as raw:
                with ctx.wrap_socket(raw, server_hostname=host) as tls:
                    version = tls.version()
        except ssl.SSLError as exc:
            return Health(ok=False, detail=f"TLS failure: {exc.reason or exc}")
        except OSError as exc:
            return Health(ok=False, detail=f"unreachable: {type(exc).__name__}")
        return Health(ok=True, detail=f"{version} handshake with {host}:{port}, server certificate trusted")


def _sha1(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(data, usedforsecurity=False).hexdigest()
