"""OpenID Connect login (Pro Santé Connect or an ESSMS identity provider) with Authlib.

Authorization code flow with PKCE (S256), ``state`` and ``nonce``; the ID token's signature is
checked against the provider's JWKS, with its issuer, audience, expiry and nonce. The provider
is found through its discovery document (``/.well-known/openid-configuration``), fetched once
and cached. A user logs in only when a console user holds this (issuer, subject) pair: the
identity provider authenticates, the gateway's own grants authorise.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet

from gateway.settings import Settings

__all__ = ["OidcClient", "OidcError", "OidcLogin"]

_TIMEOUT = 10.0


class OidcError(Exception):
    """The provider's answer could not be trusted or used (the reason is logged, not shown)."""


@dataclass(frozen=True)
class OidcLogin:
    issuer: str
    subject: str
    name: str


_ALGORITHMS = ["RS256", "PS256", "ES256"]  # asymmetric only: "none" and HMAC with a public key are refused


def _decode_id_token(id_token: str, jwks: dict[str, Any], *, issuer: str, audience: str, nonce: str) -> dict[str, Any]:
    """The ID token's claims once its signature (JWKS), issuer, audience, expiry and nonce are checked.

    joserfc is Authlib's own JOSE library (``authlib.jose`` is deprecated in its favour)."""
    token = jwt.decode(id_token, KeySet.import_key_set(cast(Any, jwks)), algorithms=_ALGORITHMS)
    registry = jwt.JWTClaimsRegistry(
        leeway=60,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        sub={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    registry.validate(token.claims)
    return dict(token.claims)


class OidcClient:
    def __init__(self, *, issuer: str, client_id: str, client_secret: str | None, scopes: str, label: str) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.scopes = scopes
        self.label = label
        self._metadata: dict[str, Any] | None = None
        self._jwks: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcClient | None:
        if not settings.oidc_issuer or not settings.oidc_client_id:
            return None
        secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None
        return cls(
            issuer=settings.oidc_issuer,
            client_id=settings.oidc_client_id,
            client_secret=secret,
            scopes=settings.oidc_scopes,
            label=settings.oidc_label,
        )

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None:
                reply = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=_TIMEOUT)
                reply.raise_for_status()
                doc = reply.json()
                if doc.get("issuer", "").rstrip("/") != self.issuer:
                    raise OidcError("the discovery document names another issuer")
                self._metadata = doc
            return self._metadata

    def jwks(self, *, refresh: bool = False) -> dict[str, Any]:
        with self._lock:
            if self._jwks is None or refresh:
                uri = self._metadata["jwks_uri"] if self._metadata else None
                if uri is None:
                    raise OidcError("no jwks_uri")
                reply = requests.get(uri, timeout=_TIMEOUT)
                reply.raise_for_status()
                self._jwks = reply.json()
            return self._jwks

    def _session(self, redirect_uri: str) -> OAuth2Session:
        return OAuth2Session(
            client_id=self.client_id,
            client_secret=self.client_secret,
            scope=self.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_post" if self.client_secret else "none",
        )

    def start(self, redirect_uri: str) -> tuple[str, dict[str, Any]]:
        """The provider's authorization URL, and what to keep (signed, in a cookie) until the callback."""
        meta = self.metadata()
        state = secrets.token_urlsafe(24)
        nonce = secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        with self._session(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"], state=state, nonce=nonce, code_verifier=verifier
            )
        return url, {"s": state, "nn": nonce, "v": verifier, "t": int(time.time())}

    def finish(self, *, redirect_uri: str, code: str, kept: dict[str, Any]) -> OidcLogin:
        meta = self.metadata()
        if time.time() - int(kept.get("t", 0)) > 600:
            raise OidcError("the login took too long")
        with self._session(redirect_uri) as client:
            try:
                token = client.fetch_token(meta["token_endpoint"], code=code, code_verifier=kept["v"], timeout=_TIMEOUT)
            except Exception as exc:  # authlib raises several types for a refused exchange
                raise OidcError(f"token exchange refused: {type(exc).__name__}") from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("no id_token in the token response")
        args = {"issuer": meta["issuer"], "audience": self.client_id, "nonce": kept["nn"]}
        try:
            try:
                claims = _decode_id_token(id_token, self.jwks(), **args)
            except ValueError:  # e.g. an unknown key id: the provider may have rotated its keys
                claims = _decode_id_token(id_token, self.jwks(refresh=True), **args)
        except Exception as exc:  # joserfc raises several types: bad signature, expired, wrong nonce...
            raise OidcError(f"invalid id_token: {type(exc).__name__}") from exc
        name = str(claims.get("name") or claims.get("preferred_username") or claims["sub"])
        return OidcLogin(issuer=str(meta["issuer"]).rstrip("/"), subject=str(claims["sub"]), name=name)
