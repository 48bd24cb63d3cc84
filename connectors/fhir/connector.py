"""The generic ``fhir`` connector: FHIR R4 resources and Bundles to any FHIR server.

Each rendition whose media type is FHIR JSON (``application/fhir+json``) is sent as:

- a ``transaction`` or ``batch`` Bundle (the TDDUI export, an MHD ITI-65 provide bundle) →
  ``POST [base]``; every ``POST`` entry whose resource has an identifier and no ``ifNoneExist``
  gets one (``identifier=<system>|<value>``), so a resend after a crash creates nothing twice;
  a batch answer with failed entries is an error (the worst entry decides transient/permanent);
- any other resource (a ``document`` or ``collection`` Bundle such as the DLU FHIR bundle, a
  single resource) → conditional create ``POST [base]/<type>`` with ``If-None-Exist`` on its
  identifier; without an identifier, ``PUT [base]/<type>/<id>`` with an id derived from the
  rendition's ``document_id`` (update as create: the server must allow client-assigned ids).

Errors: HTTP status and OperationOutcome through :func:`connectors.fhir._http.answer_error`.
``health()`` reads ``[base]/metadata``: a CapabilityStatement for FHIR 4.0.x, and — when
``require_transaction`` — one that declares the ``transaction`` interaction.

Authentication: none, a static bearer ``token`` (reference), OAuth 2.0 client credentials
(``oauth``), and/or a client certificate (``certificate_file``/``private_key_file``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors._secrets import SecretRef
from connectors.base import ConnectorError, Envelope, Health, PermanentError, Receipt, TransientError
from connectors.fhir._http import answer_error
from connectors.fhir._oauth import ClientIdentity, TokenCache
from connectors.fhir.client import Auth, FhirAnswer, FhirClient
from mappings.base import Rendition

__all__ = ["FhirConnector", "FhirOAuth", "FhirSettings"]


class FhirOAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    token_url: str = Field(pattern=r"^https?://")
    client_id: str = Field(min_length=1, max_length=256)
    client_secret: SecretRef
    scope: str | None = None


class FhirSettings(BaseModel):
    """One FHIR R4 server."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    base_url: str = Field(pattern=r"^https?://")
    timeout: float = Field(default=30.0, gt=0, le=300)
    verify_tls: bool = True
    ca_file: str | None = None
    token: SecretRef | None = None
    oauth: FhirOAuth | None = None
    certificate_file: str | None = None
    private_key_file: str | None = None
    require_transaction: bool = True

    @model_validator(mode="after")
    def _one_auth(self) -> FhirSettings:
        if self.token is not None and self.oauth is not None:
            raise ValueError("give either token or oauth, not both")
        if bool(self.certificate_file) != bool(self.private_key_file):
            raise ValueError("certificate_file and private_key_file go together")
        return self


def _identifier_param(resource: dict[str, Any]) -> str | None:
    idents = resource.get("identifier")
    items = [idents] if isinstance(idents, dict) else idents if isinstance(idents, list) else []
    for ident in items:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str) and ident["value"]:
            system = ident.get("system")
            return f"identifier={system}|{ident['value']}" if system else f"identifier={ident['value']}"
    return None


def _client_id(document_id: str) -> str:
    return "dui-" + hashlib.sha256(document_id.encode()).hexdigest()[:40]


def _location(answer: FhirAnswer, rtype: str) -> str | None:
    rid = answer.resource().get("id")
    if isinstance(rid, str) and rid and answer.resource().get("resourceType") == rtype:
        return f"{rtype}/{rid}"
    location = answer.headers.get("Location") or answer.headers.get("Content-Location")
    return location[:512] if location else None


