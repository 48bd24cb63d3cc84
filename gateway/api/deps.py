"""Request dependencies: the runtime, the Session (which owns the transaction) and the caller.

The Session dependency uses FastAPI's ``function`` scope: it commits right after the route
returns and *before* the response is sent, so a ``202 Accepted`` is only ever answered for a
submission that is durably stored; any exception rolls everything back.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from gateway.api.problems import Unauthorized
from gateway.errors import Forbidden
from gateway.runtime import Runtime
from gateway.security.clients import authenticate
from gateway.storage.models import ApiClient

__all__ = [
    "ADMIN_SCOPES",
    "Caller",
    "CallerDep",
    "RuntimeDep",
    "SessionDep",
    "correlation_id",
    "get_runtime",
    "get_session",
    "require_scope",
]

_bearer = HTTPBearer(
    auto_error=False,
    description="API key of a DUI client (`dgw_…`), or the administrator token",
)


def get_runtime(request: Request) -> Runtime:
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


# What the administrator token (DUI_GATEWAY_ADMIN_TOKEN) may do: administration, never clinical
# content. It exports every tenant's audit trail (references, no identity traits) and may call
# $validate (nothing stored is read); records, renditions, DocumentReference and Binary are
# reserved to the API clients of the organisation that owns them (403 for the administrator).
ADMIN_SCOPES = frozenset({"admin", "audit"})


@dataclass(frozen=True)
class Caller:
    """Who is calling: an API client of one tenant, or the administrator (administration only)."""

    actor: str
    scopes: frozenset[str]
    client: ApiClient | None = None

    @property
    def tenant_id(self) -> str | None:
        return self.client.tenant_id if self.client is not None else None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def tenant(self) -> str:
        """The caller's tenant; the administrator has none: clinical content is not its business."""
        if self.client is None:
            raise Forbidden(
                "this operation is reserved to the API clients of an organisation: "
                "the administrator token does not read clinical content"
            )
        return self.client.tenant_id


def get_caller(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    caller = _authenticate(runtime, credentials)
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(caller.actor)  # 429 + Retry-After over the client's rate
    return caller


def _authenticate(runtime: Runtime, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    """Authenticate the bearer token: an API key, or the administrator token when configured.

    The look-up runs in its own short transaction, so the request's Session (and, on SQLite,
    the write lock) is not taken before the body has been received.
    """
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing credentials: send 'Authorization: Bearer <API key>'")
    token = credentials.credentials
    admin = runtime.settings.admin_token
    if admin is not None and hmac.compare_digest(token.encode(), admin.get_secret_value().encode()):
        return Caller(actor="admin", scopes=ADMIN_SCOPES)
    with runtime.session_factory() as session:
        client = authenticate(session, token)
        session.commit()
    if client is None:
        raise Unauthorized("invalid or revoked API key")
    return Caller(actor=f"client:{client.id}", scopes=frozenset(client.scopes.split()), client=client)


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_scope(*any_of: str) -> Callable[[Caller], Caller]:
    """A dependency that accepts callers holding at least one of these scopes."""

    def dependency(caller: CallerDep) -> Caller:
        if not caller.scopes.intersection(any_of):
            raise Forbidden(f"this operation needs the scope {' or '.join(repr(s) for s in any_of)}")
        return caller

    return dependency
