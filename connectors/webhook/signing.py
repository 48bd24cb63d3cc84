"""Standard Webhooks signatures (https://www.standardwebhooks.com), shared by the webhook
connector, the receipt source and the sandbox.

Headers: ``webhook-id`` (stable across resends of the same message), ``webhook-timestamp``
(unix seconds) and ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``,
one per current secret, space-separated, newest secret first (rotation: the receiver accepts
the message when any of them matches one of its own secrets). Secrets are ``whsec_<base64>``
(24 to 64 random bytes). Receivers refuse a timestamp more than 5 minutes old or ahead.

The HMAC and the comparison are the maintained ``standardwebhooks`` package's (MIT); this module
adds what it leaves to callers: several secrets, strict secret format, bounded hostile headers,
and one error type whose message never quotes the body or a secret.
"""

from __future__ import annotations

import base64
import binascii
import secrets as _random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from pydantic import SecretStr
from standardwebhooks import Webhook, WebhookVerificationError

__all__ = [
    "MAX_ID_LENGTH",
    "TOLERANCE_SECONDS",
    "SignatureError",
    "check_secret",
    "new_secret",
    "sign_headers",
    "verify",
]

TOLERANCE_SECONDS = 5 * 60  # the standardwebhooks package's fixed tolerance, both ways
MAX_ID_LENGTH = 256
_MAX_SIGNATURE_HEADER = 4096
_MIN_KEY_BYTES, _MAX_KEY_BYTES = 24, 64
_PREFIX = "whsec_"


class SignatureError(ValueError):
    """A message whose signature headers are missing, malformed, stale or do not match.

    ``status`` is the HTTP answer a receiver gives (401 for authentication failures, 400 for
    malformed headers); ``reason`` a short code (``missing``, ``stale``, ``mismatch``...).
    """

    def __init__(self, message: str, *, reason: str, status: int = 401) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes)."""
    return _PREFIX + base64.b64encode(_random.token_bytes(32)).decode("ascii")


def check_secret(value: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret; ``ValueError`` (without the value) otherwise."""
    if not value.startswith(_PREFIX):
        raise ValueError("a signing secret has the form whsec_<base64>")
    try:
        key = base64.b64decode(value[len(_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a signing secret has the form whsec_<base64>: the base64 part is invalid") from None
    if not _MIN_KEY_BYTES <= len(key) <= _MAX_KEY_BYTES:
        raise ValueError(f"a signing secret holds {_MIN_KEY_BYTES} to {_MAX_KEY_BYTES} random bytes")
    return key


def _webhooks(secrets: Iterable[SecretStr | str]) -> list[Webhook]:
    out = []
    for s in secrets:
        value = s.get_secret_value() if isinstance(s, SecretStr) else s
        out.append(Webhook(check_secret(value)))
    return out


def sign_headers(
    secrets: Sequence[SecretStr | str], *, msg_id: str, body: bytes, now: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``, one signature per secret (newest first)."""
    if not secrets:
        raise ValueError("signing needs at least one secret")
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    text = body.decode("utf-8")  # the package signs text; our bodies are UTF-8 JSON
    signatures = [hook.sign(msg_id, moment, text) for hook in _webhooks(secrets)]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def verify(secrets: Sequence[SecretStr | str], headers: Mapping[str, str], body: bytes) -> str:
    """Check ``body`` against its signature headers with any of ``secrets``; return the ``webhook-id``.

    Raises :class:`SignatureError`: ``missing`` (401), ``malformed`` (400), ``stale`` (401, more
    than 5 minutes off), ``mismatch`` (401, no signature matches a configured secret).
    """
    if not secrets:
        raise ValueError("verifying needs at least one secret")
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    signature = lowered.get("webhook-signature", "")
    if not (msg_id and stamp and signature):
        raise SignatureError(
            "unsigned: webhook-id, webhook-timestamp and webhook-signature are required", reason="missing"
        )
    if len(msg_id) > MAX_ID_LENGTH or not msg_id.isprintable():
        raise SignatureError(
            f"webhook-id is not a printable id of at most {MAX_ID_LENGTH} characters", reason="malformed", status=400
        )
    if len(stamp) > 12 or not stamp.isascii() or not stamp.isdigit():
        raise SignatureError("webhook-timestamp is not unix seconds", reason="malformed", status=400)
    if len(signature) > _MAX_SIGNATURE_HEADER:
        raise SignatureError("webhook-signature is too long", reason="malformed", status=400)
    now = datetime.now(UTC).timestamp()
    if abs(now - int(stamp)) > TOLERANCE_SECONDS:
        raise SignatureError("webhook-timestamp is more than 5 minutes away from now", reason="stale")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("the body is not UTF-8", reason="malformed", status=400) from None
    # keep only well-formed "v1,<base64>" entries: the package raises ValueError on the others
    offered = " ".join(
        part for part in signature.split(" ") if part.count(",") == 1 and part.startswith("v1,") and len(part) > 3
    )
    if not offered:
        raise SignatureError("webhook-signature holds no v1 signature", reason="mismatch")
    only = {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": offered}
    for hook in _webhooks(secrets):
        try:
            hook.verify(text, only, json_parse=False)
        except WebhookVerificationError as exc:
            if "timestamp" in str(exc).lower():
                raise SignatureError("webhook-timestamp is more than 5 minutes away from now", reason="stale") from None
            continue
        except (ValueError, binascii.Error):  # a signature that is not base64
            continue
        return msg_id
    raise SignatureError("no signature matches a configured secret", reason="mismatch")
