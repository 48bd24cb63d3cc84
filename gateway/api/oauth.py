"""``POST /oauth/token`` (OAuth2 client credentials, RFC 6749 §4.4) and the public keys.

The client authenticates with ``client_secret_basic`` (``Authorization: Basic``, RFC 6749 §2.3.1:
id and secret form-encoded, then base64) or ``client_secret_post`` (``client_id`` and
``client_secret`` in the form body), never both. Errors are RFC 6749 §5.2 JSON documents
(``{"error": "invalid_client", ...}``), not problem+json: that is what OAuth client libraries read.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote_plus

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from gateway import audit
from gateway.api.deps import RuntimeDep
from gateway.logging import get_logger
from gateway.runtime import Runtime
from gateway.security.authz import SCOPES, expand_scopes
from gateway.security.oauth import authenticate_client

__all__ = ["MAX_TOKEN_REQUEST_BYTES", "router"]

router = APIRouter(tags=["oauth"])

_log = get_logger(__name__)

MAX_TOKEN_REQUEST_BYTES = 4096
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM = "application/x-www-form-urlencoded"

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "string",
            "enum": ["invalid_request", "invalid_client", "unsupported_grant_type", "invalid_scope"],
        },
        "error_description": {"type": "string"},
    },
}


class _OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400, *, basic: bool = False) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.basic = basic


def _error(exc: _OAuthError) -> JSONResponse:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="dui-gateway"'
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description}, status_code=exc.status, headers=headers
    )


async def _form(request: Request) -> dict[str, str]:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != _FORM:
        raise _OAuthError("invalid_request", f"send the parameters as {_FORM}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_TOKEN_REQUEST_BYTES):
        raise _OAuthError("invalid_request", f"token requests are at most {MAX_TOKEN_REQUEST_BYTES} bytes", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_TOKEN_REQUEST_BYTES:
            raise _OAuthError("invalid_request", f"token requests are at most {MAX_TOKEN_REQUEST_BYTES} bytes", 413)
    try:
        text = bytes(body).decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        raise _OAuthError("invalid_request", "the form body is malformed") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:  # RFC 6749 §3.2: parameters must not be repeated
            raise _OAuthError("invalid_request", f"parameter {name!r} is repeated")
        out[name] = value
    return out


def _basic(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise _OAuthError("invalid_client", "client authentication must use HTTP Basic or the form body", 401)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _OAuthError("invalid_client", "malformed Basic credentials", 401, basic=True) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id or not secret:
        raise _OAuthError("invalid_client", "malformed Basic credentials", 401, basic=True)
    return unquote_plus(client_id), unquote_plus(secret)


def _issue(runtime: Runtime, client_id: str, secret: str, requested: str | None) -> dict[str, Any]:
    with runtime.session_factory() as session:
        client = authenticate_client(session, client_id=client_id, client_secret=secret)
        if client is None:
            session.rollback()
            raise _OAuthError("invalid_client", "unknown client, wrong or expired secret, or revoked client", 401)
        allowed = expand_scopes(client.scopes.split())
        if requested is None:
            scopes = allowed
        else:
            scopes = expand_scopes(requested.split())
            if not scopes or not scopes <= allowed:
                session.rollback()
                raise _OAuthError("invalid_scope", f"this client may ask for: {' '.join(sorted(allowed))}")
        signer = runtime.token_signer
        token = signer.issue(client_id=client.id, tenant_id=client.tenant_id, scopes=scopes)
        audit.append(
            session,
            actor=f"client:{client.id}",
            action="token_issued",
            entity_type="api_client",
            entity_id=client.id,
            tenant_id=client.tenant_id,
            detail={"scope": " ".join(sorted(scopes)), "kid": signer.current_kid, "ttl": signer.ttl_seconds},
        )
        session.commit()
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": signer.ttl_seconds,
        "scope": " ".join(sorted(scopes)),
    }


@router.post(
    "/oauth/token",
    response_class=JSONResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                _FORM: {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type"],
                        "properties": {
                            "grant_type": {"type": "string", "enum": ["client_credentials"]},
                            "scope": {"type": "string", "description": "space-separated; default: all the client's"},
                            "client_id": {"type": "string", "description": "client_secret_post only"},
                            "client_secret": {"type": "string", "description": "client_secret_post only"},
                        },
                    }
                }
            },
        },
    },
    responses={
        200: {
            "description": "an access token (signed JWT, EdDSA)",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["access_token", "token_type", "expires_in", "scope"],
                        "properties": {
                            "access_token": {"type": "string"},
                            "token_type": {"type": "string", "enum": ["Bearer"]},
                            "expires_in": {"type": "integer"},
                            "scope": {"type": "string"},
                        },
                    }
                }
            },
        },
        400: {"description": "RFC 6749 §5.2 error", "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
        401: {"description": "invalid_client", "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
        413: {"description": "request too large", "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
    },
)
async def token(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """OAuth2 client credentials grant: a short-lived access token for an API client."""
    try:
        form = await _form(request)
        authorization = request.headers.get("authorization")
        body_id, body_secret = form.get("client_id"), form.get("client_secret")
        if authorization is not None:
            if body_secret is not None:
                raise _OAuthError("invalid_request", "use one client authentication method, not two")
            client_id, secret = _basic(authorization)
            if body_id is not None and body_id != client_id:
                raise _OAuthError("invalid_request", "client_id differs from the authenticated client")
        elif body_id and body_secret:
            client_id, secret = body_id, body_secret
        else:
            raise _OAuthError("invalid_client", "client authentication is required", 401)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise _OAuthError("invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            raise _OAuthError("unsupported_grant_type", "only client_credentials is supported")
        if len(client_id) > 64 or len(secret) > 128:
            raise _OAuthError("invalid_client", "unknown client, wrong or expired secret, or revoked client", 401)
        scope = form.get("scope")
        answer = await run_in_threadpool(_issue, runtime, client_id, secret, scope)
    except _OAuthError as exc:
        _log.info("token_refused", error=exc.error)
        return _error(exc)
    return JSONResponse(answer, headers=_NO_STORE)


def _signer(runtime: RuntimeDep) -> Any:
    return runtime.token_signer


@router.get("/.well-known/jwks.json", response_class=JSONResponse)
def jwks(signer: Annotated[Any, Depends(_signer)]) -> JSONResponse:
    """The public keys that verify access tokens (RFC 7517), the next key included during a rotation."""
    return JSONResponse(signer.jwks(), headers={"Cache-Control": "max-age=300"})


@router.get("/.well-known/oauth-authorization-server", response_class=JSONResponse)
def metadata(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Authorization server metadata (RFC 8414): where to ask for tokens, what is supported."""
    base = str(request.base_url).rstrip("/")
    return JSONResponse(
        {
            "issuer": runtime.settings.token_issuer,
            "token_endpoint": f"{base}/oauth/token",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": sorted(SCOPES),
            "response_types_supported": [],
        }
    )
