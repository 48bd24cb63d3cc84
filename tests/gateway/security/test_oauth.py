"""OAuth2 client credentials, black-box over HTTP: tokens for both client authentication methods,
scopes enforced on the routes, secret rotation without downtime, RFC 6749 §5.2 errors."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any
from urllib.parse import quote_plus

import jwt
from sqlalchemy.orm import Session, sessionmaker

from gateway.security.oauth import create_client_secret
from gateway.storage.db import session_scope
from tests.gateway.api.live import Api
from tests.gateway.api.support import audit_events, bearer, note, post_note
from tests.gateway.security.conftest import OAuthClient, make_oauth_client

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def token(api: Api, oc: OAuthClient, scope: str | None = None, *, post: bool = False) -> Any:
    form = {"grant_type": "client_credentials"}
    headers = dict(FORM)
    if scope is not None:
        form["scope"] = scope
    if post:
        form |= {"client_id": oc.client_id, "client_secret": oc.secret}
    else:
        headers |= basic(oc.client_id, oc.secret)
    return api.post("/oauth/token", data=form, headers=headers)


def test_client_secret_basic_gives_a_signed_short_lived_token_that_works(
    client: Api, tenant: Any, oauth_client: OAuthClient, session_factory: sessionmaker[Session]
) -> None:
    response = token(client, oauth_client)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 3600
    assert set(body["scope"].split()) == {"submissions:write", "submissions:read", "fhir:read"}
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "EdDSA" and header["kid"]
    jwks = client.get("/.well-known/jwks.json").json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(body["access_token"], jwt.PyJWK(key).key, algorithms=["EdDSA"], audience="dui-gateway-api")
    assert claims["sub"] == oauth_client.client_id and claims["tid"] == tenant.id
    assert claims["exp"] - claims["iat"] == body["expires_in"]

    submitted = post_note(client, body["access_token"], note(tenant.finess))
    assert submitted.status_code == 202, submitted.text
    listing = client.get("/v1/submissions", headers=bearer(body["access_token"]))
    assert listing.status_code == 200 and len(listing.json()["items"]) == 1
    [issued] = audit_events(session_factory, action="token_issued")
    assert issued.actor == f"client:{oauth_client.client_id}" and oauth_client.secret not in json.dumps(issued.detail)


def test_client_secret_post_and_a_narrower_scope(client: Api, tenant: Any, oauth_client: OAuthClient) -> None:
    response = token(client, oauth_client, "submissions:read", post=True)
    assert response.status_code == 200, response.text
    access = response.json()["access_token"]
    assert response.json()["scope"] == "submissions:read"
    assert client.get("/v1/submissions", headers=bearer(access)).status_code == 200
    refused = post_note(client, access, note(tenant.finess))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["required_scope"] == "submissions:write"
    assert "submissions:write" in refused.json()["detail"]
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    fhir = client.get("/fhir/r4/DocumentReference", headers=bearer(access))
    assert fhir.status_code == 403 and "fhir:read" in fhir.text


def test_a_scope_the_client_does_not_hold_is_invalid_scope(client: Api, oauth_client: OAuthClient) -> None:
    for scope in ("admin", "submissions:read admin", "nonsense", ""):
        response = token(client, oauth_client, scope)
        assert response.status_code == 400, (scope, response.text)
        assert response.json()["error"] == "invalid_scope"


def test_rotation_keeps_the_previous_secret_valid_until_its_expiry(
    client: Api, oauth_client: OAuthClient, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        _, second = create_client_secret(session, client_id=oauth_client.client_id, grace=timedelta(hours=1))
    new = OAuthClient(oauth_client.client_id, second, oauth_client.tenant_id)
    assert token(client, oauth_client).status_code == 200  # the old one, during the grace period
    assert token(client, new).status_code == 200
    with session_scope(session_factory) as session:
        _, third = create_client_secret(session, client_id=oauth_client.client_id, grace=timedelta(0))
    newest = OAuthClient(oauth_client.client_id, third, oauth_client.tenant_id)
    assert token(client, oauth_client).status_code == 401  # two rotations ago: revoked
    assert token(client, new).status_code == 401  # grace 0: expired now
    assert token(client, newest).status_code == 200


def test_errors_are_rfc6749_json(client: Api, oauth_client: OAuthClient, tenant: Any) -> None:
    def check(response: Any, status: int, error: str) -> None:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"] == error
        assert response.headers["cache-control"] == "no-store"

    ok = basic(oauth_client.client_id, oauth_client.secret)
    post = client.post
    check(post("/oauth/token", data={"grant_type": "password"}, headers=FORM | ok), 400, "unsupported_grant_type")
    check(post("/oauth/token", data={"grant_type": "authorization_code"}, headers=FORM | ok), 400,
          "unsupported_grant_type")  # fmt: skip
    check(post("/oauth/token", data={}, headers=FORM | ok), 400, "invalid_request")
    check(post("/oauth/token", data="grant_type=client_credentials&grant_type=client_credentials",
               headers=FORM | ok), 400, "invalid_request")  # fmt: skip
    check(post("/oauth/token", json={"grant_type": "client_credentials"}, headers=ok), 400, "invalid_request")
    check(post("/oauth/token", data={"grant_type": "client_credentials"}, headers=FORM), 401, "invalid_client")
    wrong = basic(oauth_client.client_id, oauth_client.secret[:-1] + ("A" if oauth_client.secret[-1] != "A" else "B"))
    response = post("/oauth/token", data={"grant_type": "client_credentials"}, headers=FORM | wrong)
    check(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")
    # both methods at once
    both = {"grant_type": "client_credentials", "client_id": oauth_client.client_id, "client_secret": "x"}
    check(post("/oauth/token", data=both, headers=FORM | ok), 400, "invalid_request")
    # the static API key is not a client secret
    check(post("/oauth/token", data={"grant_type": "client_credentials"},
               headers=FORM | basic(tenant.client_id, tenant.api_key)), 401, "invalid_client")  # fmt: skip


def test_a_revoked_client_loses_its_tokens_at_once(
    client: Api, tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    oc = make_oauth_client(session_factory, tenant.id)
    access = token(client, oc).json()["access_token"]
    assert client.get("/v1/submissions", headers=bearer(access)).status_code == 200
    from gateway.storage.models import ApiClient

    with session_scope(session_factory) as session:
        row = session.get(ApiClient, oc.client_id)
        assert row is not None
        row.active = False
    assert client.get("/v1/submissions", headers=bearer(access)).status_code == 401
    assert token(client, oc).status_code == 401
