"""OAuth 2.0 client credentials (RFC 6749 §4.4) with Authlib: one token per client, cached and renewed.

:class:`TokenCache` keeps one Authlib ``OAuth2Session`` per client identity (token URL, client id,
client certificate): the token is fetched on first use, reused while valid and fetched again when
it is within ``leeway`` seconds of its expiry (Authlib's ``ensure_active_token`` for the
``client_credentials`` grant, which has no refresh token). :meth:`TokenCache.invalidate` drops a
token the resource server refused (``401``: revoked or expired early), so the next call fetches
a new one. Token requests carry the client certificate too (mutual TLS towards the token
endpoint, RFC 8705) when one is given.

Errors: the token endpoint unreachable, timing out or answering 5xx/429 → TransientError;
``invalid_client``/``unauthorized_client``/other 4xx → PermanentError (the ESSMS's client is not
enrolled or its secret is wrong: a resend will not fix it). Messages never hold a secret.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session

from connectors._errors import http_status_error, map_errors
from connectors.base import PermanentError, TransientError

__all__ = ["ClientIdentity", "TokenCache"]


@dataclass(frozen=True)
class ClientIdentity:
    """Who asks for a token. ``secret`` is excluded from ``repr`` and equality is on all fields."""

    token_url: str
    client_id: str
    secret: str
    scope: str | None = None
    cert: tuple[str, str] | None = None  # client certificate and key files (mutual TLS)
    verify: bool | str = True

    def __repr__(self) -> str:
        return f"ClientIdentity({self.token_url!r}, {self.client_id!r})"


class TokenCache:
    """Thread-safe cache of client-credentials tokens, renewed ``leeway`` seconds before expiry."""

    def __init__(self, *, leeway: int = 30, timeout: float = 10.0) -> None:
        self._leeway = leeway
        self._timeout = timeout
        self._sessions: dict[ClientIdentity, OAuth2Session] = {}
        self._locks: dict[ClientIdentity, threading.Lock] = {}
        self._lock = threading.Lock()
        self.fetches = 0  # tokens obtained (for tests and metrics)

    def _session(self, identity: ClientIdentity) -> tuple[OAuth2Session, threading.Lock]:
        with self._lock:
            session = self._sessions.get(identity)
            if session is None:
                session = OAuth2Session(
                    client_id=identity.client_id,
                    client_secret=identity.secret,
                    scope=identity.scope,
                    token_endpoint=identity.token_url,
                    token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - a method name
                    grant_type="client_credentials",
                    leeway=self._leeway,
                )
                session.verify = identity.verify
                if identity.cert is not None:
                    session.cert = identity.cert
                self._sessions[identity] = session
                self._locks[identity] = threading.Lock()
            return session, self._locks[identity]

    def _fetch(self, session: OAuth2Session, identity: ClientIdentity, timeout: float) -> None:
        try:
            with map_errors("OAuth token endpoint"):
                # verify/cert per request: requests lets REQUESTS_CA_BUNDLE override a session's verify
                session.fetch_token(
                    identity.token_url,
                    grant_type="client_credentials",
                    timeout=timeout,
                    verify=identity.verify,
                    cert=identity.cert,
                )
        except OAuthError as exc:  # the endpoint answered with an OAuth error document
            raise PermanentError(f"OAuth token refused for client {identity.client_id!r}: {exc.error}") from exc
        except (TransientError, PermanentError) as exc:
            http = exc.__cause__
            if isinstance(http, requests.HTTPError) and http.response is not None:  # 5xx/429 without OAuth error
                raise http_status_error("OAuth token endpoint", http.response.status_code) from http
            raise
        except (ValueError, KeyError) as exc:  # an answer that is no token (HTML error page, 5xx body...)
            raise TransientError(f"OAuth token endpoint gave no usable token ({type(exc).__name__})") from exc
        self.fetches += 1

    def token(self, identity: ClientIdentity, *, timeout: float | None = None) -> str:
        """A valid access token for ``identity`` (fetched or renewed when needed)."""
        session, lock = self._session(identity)
        wait = self._timeout if timeout is None else min(timeout, self._timeout)
        with lock:
            current: Any = session.token
            # is_expired: None when the token has no expiry (kept until the server refuses it)
            if not current or current.is_expired(leeway=self._leeway):
                self._fetch(session, identity, wait)
            token = session.token
            access = token.get("access_token") if token else None
            if not isinstance(access, str) or not access:
                raise TransientError("OAuth token endpoint answered without an access_token")
            return access

    def invalidate(self, identity: ClientIdentity, access_token: str | None = None) -> None:
        """Forget the cached token (only if it is still ``access_token``, when given)."""
        session, lock = self._session(identity)
        with lock:
            token = session.token
            if token and (access_token is None or token.get("access_token") == access_token):
                session.token = None

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions, self._locks = list(self._sessions.values()), {}, {}
        for session in sessions:
            try:
                session.close()
            except requests.RequestException:  # pragma: no cover
                pass
