"""One exception tree for the service; HTTP translation lives in gateway.api.problems.

::

    GatewayError
     ├── ValidationFailed     input does not fit (422, with field-level errors)
     ├── Forbidden            403 (authenticated, but not allowed: scope, another tenant's ESSMS)
     ├── NotFound             404
     ├── Conflict             409 (idempotency key reused with another body, state clash)
     ├── TooManyRequests      429 (an operation throttled; ``Retry-After`` says when to come back)
     ├── MappingError         a record could not be turned into a document
     ├── ConformanceFailed    a rendition failed CI-SIS/FHIR checks (report attached)
     ├── RoutingRefused       a rule forbids a destination (e.g. INS not qualified for DMP)
     └── DeliveryError
          ├── TransientDeliveryError   retry later
          └── PermanentDeliveryError   dead-letter
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Conflict",
    "ConformanceFailed",
    "DeliveryError",
    "FieldError",
    "Forbidden",
    "GatewayError",
    "MappingError",
    "NotFound",
    "PermanentDeliveryError",
    "RoutingRefused",
    "TooManyRequests",
    "TransientDeliveryError",
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


class TooManyRequests(GatewayError):
    status = 429
    title = "Too many requests"
    type_suffix = "too-many-requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, extra={"retry_after": retry_after})
        self.headers = {"Retry-After": str(retry_after)}


class MappingError(GatewayError):
    status = 422
    title = "Mapping failed"
    type_suffix = "mapping"


class ConformanceFailed(GatewayError):
    status = 422
    title = "Conformance check failed"
    type_suffix = "conformance"


class RoutingRefused(GatewayError):
    status = 422
    title = "Routing refused"
    type_suffix = "routing-refused"


class DeliveryError(GatewayError):
    title = "Delivery failed"
    type_suffix = "delivery"


class TransientDeliveryError(DeliveryError):
    pass


class PermanentDeliveryError(DeliveryError):
    pass
