"""The ``sdo`` connector: sends the ESSMS's answers (Consent, Task) to the SI-SdO (ViaTrajectoire PH).

For each rendition of kind ``sdo-consent`` / ``sdo-task`` (:mod:`mappings.sdo`):

1. the resource is validated again with the project's ``profiles`` (``esms-consent``, ``sdo-task``);
   a failure is a :class:`~connectors.base.PermanentError` (nothing sent);
2. flux 2 — ``POST [base]/Consent`` with ``If-None-Exist: identifier=<system>|<value>`` (the
   client-assigned identifier): a resend finds the first one (``200``) instead of creating another;
3. flux 4 — first status: ``POST [base]/Task`` with ``If-None-Exist`` likewise; next statuses:
   ``PUT [base]/Task/<id>``, ``<id>`` being the Task the SI-SdO returned for the version this
   destination holds (``envelope.held``). A status whose conditional create finds an existing
   Task (a previous version stored, its receipt lost) updates that Task. A ``PUT`` answered 404
   (the Task was removed at the SI-SdO) falls back to the conditional create.

Authentication (``auth`` in the settings) uses the ESSMS's credentials (``credentials_purpose``
``sdo``): the OAuth client id is ``attributes["oauth_client_id"]`` or ``username``, its secret
``password`` or ``secrets["oauth_client_secret"][0]``; the certificate and key
(``certificate_pem``/``private_key_pem``) are presented for mutual TLS. Tokens are cached per
client and renewed before expiry (Authlib, :mod:`connectors.fhir._oauth`); a ``401`` drops the
token and the call is made once more with a new one.

Errors: OperationOutcome and HTTP status mapped by :func:`connectors.fhir._http.answer_error`
(``422`` business rule → permanent; 5xx, 429, transient issue codes → transient).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

import profiles
from connectors.base import Credentials, Envelope, Health, PermanentError, Receipt
from connectors.fhir._http import TlsFiles, answer_error
from connectors.fhir._oauth import ClientIdentity, TokenCache
from connectors.fhir.client import Auth, FhirAnswer, FhirClient
from connectors.sdo._config import SdoEndpoint, verify_of
from profiles.definitions.sdo import ESMS_CONSENT, SDO_TASK

__all__ = ["SdoConnector", "SdoConnectorSettings"]

_KINDS = {"sdo-consent": ("Consent", ESMS_CONSENT.url), "sdo-task": ("Task", SDO_TASK.url)}


class SdoConnectorSettings(SdoEndpoint):
    """The SI-SdO destination (the ESSMS's own credentials come from the credentials provider)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _identifier_param(resource: dict[str, Any]) -> str | None:
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            system = ident.get("system")
            return f"identifier={system}|{ident['value']}" if system else f"identifier={ident['value']}"
    return None


def _remote_id(rtype: str, answer: FhirAnswer) -> str | None:
    rid = answer.resource().get("id")
    if isinstance(rid, str) and rid:
        return f"{rtype}/{rid}"
    location = answer.headers.get("Location") or answer.headers.get("Content-Location")
    if location and f"{rtype}/" in location:
        tail = location.split(f"{rtype}/", 1)[1].split("/")[0]
        return f"{rtype}/{tail}" if tail else None
    return None


def _bare_id(remote_id: str | None, rtype: str) -> str | None:
    if not remote_id:
        return None
    tail = remote_id.split(f"{rtype}/", 1)[1] if f"{rtype}/" in remote_id else remote_id
    bare = tail.split("/")[0]
    return bare or None


class SdoConnector:
    name: ClassVar[str] = "sdo"
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[BaseModel]] = SdoConnectorSettings
    credentials_purpose: ClassVar[str] = "sdo"

    def __init__(self, settings: SdoConnectorSettings, *, tokens: TokenCache | None = None) -> None:
        self.settings = settings
        self._client = FhirClient(settings.base_url, peer="SI-SdO", verify=verify_of(settings))
        self._tokens = tokens or TokenCache(leeway=settings.token_leeway, timeout=settings.timeout)
        self._tls = TlsFiles()

    @property
    def send_timeout(self) -> float:
        # token + conditional create + possible update: three calls at most
        return self.settings.timeout * 3

    # -- authentication -----------------------------------------------------------------------
    def _auth(self, creds: Credentials | None) -> Auth:
        s = self.settings
        if creds is None:
            raise PermanentError("no SI-SdO credentials for this ESSMS (purpose 'sdo')")
        cert: tuple[str, str] | None = None
        if "mtls" in s.auth:
            if not (creds.certificate_pem and creds.private_key_pem):
                raise PermanentError("the ESSMS's SI-SdO credentials hold no certificate and key (auth mtls)")
            cert = self._tls.pair(creds.certificate_pem, creds.private_key_pem)
        identity = None
        if "oauth" in s.auth:
            client_id = creds.attributes.get("oauth_client_id") or creds.username
            secret = creds.password or next(iter(creds.secrets.get("oauth_client_secret", ())), None)
            if not client_id or not secret or not s.token_url:
                raise PermanentError("the ESSMS's SI-SdO credentials hold no OAuth client id and secret (auth oauth)")
            identity = ClientIdentity(
                token_url=s.token_url,
                client_id=client_id,
                secret=secret,
                scope=creds.attributes.get("oauth_scope") or s.scope,
                cert=cert,
                verify=verify_of(s),
            )
        return Auth(cert=cert, identity=identity, tokens=self._tokens if identity else None)

    # -- sending --------------------------------------------------------------------------------
    def send(self, envelope: Envelope) -> Receipt:
        renditions = [r for r in envelope.renditions if r.kind in _KINDS]
        if not renditions:
            raise PermanentError(f"nothing for the SI-SdO in a {envelope.document_type} (sdo-consent or sdo-task)")
        auth = self._auth(envelope.credentials)
        receipt = Receipt()
        for rendition in renditions:
            rtype, profile = _KINDS[rendition.kind]
            try:
                resource = json.loads(rendition.content)
            except ValueError:
                raise PermanentError(f"the {rtype} rendition is not JSON") from None
            report = profiles.validate(resource, profile)
            if not report.ok:
                codes = sorted(
                    {issue.rule or issue.code for issue in report.issues if issue.severity in ("error", "fatal")}
                )
                raise PermanentError(f"the {rtype} does not conform to {profile}: {', '.join(codes)[:300]}")
            if rtype == "Consent":
                receipt = self._create(envelope, auth, "Consent", resource)
            else:
                held = envelope.held.get(rendition.set_id)
                receipt = self._status(envelope, auth, resource, held.remote_id if held else None, rendition.version)
        return receipt

    def _call(self, envelope: Envelope, auth: Auth, method: str, path: str, body: bytes, **headers: str) -> FhirAnswer:
        answer = self._client.request(
            method,
            path,
            timeout=envelope.timeout(self.settings.timeout),
            auth=auth,
            json_body=body,
            headers=headers or None,
            deadline=envelope.deadline,
        )
        if not answer.ok:
            raise answer_error("SI-SdO", answer.status, answer.body)
        return answer

    def _create(self, envelope: Envelope, auth: Auth, rtype: str, resource: dict[str, Any]) -> Receipt:
        conditional = _identifier_param(resource)
        headers = {"If-None-Exist": conditional} if conditional else {}
        answer = self._call(envelope, auth, "POST", rtype, json.dumps(resource).encode(), **headers)
        return Receipt(
            remote_id=_remote_id(rtype, answer),
            detail={"status": answer.status, "interaction": "create", "existing": answer.status == 200},
        )

    def _status(
        self, envelope: Envelope, auth: Auth, resource: dict[str, Any], held_id: str | None, version: int
    ) -> Receipt:
        task_id = _bare_id(held_id, "Task")
        if task_id is not None:
            answer = self._put(envelope, auth, task_id, resource)
            if answer is not None:
                return Receipt(
                    remote_id=_remote_id("Task", answer) or f"Task/{task_id}",
                    detail={"status": answer.status, "interaction": "update", "version": version},
                )
        created = self._create(envelope, auth, "Task", resource)
        if created.detail.get("existing"):
            # a Task with this identifier exists already: a resend, or a receipt lost after an
            # earlier version; PUT makes it hold this version (the same content again is harmless)
            existing = _bare_id(created.remote_id, "Task")
            if existing is not None:
                answer = self._put(envelope, auth, existing, resource)
                if answer is not None:
                    return Receipt(
                        remote_id=_remote_id("Task", answer) or f"Task/{existing}",
                        detail={"status": answer.status, "interaction": "update", "version": version},
                    )
        return created

    def _put(self, envelope: Envelope, auth: Auth, task_id: str, resource: dict[str, Any]) -> FhirAnswer | None:
        body = json.dumps({**resource, "id": task_id}).encode()
        answer = self._client.request(
            "PUT",
            f"Task/{task_id}",
            timeout=envelope.timeout(self.settings.timeout),
            auth=auth,
            json_body=body,
            deadline=envelope.deadline,
        )
        if answer.status == 404:
            return None
        if not answer.ok:
            raise answer_error("SI-SdO", answer.status, answer.body)
        return answer

    def health(self) -> Health:
        """``GET [base]/metadata``: a CapabilityStatement for FHIR 4.0.x; never raises."""
        try:
            answer = self._client.request("GET", "metadata", timeout=min(self.settings.timeout, 5.0))
        except Exception as exc:
            return Health(ok=False, detail=f"unreachable: {type(exc).__name__}")
        data = answer.resource()
        if not answer.ok or data.get("resourceType") != "CapabilityStatement":
            return Health(ok=False, detail=f"HTTP {answer.status}: no CapabilityStatement")
        version = str(data.get("fhirVersion") or "")
        return Health(ok=version.startswith("4.0"), detail=f"FHIR {version or '?'}")

    def close(self) -> None:
        self._client.close()
        self._tokens.close()
        self._tls.close()
