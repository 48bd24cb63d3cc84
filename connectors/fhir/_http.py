"""FHIR REST over requests, shared by the ``fhir`` connector, the ``sdo`` connector and the ``sdo`` source.

- :func:`read_body`: an answer's body read up to a size limit and before a deadline;
- :func:`parse_json`: JSON that refuses what a hostile peer could send to exhaust us (nesting
  deeper than a limit, integers of more than 30 digits, NaN/Infinity) with :class:`FhirContentError`;
- :func:`answer_error`: a non-2xx answer (and its OperationOutcome, when there is one) as a
  :class:`~connectors.base.TransientError` or :class:`~connectors.base.PermanentError`;
- :class:`TlsFiles`: client certificate and key (PEM in memory, from the ESSMS's credentials)
  written once to a private directory, because ``requests``/``ssl`` load them from files.

OperationOutcome mapping (FHIR R4 ``IssueType``)::

    HTTP 408, 425, 429, 5xx                                  transient
    any status whose issues are all of transient kinds
      (transient, lock-error, no-store, exception, timeout,
       throttled, incomplete)                                 transient
    HTTP 409 (version conflict) and 412 (conditional          transient (a concurrent writer;
      operation matched several resources)                      the next attempt re-reads)
    any other 4xx                                             permanent

Messages carry the HTTP status and the issues' ``code`` and ``expression`` (element paths), never
``diagnostics`` nor the body (a server may echo the resource, with the person's data).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from connectors._json import JsonRefused, loads_bounded
from connectors.base import ConnectorError, PermanentError, TransientError

__all__ = [
    "FHIR_JSON",
    "FhirContentError",
    "Outcome",
    "TlsFiles",
    "answer_error",
    "parse_json",
    "parse_outcome",
    "read_body",
]

FHIR_JSON = "application/fhir+json"
MAX_DEPTH = 64
_TRANSIENT_ISSUES = frozenset(
    {"transient", "lock-error", "no-store", "exception", "timeout", "throttled", "incomplete"}
)


class FhirContentError(ValueError):
    """A body that is not acceptable FHIR JSON (the message never quotes it)."""


def parse_json(content: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a peer's JSON; :class:`FhirContentError` when it is not UTF-8 JSON within the limits."""
    try:
        return loads_bounded(content, max_depth=max_depth)
    except JsonRefused as exc:
        raise FhirContentError(str(exc)) from None


def read_body(resp: requests.Response, *, limit: int, deadline: datetime | None = None) -> bytes:
    """The streamed answer's body; :class:`FhirContentError` past ``limit`` bytes, TransientError past ``deadline``."""
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(chunk_size=65536):
        size += len(chunk)
        if size > limit:
            raise FhirContentError(f"the answer is larger than {limit} bytes")
        chunks.append(chunk)
        if deadline is not None and datetime.now(UTC) >= deadline:
            raise TransientError("the FHIR server's answer was not read before the deadline")
    return b"".join(chunks)


@dataclass(frozen=True)
class Outcome:
    """The useful part of an OperationOutcome: (severity, code, expression) per issue."""

    issues: tuple[tuple[str, str, str], ...] = ()

    @property
    def transient(self) -> bool:
        errors = [code for severity, code, _ in self.issues if severity in ("fatal", "error")]
        return bool(errors) and all(code in _TRANSIENT_ISSUES for code in errors)

    def summary(self, limit: int = 5) -> str:
        shown = [
            f"{code}@{where}" if where else code for severity, code, where in self.issues if severity != "information"
        ]
        more = f" (+{len(shown) - limit})" if len(shown) > limit else ""
        return ", ".join(shown[:limit]) + more


def parse_outcome(data: Any) -> Outcome:
    """An OperationOutcome (or anything else: no issues) as an :class:`Outcome`; never raises."""
    if not isinstance(data, Mapping) or data.get("resourceType") != "OperationOutcome":
        return Outcome()
    issues: list[tuple[str, str, str]] = []
    for issue in data.get("issue") or []:
        if not isinstance(issue, Mapping):
            continue
        severity = issue.get("severity")
        code = issue.get("code")
        expression = issue.get("expression") or issue.get("location") or []
        where = expression[0] if isinstance(expression, list) and expression else ""
        if isinstance(severity, str) and isinstance(code, str):
            issues.append((severity[:16], code[:32], where[:120] if isinstance(where, str) else ""))
        if len(issues) >= 50:
            break
    return Outcome(tuple(issues))


def answer_error(peer: str, status: int, body: bytes) -> ConnectorError:
    """The error for a non-2xx answer, with its OperationOutcome's issue codes (see the module's table)."""
    try:
        outcome = parse_outcome(parse_json(body)) if body else Outcome()
    except FhirContentError:
        outcome = Outcome()
    issues = f": {outcome.summary()}" if outcome.issues else ""
    if status >= 500 or status in (408, 425, 429, 409, 412) or outcome.transient:
        return TransientError(f"{peer} answered HTTP {status}{issues}")
    return PermanentError(f"{peer} refused it: HTTP {status}{issues}")


class TlsFiles:
    """Client certificates written to a private directory (0700), one pair per distinct PEM.

    ``requests`` takes a client certificate as file paths only. The files hold the ESSMS's
    private key: the directory is created with ``mkdtemp`` (owner only) and removed by
    :meth:`close` (and at interpreter exit, best effort).
    """

    def __init__(self) -> None:
        self._dir: str | None = None
        self._lock = threading.Lock()
        self._known: dict[str, tuple[str, str]] = {}

    def pair(self, certificate_pem: bytes, private_key_pem: bytes) -> tuple[str, str]:
        digest = hashlib.sha256(certificate_pem + b"\0" + private_key_pem).hexdigest()[:32]
        with self._lock:
            found = self._known.get(digest)
            if found is not None:
                return found
            if self._dir is None:
                self._dir = tempfile.mkdtemp(prefix="dui-gateway-tls-")
            cert_path = os.path.join(self._dir, f"{digest}.crt")
            key_path = os.path.join(self._dir, f"{digest}.key")
            for path, data in ((cert_path, certificate_pem), (key_path, private_key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            self._known[digest] = (cert_path, key_path)
            return cert_path, key_path

    def close(self) -> None:
        with self._lock:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            self._known.clear()

    def __del__(self) -> None:  # best effort: the key must not outlive the process's use of it
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()
