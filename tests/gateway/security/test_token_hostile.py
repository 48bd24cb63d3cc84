"""Hostile input on the token endpoint and forged bearer tokens: everything is refused.

Forged tokens are built by hand (alg=none, HS256 keyed with the published public key, another
Ed25519 key under a known kid, expired, wrong audience/issuer, tampered payload), so the test
does not rely on the library under test to produce them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.runtime import Runtime
from tests.gateway.api.live import Api
from tests.gateway.api.support import bearer
from tests.gateway.security.conftest import OAuthClient
from tests.gateway.security.test_oauth import FORM, basic, token


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def segment(obj: dict[str, Any]) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


@pytest.fixture
def genuine(client: Api, oauth_client: OAuthClient) -> str:
    response = token(client, oauth_client)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _claims(genuine: str) -> dict[str, Any]:
    return dict(jwt.decode(genuine, options={"verify_signature": False}))


def _refused(client: Api, access: str) -> None:
    response = client.get("/v1/submissions", headers=bearer(access))
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "Bearer" in response.headers["www-authenticate"]


def test_the_genuine_token_works(client: Api, genuine: str) -> None:
    assert client.get("/v1/submissions", headers=bearer(genuine)).status_code == 200


def test_alg_none_is_refused(client: Api, genuine: str) -> None:
    kid = jwt.get_unverified_header(genuine)["kid"]
    claims = _claims(genuine)
    for alg in ("none", "None", "NONE"):
        _refused(client, f"{segment({'alg': alg, 'kid': kid, 'typ': 'JWT'})}.{segment(claims)}.")
    # the genuine signature kept, header switched to none
    _refused(client, f"{segment({'alg': 'none', 'kid': kid})}.{segment(claims)}.{genuine.split('.')[2]}")


def test_hs256_keyed_with_the_public_key_is_refused(client: Api, genuine: str) -> None:
    kid = jwt.get_unverified_header(genuine)["kid"]
    jwk = next(k for k in client.get("/.well-known/jwks.json").json()["keys"] if k["kid"] == kid)
    public_raw = base64.urlsafe_b64decode(jwk["x"] + "==")
    claims = _claims(genuine)
    for secret in (public_raw, jwk["x"].encode(), json.dumps(jwk).encode()):
        signing_input = f"{segment({'alg': 'HS256', 'kid': kid, 'typ': 'JWT'})}.{segment(claims)}"
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        _refused(client, f"{signing_input}.{b64(signature)}")


def test_another_key_under_a_known_kid_is_refused(client: Api, genuine: str) -> None:
    kid = jwt.get_unverified_header(genuine)["kid"]
    forged = jwt.encode(_claims(genuine), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid})
    _refused(client, forged)


def test_expired_wrong_audience_wrong_issuer_unknown_kid_missing_claims(
    client: Api, genuine: str, runtime: Runtime
) -> None:
    key = runtime.token_signer._keys[0][1]  # the real signing key: only the claims are wrong
    kid = jwt.get_unverified_header(genuine)["kid"]
    claims = _claims(genuine)
    now = int(time.time())
    cases = [
        ({**claims, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}, kid),
        ({**claims, "aud": "another-api"}, kid),
        ({**claims, "iss": "https://elsewhere.example"}, kid),
        (claims, "no-such-kid"),
        ({k: v for k, v in claims.items() if k != "exp"}, kid),
        ({**claims, "nbf": now + 3600}, kid),
    ]
    for forged_claims, forged_kid in cases:
        _refused(client, jwt.encode(forged_claims, key, algorithm="EdDSA", headers={"kid": forged_kid}))
    # the same key with correct claims is accepted: the cases above fail for their claim alone
    assert (
        client.get(
            "/v1/submissions", headers=bearer(jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid}))
        ).status_code
        == 200
    )


def test_a_tampered_payload_is_refused(client: Api, genuine: str, tenant: Any, other_tenant: Any) -> None:
    header, _payload, signature = genuine.split(".")
    claims = _claims(genuine)
    for change in ({"scope": claims["scope"] + " admin"}, {"tid": other_tenant.id}, {"exp": claims["exp"] + 86400}):
        _refused(client, f"{header}.{segment({**claims, **change})}.{signature}")
    _refused(client, genuine[:-2] + ("AA" if not genuine.endswith("AA") else "BB"))
    _refused(client, genuine + ".extra")


def test_token_endpoint_refuses_hostile_requests(client: Api, oauth_client: OAuthClient) -> None:
    ok = basic(oauth_client.client_id, oauth_client.secret)
    grant = {"grant_type": "client_credentials"}

    def error_of(response: Any, status: int) -> str:
        assert response.status_code == status, response.text
        return str(response.json()["error"])

    # huge bodies, declared or streamed
    huge = "grant_type=client_credentials&scope=" + "a" * 100_000
    assert client.post("/oauth/token", data=huge, headers=FORM | ok).status_code == 413
    big = "grant_type=client_credentials&scope=" + "a" * 5000
    assert error_of(client.post("/oauth/token", data=big, headers=FORM | ok), 413) == "invalid_request"
    many = "&".join(f"p{i}=x" for i in range(200))
    assert error_of(client.post("/oauth/token", data=many, headers=FORM | ok), 400) == "invalid_request"
    # malformed Basic credentials
    for value in (
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b":only-secret").decode(),
        "Basic " + base64.b64encode(b"only-id:").decode(),
        "Basic " + base64.b64encode("é:è".encode("latin-1")).decode(),
        "Basic",
        "Bearer " + oauth_client.secret,
        "Basic " + base64.b64encode(b"x" * 3000 + b":" + b"y" * 3000).decode()[:3000],
    ):
        response = client.post("/oauth/token", data=grant, headers=FORM | {"Authorization": value})
        assert response.status_code in (400, 401), (value[:40], response.text)
        assert response.json()["error"] in ("invalid_client", "invalid_request")
    # a client id that is not one, and an over-long secret
    for client_id, secret in (("' OR 1=1 --", oauth_client.secret), (oauth_client.client_id, "s" * 127)):
        body = {**grant, "client_id": client_id, "client_secret": secret}
        assert error_of(client.post("/oauth/token", data=body, headers=FORM), 401) == "invalid_client"
    # another client's id with this client's secret
    body = {**grant, "client_id": "00000000-0000-0000-0000-000000000000", "client_secret": oauth_client.secret}
    assert error_of(client.post("/oauth/token", data=body, headers=FORM), 401) == "invalid_client"
    # non-ASCII, broken percent-encoding, GET
    assert client.post("/oauth/token", data="grant_type=é".encode(), headers=FORM | ok).status_code == 400
    assert client.get("/oauth/token").status_code == 405