def _status_code(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    head = text.strip().split(" ", 1)[0]
    return int(head) if head.isdigit() and len(head) == 3 else None


class FhirConnector:
    name: ClassVar[str] = "fhir"
    version: ClassVar[str] = "1"
    Settings: ClassVar[type[BaseModel]] = FhirSettings

    def __init__(self, settings: FhirSettings, *, tokens: TokenCache | None = None) -> None:
        self.settings = settings
        verify: bool | str = (settings.ca_file or True) if settings.verify_tls else False
        self._client = FhirClient(settings.base_url, peer="FHIR server", verify=verify)
        self._tokens = tokens or TokenCache(timeout=settings.timeout)
        cert = (
            (settings.certificate_file, settings.private_key_file)
            if settings.certificate_file and settings.private_key_file
            else None
        )
        identity = None
        if settings.oauth is not None:
            identity = ClientIdentity(
                token_url=settings.oauth.token_url,
                client_id=settings.oauth.client_id,
                secret=settings.oauth.client_secret.get_secret_value(),
                scope=settings.oauth.scope,
                cert=cert,
                verify=verify,
            )
        self._auth = Auth(
            cert=cert,
            identity=identity,
            tokens=self._tokens if identity else None,
            static_token=settings.token.get_secret_value() if settings.token is not None else None,
        )

    @property
    def send_timeout(self) -> float:
        return self.settings.timeout * 2

    def send(self, envelope: Envelope) -> Receipt:
        renditions = [r for r in envelope.renditions if "fhir+json" in r.media_type]
        if not renditions:
            raise PermanentError(f"no FHIR JSON rendition in a {envelope.document_type}")
        receipt = Receipt()
        for rendition in renditions:
            receipt = self._send_one(envelope, rendition)
        return receipt

    def _request(self, envelope: Envelope, method: str, path: str, body: dict[str, Any], **headers: str) -> FhirAnswer:
        answer = self._client.request(
            method,
            path,
            timeout=envelope.timeout(self.settings.timeout),
            auth=self._auth,
            json_body=json.dumps(body).encode(),
            headers=headers or None,
            deadline=envelope.deadline,
        )
        if not answer.ok:
            raise answer_error("FHIR server", answer.status, answer.body)
        return answer

    def _send_one(self, envelope: Envelope, rendition: Rendition) -> Receipt:
        try:
            resource = json.loads(rendition.content)
        except ValueError:
            raise PermanentError("the FHIR rendition is not JSON") from None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise PermanentError("the FHIR rendition is not a resource")
        rtype = resource["resourceType"]
        if rtype == "Bundle" and resource.get("type") in ("transaction", "batch"):
            return self._bundle(envelope, resource)
        conditional = _identifier_param(resource)
        if conditional:
            answer = self._request(envelope, "POST", rtype, resource, **{"If-None-Exist": conditional})
            interaction = "conditional-create"
        else:
            rid = _client_id(rendition.document_id)
            answer = self._request(envelope, "PUT", f"{rtype}/{rid}", {**resource, "id": rid})
            interaction = "update-as-create"
        return Receipt(
            remote_id=_location(answer, rtype),
            detail={"status": answer.status, "interaction": interaction, "existing": answer.status == 200},
        )

    def _bundle(self, envelope: Envelope, bundle: dict[str, Any]) -> Receipt:
        sent = copy.deepcopy(bundle)
        for entry in sent.get("entry") or []:
            if not isinstance(entry, dict):
                continue
            request = entry.get("request")
            resource = entry.get("resource")
            if isinstance(request, dict) and request.get("method") == "POST" and not request.get("ifNoneExist"):
                if isinstance(resource, dict):
                    conditional = _identifier_param(resource)
                    if conditional:
                        request["ifNoneExist"] = conditional
        answer = self._request(envelope, "POST", "", sent)
        data = answer.resource()
        if data.get("resourceType") != "Bundle":
            raise TransientError("the FHIR server's answer to a Bundle is not a Bundle")
        failures: list[ConnectorError] = []
        locations: list[str] = []
        for entry in data.get("entry") or []:
            response = entry.get("response") if isinstance(entry, dict) else None
            if not isinstance(response, dict):
                continue
            status = _status_code(response.get("status"))
            if status is None or not 200 <= status < 300:
                body = json.dumps(response.get("outcome") or {}).encode()
                failures.append(answer_error("FHIR server (bundle entry)", status or 500, body))
            elif isinstance(response.get("location"), str):
                locations.append(response["location"][:512])
        if failures:
            permanent = [f for f in failures if isinstance(f, PermanentError)]
            worst = permanent[0] if permanent else failures[0]
            raise type(worst)(f"{len(failures)} of the bundle's entries failed; first: {worst}")
        return Receipt(
            remote_id=locations[0] if locations else None,
            detail={"status": answer.status, "interaction": sent.get("type"), "entries": len(locations)},
        )

    def health(self) -> Health:
        """The server's CapabilityStatement: FHIR 4.0.x (and ``transaction`` when required); never raises."""
        try:
            answer = self._client.request("GET", "metadata", timeout=min(self.settings.timeout, 5.0), auth=None)
        except Exception as exc:
            return Health(ok=False, detail=f"unreachable: {type(exc).__name__}")
        data = answer.resource()
        if not answer.ok or data.get("resourceType") != "CapabilityStatement":
            return Health(ok=False, detail=f"HTTP {answer.status}: no CapabilityStatement")
        version = str(data.get("fhirVersion") or "")
        if not version.startswith("4.0"):
            return Health(ok=False, detail=f"FHIR {version or '?'}: R4 (4.0.x) expected")
        if self.settings.require_transaction:
            found = data.get("rest")
            rest: list[Any] = found if isinstance(found, list) else []
            codes = {
                i.get("code")
                for r in rest
                if isinstance(r, dict)
                for i in (r.get("interaction") or [])
                if isinstance(i, dict)
            }
            if "transaction" not in codes:
                return Health(ok=False, detail=f"FHIR {version}: the server declares no transaction interaction")
        return Health(ok=True, detail=f"FHIR {version}")

    def close(self) -> None:
        self._client.close()
        self._tokens.close()
