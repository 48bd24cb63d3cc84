"""One exception tree for the service; HTTP translation lives in gateway.api.problems.

Handlers are looked up by base class, so a new error only needs the right parent::

    GatewayError                 500 unless a subclass says otherwise (status, title, type_suffix)
     ├── ValidationFailed        422 input does not fit, with field-level errors (JSON pointers)
     ├── Forbidden               403 authenticated, but not allowed (scope, another tenant's ESSMS)
     │    └── InsufficientScope  403 (gateway.api.deps) naming the scope the token lacks
     ├── NotFound                404
     ├── Conflict                409 idempotency key reused with another body, state clash
     ├── TooManyRequests         429 an operation throttled; ``Retry-After`` says when to come back
     ├── ServiceUnavailable      503 the gateway cannot take work now (queue full, database saturated);
     │    │                          ``Retry-After``; nothing was stored
     │    └── AuditNotSettled    503 (gateway.audit.horizon) audit appends in flight did not end
     │                               within an audit reader's wait: read again after ``Retry-After``
     ├── DecryptionError         500 stored data does not authenticate (security.crypto); the API
     │    │                          shows a fixed detail, str() keeps the operator's diagnostic
     │    └── KeyUnavailable     500 the key is not loaded here (configuration): work is held, not failed
     └── (gateway.api.problems)  Unauthorized 401, InvalidJson 400, PayloadTooLarge 413,
                                 UnsupportedMediaType 415: HTTP-level refusals of the API layer

Outside the tree, on purpose:

- ``gateway.conformance.GateUnavailable``: an internal signal between the conformance gate and the
  pipeline (the gate cannot run: hold the submission, retry later); it never leaves the worker.
- ``gateway.routing.RoutingConfigError`` (a ``ValueError``): a routing file or connector settings
  refused at start-up, before any request exists; the CLI prints it and exits. So are
  ``gateway.delivery.engine.ConnectorPolicyError`` (a connector that cannot honour the send
  deadline) and ``gateway.credentials.CredentialsError`` (an unreadable credentials file or entry).
- ``gateway.inbound.InboundTooLarge`` (a ``ValueError``): raised to an inbound source by its sink;
  the HTTP route answers 413, a listener refuses the message to its peer.
- ``gateway.delivery.engine._Unpreparable``: internal to the engine (defer or dead-letter).
- ``gateway.api.oauth._OAuthError``: the token endpoint answers RFC 6749 §5.2 JSON errors
  (``{"error": "invalid_client"}``), which OAuth client libraries read, not problem documents;
  it never leaves that route.
- ``gateway.security.oauth.InvalidToken``: a bearer JWT refused; the request dependency turns it
  into ``Unauthorized`` (401) without its reason, which only logs may see.
- ``gateway.console.oidc.OidcError``: an OpenID Connect provider's answer the console cannot trust
  (bad token, refused exchange); the console answers its own 401 page, never a problem document.
- ``gateway.storage.db.NestedWriteTransaction`` (a ``RuntimeError``): a programming error caught
  by the SQLite engine (a write transaction inside another of the same flow of control, or on the
  API's event loop); a 500 like any bug, never an answer to a client's input.
- ``gateway.console.routes.Stop``: internal to the console's routes, carrying the HTML response
  (login redirect, 403/404 page) to send instead of the page.

Errors of the libraries stay theirs (they never import ``gateway``): ``mappings.MappingFailed``
(a record that cannot become a document: rejected), ``ci_sis``/``profiles.ValidationRunError``
(a validator that cannot run: held), ``connectors`` ``TransientError``/``PermanentError`` (retry /
dead-letter, decided by the delivery engine). The gateway translates them where it calls them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Conflict",
    "FieldError",
    "Forbidden",
    "GatewayError",
    "NotFound",
    "ServiceUnavailable",
    "TooManyRequests",
    "ValidationFailed",
]


@dataclass(frozen=True)
class FieldError:
    """One field-level problem: JSON pointer into the request body and a message."""

    pointer: str
    message: str
    code: str = "invalid"


class GatewayError(Exception):
    status: int = 500
    title: str = "Internal error"
    type_suffix: str = "internal"

    def __init__(self, detail: str = "", *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra or {}


class ValidationFailed(GatewayError):
    status = 422
    title = "Validation failed"
    type_suffix = "validation"

    def __init__(self, detail: str, errors: Sequence[FieldError] = (), *, status: int = 422) -> None:
        super().__init__(detail)
        self.errors = list(errors)
        self.status = status


class Forbidden(GatewayError):
    status = 403
    title = "Forbidden"
    type_suffix = "forbidden"


class NotFound(GatewayError):
    status = 404
    title = "Not found"
    type_suffix = "not-found"


class Conflict(GatewayError):
    status = 409
    title = "Conflict"
    type_suffix = "conflict"


class ServiceUnavailable(GatewayError):
    status = 503
    title = "Service unavailable"
    type_suffix = "unavailable"

    def __init__(self, detail: str, *, retry_after: int, type_suffix: str | None = None) -> None:
        super().__init__(detail, extra={"retry_after": retry_after})
        self.headers = {"Retry-After": str(retry_after)}
        if type_suffix is not None:
            self.type_suffix = type_suffix


class TooManyRequests(GatewayError):
    status = 429
    title = "Too many requests"
    type_suffix = "too-many-requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, extra={"retry_after": retry_after})
        self.headers = {"Retry-After": str(retry_after)}
