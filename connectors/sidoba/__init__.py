"""SIDOBA connector: pushes one ESSMS's indicator dataset for one period to a configurable endpoint.

SIDOBA (CNSA) publishes no exchange format or API that we could find (docs/indicators.md):
this connector therefore sends a *versioned neutral schema* over a *configurable transport*,
to be aligned with CNSA when the format is known, or pointed at an intermediary that converts.

Request: ``POST {url}`` with ``Idempotency-Key: <envelope.idempotency_key>`` and, by
``payload``:

- ``json`` (default): ``application/json``, ``{"schema": "dui-gateway.sidoba-indicators",
  "schema_version": "1.0", "idempotency_key", "finess", "period", "series", "version",
  "replaces", "dataset": {...}}`` (``dataset``: the layout of docs/indicators.md);
- ``csv``: ``text/csv`` (the long CSV layout), the same envelope fields as ``X-Sidoba-*``
  headers.

Authentication: ``token`` (a reference, ``env:NAME`` / ``file:/path``) sent as
``Authorization: Bearer``, and/or mutual TLS (``client_cert``/``client_key`` paths); TLS
verification is on. Outcomes: 2xx → delivered (``remote_id`` from the JSON ``id``, else the
``Location`` header); connection error, timeout, 408, 425, 429, 5xx → TransientError (the
engine retries with the same idempotency key); any other answer → PermanentError.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from typing import Any, ClassVar, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field

from connectors._errors import http_status_error, map_errors
from connectors._secrets import SecretRef
from connectors.base import Envelope, Health, PermanentError, Receipt

__all__ = ["SCHEMA", "SCHEMA_VERSION", "SidobaConnector", "SidobaSettings", "request_body"]

SCHEMA = "dui-gateway.sidoba-indicators"
SCHEMA_VERSION = "1.0"


class SidobaSettings(BaseModel):
    """One SIDOBA endpoint (or the intermediary that stands for it)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str = Field(pattern=r"^https?://")
    payload: Literal["json", "csv"] = "json"
    timeout: float = Field(default=30.0, gt=0, le=300)
    token: SecretRef | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify_tls: bool = True
    health_url: str | None = Field(default=None, pattern=r"^https?://")


def _dataset(envelope: Envelope) -> tuple[dict[str, Any], Any]:
    rendition = next((r for r in envelope.renditions if r.kind == "indicators"), None)
    if rendition is None:
        raise PermanentError("sidoba: the envelope carries no indicator dataset (document type indicator-dataset)")
    return json.loads(rendition.content), rendition


def _csv(dataset: dict[str, Any]) -> bytes:
    """The long CSV layout (reporting.export) rebuilt from the JSON dataset."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("layout_version", "finess", "period", "accommodation", "indicator", "breakdown", "value"))
    head = (dataset.get("layout_version", ""), dataset.get("finess", ""), dataset.get("period", {}).get("code", ""))
    groups = [("all", dataset.get("totals", {})), *sorted(dataset.get("by_accommodation", {}).items())]
    for name, figures in groups:
        for indicator, value in figures.items():
            if isinstance(value, dict):
                writer.writerows(
                    [*head, name, indicator, str(k), "" if v is None else str(v)] for k, v in value.items()
                )
            else:
                writer.writerow([*head, name, indicator, "", "" if value is None else str(value)])
    return out.getvalue().encode("utf-8")


def request_body(envelope: Envelope, payload: str = "json") -> tuple[bytes, dict[str, str]]:
    """(body, headers) of the request for ``envelope`` (stable for a given envelope)."""
    dataset, rendition = _dataset(envelope)
    fields = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "idempotency_key": envelope.idempotency_key,
        "finess": envelope.facts.essms_finess,
        "period": str(dataset.get("period", {}).get("code", "")),
        "series": rendition.set_id,
        "version": rendition.version,
        "replaces": rendition.replaces,
    }
    headers = {"Idempotency-Key": envelope.idempotency_key}
    if payload == "csv":
        headers["Content-Type"] = "text/csv; charset=utf-8"
        headers.update({f"X-Sidoba-{k.replace('_', '-').title()}": str(v) for k, v in fields.items() if v is not None})
        return _csv(dataset), headers
    headers["Content-Type"] = "application/json"
    body = json.dumps({**fields, "dataset": dataset}, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return body.encode("utf-8"), headers


class SidobaConnector:
    name: ClassVar[str] = "sidoba"
    version: ClassVar[str] = SCHEMA_VERSION
    Settings: ClassVar[type[BaseModel]] = SidobaSettings

    def __init__(self, settings: SidobaSettings) -> None:
        self.settings = settings
        self._local = threading.local()

    @property
    def send_timeout(self) -> float:
        return self.settings.timeout

    @property
    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.verify = self.settings.verify_tls
            if self.settings.client_cert:
                session.cert = (
                    (self.settings.client_cert, self.settings.client_key)
                    if self.settings.client_key
                    else self.settings.client_cert
                )
            if self.settings.token is not None:
                session.headers["Authorization"] = f"Bearer {self.settings.token.get_secret_value()}"
            self._local.session = session
        return session

    def send(self, envelope: Envelope) -> Receipt:
        body, headers = request_body(envelope, self.settings.payload)
        with map_errors("sidoba"):
            resp = self._session.post(
                self.settings.url,
                data=body,
                headers=headers,
                timeout=envelope.timeout(self.settings.timeout),
                allow_redirects=False,
            )
            if not 200 <= resp.status_code < 300:
                raise http_status_error("sidoba", resp.status_code)
        remote_id: str | None = None
        try:
            data = resp.json() if len(resp.content) <= 65536 else {}
        except ValueError:
            data = {}
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            remote_id = data["id"][:256]
        return Receipt(remote_id=remote_id or resp.headers.get("Location"), detail={"status": resp.status_code})

    def health(self) -> Health:
        target = self.settings.health_url or self.settings.url
        try:
            resp = self._session.get(target, timeout=min(self.settings.timeout, 5.0))
        except requests.RequestException as exc:
            return Health(ok=False, detail=f"unreachable: {type(exc).__name__}")
        ok = 200 <= resp.status_code < 300 if self.settings.health_url else resp.status_code < 500
        return Health(ok=ok, detail=f"HTTP {resp.status_code}")
