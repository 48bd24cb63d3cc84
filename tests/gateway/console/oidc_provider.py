"""A small, real OpenID Connect provider on loopback for the console's login tests.

Discovery, JWKS (an RSA key made at start), authorization endpoint (no login form: it issues a
code for :attr:`OidcProvider.subject`, as a provider would after the user signed in), token
endpoint (authorization code + PKCE S256 checked, client secret checked), RS256 ID tokens with
the nonce. Tests can make it misbehave (:attr:`tamper`) to check the console refuses it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from joserfc import jwt
from joserfc.jwk import RSAKey

CLIENT_ID = "dui-gateway-console"
CLIENT_SECRET = "console-client-secret-for-tests"


class OidcProvider:
    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key-1", "use": "sig", "alg": "RS256"})
        self.subject = "sub-olive"
        self.name = "Olive Dupont"
        self.tamper: str | None = None  # "nonce", "audience", "signature", "expired"
        self.codes: dict[str, dict[str, Any]] = {}
        self.token_requests: list[dict[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _id_token(self, nonce: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": CLIENT_ID if self.tamper != "audience" else "someone-else",
            "iat": now,
            "exp": now + 300 if self.tamper != "expired" else now - 3600,
            "nonce": nonce if self.tamper != "nonce" else "another-nonce",
            "name": self.name,
        }
        key = self.key if self.tamper != "signature" else RSAKey.generate_key(2048, parameters={"kid": "test-key-1"})
        return jwt.encode({"alg": "RS256", "kid": "test-key-1"}, claims, key)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/.well-known/openid-configuration":
                    self._json(
                        200,
                        {
                            "issuer": provider.issuer,
                            "authorization_endpoint": f"{provider.issuer}/authorize",
                            "token_endpoint": f"{provider.issuer}/token",
                            "jwks_uri": f"{provider.issuer}/jwks",
                            "response_types_supported": ["code"],
                            "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["RS256"],
                            "code_challenge_methods_supported": ["S256"],
                        },
                    )
                elif url.path == "/jwks":
                    self._json(200, {"keys": [provider.key.as_dict(private=False)]})
                elif url.path == "/authorize":
                    q = {k: v[0] for k, v in parse_qs(url.query).items()}
                    if (
                        q.get("client_id") != CLIENT_ID
                        or q.get("response_type") != "code"
                        or q.get("code_challenge_method") != "S256"
                        or not q.get("code_challenge")
                    ):
                        self._json(400, {"error": "invalid_request"})
                        return
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = {
                        "challenge": q["code_challenge"],
                        "nonce": q.get("nonce", ""),
                        "redirect_uri": q["redirect_uri"],
                    }
                    self.send_response(302)
                    self.send_header(
                        "Location", f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}"
                    )
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                provider.token_requests.append(form)
                if urlparse(self.path).path != "/token":
                    self._json(404, {"error": "not_found"})
                    return
                grant = provider.codes.pop(form.get("code", ""), None)
                if grant is None or form.get("grant_type") != "authorization_code":
                    self._json(400, {"error": "invalid_grant"})
                    return
                if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                    self._json(401, {"error": "invalid_client"})
                    return
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if challenge != grant["challenge"] or form.get("redirect_uri") != grant["redirect_uri"]:
                    self._json(400, {"error": "invalid_grant", "error_description": "PKCE or redirect_uri"})
                    return
                self._json(
                    200,
                    {
                        "access_token": secrets.token_urlsafe(16),
                        "token_type": "Bearer",
                        "expires_in": 300,
                        "id_token": provider._id_token(grant["nonce"]),
                    },
                )

        return Handler
