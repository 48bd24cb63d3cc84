"""One mapper from smtplib/imaplib/ssl/socket failures to the connector error tree.

Most specific first, always ``raise ... from``. Messages carry no personal data: server texts
are quoted only after :func:`redact` (a relay may echo the person's mailbox, whose local part is
the INS).
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from connectors.base import PermanentError, TransientError

__all__ = ["map_mail_errors", "redact"]

_PATIENT_BOX = re.compile(r"[^\s<>\"'@,;:]+@patient\.mssante\.fr", re.IGNORECASE)
_LONG_NUMBER = re.compile(r"\d{13,}")
_MAX_TEXT = 300

_CERT_REFUSED = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "ACCESS_DENIED",
)


def redact(text: str | bytes) -> str:
    """Server text fit for logs and audit: decoded, person's mailbox and long numbers masked, bounded."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = _PATIENT_BOX.sub("***@patient.mssante.fr", text)
    text = _LONG_NUMBER.sub("***", text)
    text = " ".join(text.split())
    return text[:_MAX_TEXT]


def _reply(code: int, text: str | bytes, what: str) -> Exception:
    detail = f"{what}: {code} {redact(text)}".strip()
    if 400 <= code < 500:
        return TransientError(f"mail server deferred {detail}")
    return PermanentError(f"mail server refused {detail}")


@contextmanager
def map_mail_errors(peer: str) -> Iterator[None]:
    """Translate what happens while talking to ``peer`` ("SMTP relay", "IMAP server")."""
    try:
        yield
    except (TransientError, PermanentError):
        raise
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        first_code, first_text = next(iter(exc.recipients.values()), (550, b""))
        worst = next((c for c in codes if c >= 500), first_code)
        text = next((t for c, t in exc.recipients.values() if c == worst), first_text)
        raise _reply(worst, text, f"{len(codes)} recipient(s)") from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentError(f"{peer} does not support a required extension: {redact(str(exc))}") from exc
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code == -1:  # smtplib's "no reply" marker: the connection broke
            raise TransientError(f"{peer} closed the connection") from exc
        raise _reply(exc.smtp_code, exc.smtp_error, peer) from exc
    except smtplib.SMTPServerDisconnected as exc:
        raise TransientError(f"{peer} closed the connection") from exc
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(
            f"TLS: the certificate of the {peer} could not be verified ({exc.verify_message}); "
            "check ca_bundle and the host name in the settings"
        ) from exc
    except ssl.SSLError as exc:
        reason = str(exc.reason or "")
        if any(marker in reason for marker in _CERT_REFUSED):
            raise PermanentError(
                f"TLS: the {peer} refused the ESSMS client certificate ({reason}); "
                "check the IGC-Santé certificate registered with the MSSanté operator"
            ) from exc
        raise TransientError(f"TLS failure with the {peer} ({reason or type(exc).__name__})") from exc
    except smtplib.SMTPException as exc:
        raise TransientError(f"{peer} error: {type(exc).__name__}") from exc
    except TimeoutError as exc:
        raise TransientError(f"{peer} timed out") from exc
    except OSError as exc:
        raise TransientError(f"{peer} unreachable: {type(exc).__name__}") from exc
