"""Console sessions: a signed cookie (HMAC-SHA256), HttpOnly, SameSite=Strict, Secure unless
turned off for plain-HTTP development, and a CSRF token bound to it.

The cookie holds no secret of its own: ``{"n": nonce, "u": user id or null, "e": the user's
session epoch, "x": expiry}``. Every visitor gets one (anonymous until login), so the login
form carries a CSRF token too; logging in issues a new nonce (no session fixation). Bumping a
user's ``session_epoch`` (password change, role revoked) ends their open sessions.

The CSRF token is HMAC(secret, "csrf:" + nonce): a form posted from another site has neither
the cookie (SameSite=Strict) nor the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from gateway.security.crypto import parse_key_spec
from gateway.settings import Settings

__all__ = ["COOKIE", "SessionData", "SessionSigner"]

COOKIE = "dgw_console"


@dataclass(frozen=True)
class SessionData:
    nonce: str
    user_id: str | None
    epoch: int
    expires: int

    @classmethod
    def anonymous(cls, lifetime: int) -> SessionData:
        return cls(nonce=secrets.token_urlsafe(18), user_id=None, epoch=0, expires=int(time.time()) + lifetime)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    def __init__(self, secret: bytes, *, lifetime: int, secure: bool) -> None:
        self._secret = secret
        self.lifetime = lifetime
        self.secure = secure

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionSigner:
        if settings.console_secret is not None:
            secret = settings.console_secret.get_secret_value().encode()
        else:  # derived, so a deployment needs no extra secret; distinct from any data key use
            master = parse_key_spec(settings.master_keys.get_secret_value())[0][1]
            secret = hmac.new(master, b"dui-gateway console session v1", hashlib.sha256).digest()
        return cls(secret, lifetime=settings.console_session_seconds, secure=settings.console_cookie_secure)

    def _mac(self, message: bytes) -> str:
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest())

    def dump(self, data: SessionData) -> str:
        body = _b64(json.dumps({"n": data.nonce, "u": data.user_id, "e": data.epoch, "x": data.expires}).encode())
        return f"{body}.{self._mac(body.encode())}"

    def load(self, value: str | None) -> SessionData | None:
        if not value or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(body.encode())):
            return None
        try:
            doc: Any = json.loads(_unb64(body))
            data = SessionData(nonce=str(doc["n"]), user_id=doc["u"], epoch=int(doc["e"]), expires=int(doc["x"]))
        except (ValueError, KeyError, TypeError):
            return None
        if data.expires < time.time() or (data.user_id is not None and not isinstance(data.user_id, str)):
            return None
        return data

    def csrf_token(self, data: SessionData) -> str:
        return self._mac(f"csrf:{data.nonce}".encode())

    def check_csrf(self, data: SessionData | None, token: str | None) -> bool:
        return data is not None and bool(token) and hmac.compare_digest(self.csrf_token(data), str(token))

    def sign(self, purpose: str, payload: dict[str, Any]) -> str:
        """A short signed value for another purpose (the OpenID Connect state cookie)."""
        body = _b64(json.dumps({"p": purpose, **payload}).encode())
        return f"{body}.{self._mac(body.encode())}"

    def unsign(self, purpose: str, value: str | None) -> dict[str, Any] | None:
        if not value or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(body.encode())):
            return None
        try:
            doc = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(doc, dict) or doc.get("p") != purpose:
            return None
        return doc
