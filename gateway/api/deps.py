"""Request dependencies: the runtime, the Session (which owns the transaction) and the caller.

The Session dependency uses FastAPI's ``function`` scope: it commits right after the route
returns and *before* the response is sent, so a ``202 Accepted`` is only ever answered for a
submission that is durably stored; any exception rolls everything back.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from gateway.api.problems import Unauthorized
from gateway.errors import Forbidden
from gateway.runtime import Runtime
from gateway.security import auth_cache
from gateway.security.authz import Kind, Principal, expand_scopes, missing_scope
from gateway.security.clients import authenticate
from gateway.security.oauth import InvalidToken, looks_like_jwt
from gateway.storage.models import ApiClient

__all__ = [
    "ADMIN_SCOPES",
    "Caller",
    "CallerDep",
    "InsufficientScope",
    "RuntimeDep",
    "SessionDep",
    "correlation_id",
    "get_runtime",
    "get_session",
    "require_scope",
]

# a legacy scope named by a route -> the current scopes it means, the one to name in a 403 first
LEGACY_ORDER = {"read": ("submissions:read", "fhir:read"), "submit": ("submissions:write",), "audit": ("audit:read",)}

_bearer = HTTPBearer(
    auto_error=False,
    description=(
        "API key of a DUI client (`dgw_…`), an OAuth2 access token from `POST /oauth/token`, or the administrator token"
    ),
)


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:  # an app built only to print its OpenAPI document
        raise RuntimeError("this application was created without a runtime")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """One Session and one transaction per request: commit on success, roll back on error."""
    session = runtime.session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def correlation_id(request: Request) -> str:
    value = request.scope.get("state", {}).get("correlation_id")
    return value if isinstance(value, str) else ""


# What the administrator token (DUI_GATEWAY_ADMIN_TOKEN) may do: it is a platform operator
# (gateway.security.authz): administration and metadata of every tenant (the audit trail holds
# references, no identity traits), never clinical content: records, renditions, DocumentReference
# and Binary answer it 403 (it lacks their scopes).
ADMIN_SCOPES = frozenset({"admin", "audit:read"})


class InsufficientScope(Forbidden):
    """403 naming the scope the token lacks (RFC 6750 §3.1 ``insufficient_scope``); the problem type
    stays ``forbidden``, the ``required_scope`` member names the scope."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"this operation needs the scope {scope!r}", extra={"required_scope": scope})
        self.headers = {"WWW-Authenticate": f'Bearer realm="dui-gateway", error="insufficient_scope", scope="{scope}"'}


@dataclass(frozen=True)
class Caller:
    """Who is calling (a :class:`Principal`) and, for an API client, its row."""

    principal: Principal
    client: ApiClient | None = None
    credential: str = "api_key"  # api_key | access_token | admin_token

    @property
    def actor(self) -> str:
        return self.principal.subject

    @property
    def scopes(self) -> frozenset[str]:
        return self.principal.scopes or frozenset()

    @property
    def tenant_id(self) -> str | None:
        return self.principal.tenant_id

    @property
    def essms(self) -> frozenset[str] | None:
        """The ESSMS (FINESS) the caller is restricted to, None for all of its tenant's."""
        return self.principal.essms

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def tenant(self) -> str:
        """The caller's tenant, for reading or acting on its data: API clients only.

        The platform operator (administrator token) has none: clinical content is not its business."""
        if self.principal.kind is not Kind.API_CLIENT or self.principal.tenant_id is None:
            raise Forbidden(
                "this operation is reserved to the API clients of an organisation: "
                "the administrator token does not read clinical content"
            )
        return self.principal.tenant_id


async def get_caller(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    # async, so that a credential checked lately costs no hop to a thread; one that must be
    # read from the database is checked in a thread
    caller = _authenticate(runtime, credentials, read=False)
    if caller is None:
        caller = await run_in_threadpool(_authenticate, runtime, credentials)
    assert caller is not None
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(caller.actor)  # 429 + Retry-After over the client's rate
    return caller


def _client_caller(client: ApiClient, scopes: frozenset[str], credential: str) -> Caller:
    principal = Principal.api_client(
        client_id=client.id,
        tenant_id=client.tenant_id,
        scopes=scopes,
        essms=client.essms.split() if client.essms else None,
    )
    return Caller(principal=principal, client=client, credential=credential)


def _authenticate(
    runtime: Runtime, credentials: HTTPAuthorizationCredentials | None, *, read: bool = True
) -> Caller | None:
    """Authenticate the bearer token: an API key, an OAuth2 access token (JWT), or the
    administrator token when configured. ``read=False``: None instead of reading the database
    (the credential is not in this process's short-lived cache).

    The look-up runs in its own short transaction, so the request's Session (and, on SQLite,
    the write lock) is not taken before the body has been received. A token's client is looked up
    too, so revoking a client stops its tokens at once, not when they expire.
    """
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing credentials: send 'Authorization: Bearer <API key or access token>'")
    token = credentials.credentials
    admin = runtime.settings.admin_token
    if admin is not None and hmac.compare_digest(token.encode(), admin.get_secret_value().encode()):
        return Caller(principal=Principal.platform_operator(scopes=ADMIN_SCOPES), credential="admin_token")
    caches = runtime.auth_caches
    if looks_like_jwt(token):
        try:
            claims = runtime.token_signer.verify(token)  # the signature and expiry, every time
        except InvalidToken:
            raise Unauthorized("invalid or expired access token") from None
        client = caches.clients.get(claims.client_id)
        if client is None:
            if not read:
                return None
            since = auth_cache.generation()
            with runtime.session_factory() as session:
                client = session.get(ApiClient, claims.client_id)
                session.commit()
            if client is not None and client.active:
                caches.clients.put(claims.client_id, client, since=since)
        if client is None or not client.active or client.tenant_id != claims.tenant_id:
            raise Unauthorized("invalid or expired access token")
        # the token's scopes, never more than the client holds now
        allowed = expand_scopes(client.scopes.split())
        return _client_caller(client, claims.scopes & allowed, "access_token")
    # an API key: remembered briefly under the digest of the whole key (never the key itself),
    # so a known key costs no database round trip; another secret is checked as before
    digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
    caller: Caller | None = caches.callers.get(digest)
    if caller is not None:
        return caller
    if not read:
        return None
    since = auth_cache.generation()
    with runtime.session_factory() as session:
        client = authenticate(session, token)
        session.commit()
    if client is None:
        raise Unauthorized("invalid or revoked API key")
    caller = _client_caller(client, expand_scopes(client.scopes.split()), "api_key")
    caches.callers.put(digest, caller, since=since)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_scope(*any_of: str) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency that accepts callers holding at least one of these scopes (403 names the first).

    Legacy names (``read``, ``submit``, ``audit``) are accepted and mean their current scopes, so
    a route written against the first vocabulary still admits the right callers."""
    wanted = tuple(dict.fromkeys(s for name in any_of for s in LEGACY_ORDER.get(name, (name,))))

    async def dependency(caller: CallerDep) -> Caller:
        missing = missing_scope(caller.principal, *wanted)
        if missing is not None:
            raise InsufficientScope(missing)
        return caller

    return dependency
