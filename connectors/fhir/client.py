"""A small FHIR R4 REST client over ``requests``: one session per thread, authentication, bounded answers.

:class:`FhirClient` sends one interaction and returns a :class:`FhirAnswer` (status, headers,
parsed JSON); every network failure is mapped by :func:`connectors._errors.map_errors`. With
:class:`Auth` it presents a client certificate (mutual TLS) and/or an OAuth 2.0 bearer token
from a :class:`~connectors.fhir._oauth.TokenCache`; a ``401`` on a cached token drops it and the
interaction is tried once more with a fresh one (a token revoked or expired early).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests

from connectors._errors import map_errors
from connectors.fhir._http import FHIR_JSON, FhirContentError, parse_json, read_body
from connectors.fhir._oauth import ClientIdentity, TokenCache

__all__ = ["Auth", "FhirAnswer", "FhirClient"]


@dataclass(frozen=True)
class Auth:
    """How to authenticate one interaction: a client certificate, a bearer token, or both."""

    cert: tuple[str, str] | None = None
    identity: ClientIdentity | None = None
    tokens: TokenCache | None = None
    static_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FhirAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    data: Any = None  # parsed JSON, or None when the body is empty or not JSON
    oversized: bool = False  # the body exceeded the client's limit and was not read

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def resource(self) -> dict[str, Any]:
        return self.data if isinstance(self.data, dict) else {}


class FhirClient:
    """FHIR REST towards one server (``base_url``), shared by threads (a session per thread)."""

    def __init__(
        self,
        base_url: str,
        *,
        peer: str,
        verify: bool | str = True,
        max_answer_bytes: int = 16 * 1024 * 1024,
        max_depth: int = 64,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.peer = peer
        self.verify = verify
        self.max_answer_bytes = max_answer_bytes
        self.max_depth = max_depth
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    @property
    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.verify = self.verify
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def url(self, path: str) -> str:
        if path.startswith(("https://", "http://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url

    def request(
        self,
        method: str,
        path: str,
        *,
        timeout: float,
        auth: Auth | None = None,
        json_body: bytes | None = None,
        params: Mapping[str, str] | list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: datetime | None = None,
        max_bytes: int | None = None,
    ) -> FhirAnswer:
        """One interaction; a 401 with a cached OAuth token is retried once with a new token.

        An answer larger than ``max_bytes`` (default: the client's limit) is not read: ``oversized``."""
        limit = max_bytes or self.max_answer_bytes
        answer = self._once(method, path, timeout, auth, json_body, params, headers, deadline, limit)
        if answer.status == 401 and auth is not None and auth.tokens is not None and auth.identity is not None:
            answer = self._once(method, path, timeout, auth, json_body, params, headers, deadline, limit, renew=True)
        return answer

    def _once(
        self,
        method: str,
        path: str,
        timeout: float,
        auth: Auth | None,
        json_body: bytes | None,
        params: Mapping[str, str] | list[tuple[str, str]] | None,
        headers: Mapping[str, str] | None,
        deadline: datetime | None,
        limit: int,
        *,
        renew: bool = False,
    ) -> FhirAnswer:
        sent = {"Accept": FHIR_JSON, **(headers or {})}
        if json_body is not None:
            sent["Content-Type"] = FHIR_JSON
        cert = auth.cert if auth is not None else None
        if auth is not None and auth.static_token:
            sent["Authorization"] = f"Bearer {auth.static_token}"
        if auth is not None and auth.tokens is not None and auth.identity is not None:
            if renew:
                auth.tokens.invalidate(auth.identity)
            sent["Authorization"] = f"Bearer {auth.tokens.token(auth.identity, timeout=timeout)}"
        with map_errors(self.peer):
            resp = self._session.request(
                method,
                self.url(path),
                data=json_body,
                params=params,
                headers=sent,
                timeout=timeout,
                cert=cert,
                verify=self.verify,  # per request: REQUESTS_CA_BUNDLE would override the session's
                allow_redirects=False,
                stream=True,
            )
            try:
                oversized = False
                try:
                    body = read_body(resp, limit=limit, deadline=deadline)
                except FhirContentError:
                    body, oversized = b"", True  # the status still tells the outcome
                status, answer_headers = resp.status_code, dict(resp.headers)
            finally:
                resp.close()
        data: Any = None
        if body:
            try:
                data = parse_json(body, max_depth=self.max_depth)
            except FhirContentError:
                data = None
        return FhirAnswer(status, answer_headers, body, data, oversized)

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
