"""One exception mapper for the libraries connectors use: requests, ssl, socket, smtplib.

Every connector wraps its network calls in :func:`map_errors` instead of writing its own
``except`` ladder, so the same library failure means the same outcome everywhere::

    from connectors._errors import http_status_error, map_errors

    with map_errors("dmp"):
        resp = session.post(url, data=body, timeout=envelope.timeout(30))
    if not 200 <= resp.status_code < 300:
        raise http_status_error("dmp", resp.status_code)

    with map_errors("mssante"):
        smtp.send_message(msg)

Mapping (most specific first; each raised ``from`` the original so the cause stays visible):

==========================================================  ===================================
certificate verification failed (expired, unknown CA,       :class:`PermanentError`
wrong host name; server or client certificate)              "TLS certificate verification failed: …"
other TLS failures (handshake, protocol)                    :class:`TransientError`
timeouts (connect or read), refused/reset connections,      :class:`TransientError`
DNS failures, broken transfers, any other ``OSError``
invalid URL / schema / header, too many redirects           :class:`PermanentError` (configuration)
SMTP 4xx reply, server disconnected, connect error          :class:`TransientError`
SMTP 5xx reply (sender, recipients, data, authentication)   :class:`PermanentError`
==========================================================  ===================================

Messages name the peer, the kind of failure and at most a status code or the TLS verification
reason: never the payload, never the peer's reply text (an SMTP ``550 <address>: unknown user``
quotes a person's address). :class:`~connectors.base.ConnectorError` raised inside the block
passes through untouched. SOAP faults are mapped by the connector that parses them.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import requests

from connectors.base import ConnectorError, PermanentError, TransientError

__all__ = ["TRANSIENT_HTTP_STATUSES", "http_status_error", "map_errors"]

TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429})

_E = TypeVar("_E", bound=BaseException)


def http_status_error(peer: str, status: int) -> ConnectorError:
    """The error for a non-2xx HTTP answer: 408/425/429/5xx transient, anything else permanent.

    The answer's body is not quoted: a peer may echo what it was sent.
    """
    if status >= 500 or status in TRANSIENT_HTTP_STATUSES:
        return TransientError(f"{peer} answered HTTP {status}")
    return PermanentError(f"{peer} refused the delivery: HTTP {status}")


def _find_cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of ``kind`` in ``exc``'s chain (causes, contexts, wrapped reasons)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 32:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo.extend(e for e in nested if isinstance(e, BaseException))
    return None


def _tls_verification_error(peer: str, exc: BaseException) -> PermanentError | None:
    verify = _find_cause(exc, ssl.SSLCertVerificationError)
    if verify is None:
        return None
    reason = verify.verify_message or verify.reason or "unknown reason"
    return PermanentError(
        f"TLS certificate verification failed: {reason} ({peer}); check the peer's certificate chain, "
        "the configured CA bundle and the client certificate's validity"
    )


def _smtp_error(peer: str, exc: smtplib.SMTPException) -> ConnectorError:
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransientError(f"{peer}: SMTP server disconnected")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({int(code) for code, _ in exc.recipients.values()})
        count = len(exc.recipients)
        if codes and all(400 <= c < 500 for c in codes):
            return TransientError(f"{peer}: SMTP {count} recipient(s) deferred ({codes})")
        return PermanentError(f"{peer}: SMTP {count} recipient(s) refused ({codes})")
    if isinstance(exc, smtplib.SMTPResponseException):  # sender, data, auth, helo, connect
        code = int(exc.smtp_code)
        what = type(exc).__name__
        if 400 <= code < 500 or code < 0 or isinstance(exc, smtplib.SMTPConnectError):
            return TransientError(f"{peer}: SMTP {code} ({what})")
        return PermanentError(f"{peer}: SMTP {code} ({what})")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentError(f"{peer}: SMTP extension not supported by the server")
    return TransientError(f"{peer}: SMTP error ({type(exc).__name__})")


def _map(peer: str, exc: BaseException) -> ConnectorError | None:
    # certificates first: requests, ssl and smtplib.starttls all surface them wrapped differently
    tls = _tls_verification_error(peer, exc)
    if tls is not None:
        return tls
    if isinstance(exc, requests.exceptions.SSLError | ssl.SSLError):
        return TransientError(f"{peer}: TLS handshake failed ({type(exc).__name__})")
    if isinstance(exc, requests.Timeout | socket.timeout | TimeoutError):
        return TransientError(f"{peer} timed out ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.InvalidSchema):
        return PermanentError(f"{peer}: invalid URL in the destination settings ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.MissingSchema | requests.exceptions.InvalidHeader):
        return PermanentError(f"{peer}: invalid request settings ({type(exc).__name__})")
    if isinstance(exc, requests.TooManyRedirects):
        return PermanentError(f"{peer}: too many redirects")
    if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        return TransientError(f"{peer} unreachable ({type(exc).__name__})")
    if isinstance(exc, requests.RequestException):
        return PermanentError(f"{peer}: request failed ({type(exc).__name__})")
    if isinstance(exc, smtplib.SMTPException):
        return _smtp_error(peer, exc)
    if isinstance(exc, socket.gaierror):
        return TransientError(f"{peer}: name resolution failed")
    if isinstance(exc, OSError):  # refused, reset, unreachable network...
        return TransientError(f"{peer} unreachable ({type(exc).__name__})")
    return None


@contextmanager
def map_errors(peer: str) -> Iterator[None]:
    """Translate library errors raised in the block into Transient/Permanent errors.

    ``peer`` names the destination in the messages (a connector or destination name, never a
    URL with credentials). Exceptions it does not know (programming errors) propagate as is.
    """
    try:
        yield
    except ConnectorError:
        raise
    except (requests.RequestException, smtplib.SMTPException, OSError) as exc:
        mapped = _map(peer, exc)
        if mapped is None:  # pragma: no cover - every branch above returns for these types
            raise
        raise mapped from exc
