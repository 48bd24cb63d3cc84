"""Console fixtures: two tenants with submissions in various states, console users with each
role, a real OpenID Connect provider on loopback, the app served by uvicorn, and an HTTP client
that logs in through the forms like a browser would."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from sqlalchemy.orm import Session, sessionmaker

import mappings
from gateway.app import create_app
from gateway.console import accounts
from gateway.runtime import Runtime
from gateway.security.clients import add_essms, create_api_client, create_tenant
from gateway.security.crypto import KeyRing
from gateway.settings import Settings
from gateway.storage.db import session_scope
from gateway.storage.models import Receipt, Submission
from tests.gateway.api.live import LiveServer
from tests.gateway.api.support import add_outcome, note, post_note
from tests.gateway.console.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider
from tests.support.doctype import NOTE

PASSWORD = "motdepasse-solide-1"
FINESS_A, FINESS_A2, FINESS_B = "750000010", "750000036", "750000028"

CDA = """<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <code code="34133-9" displayName="Document de liaison d'urgence"/>
  <title>DLU de test</title>
  <effectiveTime value="20261130101500"/>
  <recordTarget><patientRole><patient><name><given>Jeanne</given><family>TESTPERSONNE</family></name>
  <birthTime value="19350214"/></patient></patientRole></recordTarget>
  <component><structuredBody><component><section><title>Traitements</title>
  <text><paragraph>Paracétamol 1 g <content>matin et soir</content></paragraph>
  <list><item>Allergie : pénicilline</item></list></text></section></component></structuredBody></component>
</ClinicalDocument>
""".encode()


@pytest.fixture(autouse=True)
def _note_document_type() -> Iterator[None]:
    # per test, not per session: the engine tests' own fixture unregisters the type after each of
    # theirs, which left console tests run after them (``-k`` across packages) without it
    if mappings.registry.get(NOTE.code) is None:
        mappings.register(NOTE)
        yield
        mappings.unregister(NOTE.code)
    else:
        yield


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """Console tests run on SQLite (the queries they use are the API's, tested on both backends)."""
    return sqlite_url


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProvider]:
    provider = OidcProvider()
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture
def console_settings() -> dict[str, Any]:
    """Settings a test module overrides (merged last)."""
    return {}


@pytest.fixture
def runtime(
    session_factory: sessionmaker[Session],
    keyring: KeyRing,
    oidc_provider: OidcProvider,
    console_settings: dict[str, Any],
) -> Iterator[Runtime]:
    engine = session_factory.kw["bind"]
    oidc_provider.tamper = None
    oidc_provider.subject = "sub-olive"
    values: dict[str, Any] = {
        "profile": "dev",
        "database_url": engine.url.render_as_string(hide_password=False),
        "embedded_worker": False,
        "log_level": "WARNING",
        "console_cookie_secure": False,  # the test server speaks plain HTTP on loopback
        "console_lockout_threshold": 3,
        "oidc_issuer": oidc_provider.issuer,
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret": CLIENT_SECRET,
        "oidc_label": "Fournisseur de test",
        **console_settings,
    }
    rt = Runtime(settings=Settings(**values), engine=engine, session_factory=session_factory, keyring=keyring)
    yield rt
    rt.stop_workers()


@dataclass
class World:
    tenant_a: str
    tenant_b: str
    key_a: str
    key_b: str
    # submission ids
    failed_a: str  # dead delivery to "dmp", CDA rendition, a receipt
    other_essms_a: str  # tenant A, second ESSMS
    rejected_a: str
    delivered_b: str
    dead_delivery_a: str


@pytest.fixture(scope="session")
def _server() -> Iterator[LiveServer]:
    server = LiveServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live(runtime: Runtime, _server: LiveServer) -> Iterator[str]:
    """The base URL of this test's app, served by uvicorn on 127.0.0.1."""
    _server.install(create_app(runtime))
    yield _server.base_url
    _server.install(None)


@pytest.fixture
def world(live: str, session_factory: sessionmaker[Session], keyring: KeyRing) -> World:
    """Two organisations posting through the API (black box), then the states the engine leaves."""
    with session_scope(session_factory) as session:
        a = create_tenant(session, code="og-a", name="Organisme A")
        add_essms(session, tenant_id=a.id, finess=FINESS_A, name="EHPAD A", category="500")
        add_essms(session, tenant_id=a.id, finess=FINESS_A2, name="SSIAD A", category="354")
        _, key_a = create_api_client(session, tenant_id=a.id, name="DUI A")
        b = create_tenant(session, code="og-b", name="Organisme B")
        add_essms(session, tenant_id=b.id, finess=FINESS_B, name="EHPAD B", category="500")
        _, key_b = create_api_client(session, tenant_id=b.id, name="DUI B")
        tenant_a, tenant_b = a.id, b.id

    from tests.gateway.api.live import Api

    api = Api(live)

    def post(key: str, finess: str, person: str) -> str:
        reply = post_note(api, key, note(finess, person_ref=person))
        assert reply.status_code == 202, reply.text
        return str(reply.json()["id"])

    failed_a = post(key_a, FINESS_A, "P-A-001")
    other = post(key_a, FINESS_A2, "P-A-002")
    rejected = post(key_a, FINESS_A, "P-A-003")
    delivered_b = post(key_b, FINESS_B, "P-B-001")
    api.close()
    _, dead = add_outcome(session_factory, keyring, failed_a, content=CDA, delivery_status="dead")
    add_outcome(session_factory, keyring, other, delivery_status="dead")
    add_outcome(session_factory, keyring, delivered_b, delivery_status="delivered", status="delivered")
    with session_scope(session_factory) as session:
        session.add(
            Receipt(
                id=str(uuid.uuid4()),
                delivery_id=dead,
                kind="mdn",
                outcome="failed",
                remote_id="<mdn-1@mssante.test>",
                reason="boîte aux lettres pleine",
                applied=True,
                received_at=datetime.now(UTC),
            )
        )
        sub = session.get(Submission, rejected)
        assert sub is not None
        sub.status = "rejected"
        sub.report = {
            "outcome": "rejected",
            "stage": "conformance",
            "renditions": [
                {
                    "kind": "cda",
                    "document_id": "1.2.3",
                    "ok": False,
                    "checks": [
                        {
                            "tag": "cisis:dlu",
                            "ok": False,
                            "report": {
                                "findings": [
                                    {
                                        "severity": "error",
                                        "assert_id": "DLU-ENT-012",
                                        "location": "/ClinicalDocument/author[1]",
                                        "message": "L'auteur doit avoir un identifiant RPPS",
                                    }
                                ]
                            },
                        }
                    ],
                }
            ],
        }
    return World(
        tenant_a=tenant_a,
        tenant_b=tenant_b,
        key_a=key_a,
        key_b=key_b,
        failed_a=failed_a,
        other_essms_a=other,
        rejected_a=rejected,
        delivered_b=delivered_b,
        dead_delivery_a=dead,
    )


@pytest.fixture
def users(world: World, session_factory: sessionmaker[Session], oidc_provider: OidcProvider) -> dict[str, str]:
    """username -> user id: one per role, plus tenant B's operator, a platform operator, an OIDC user."""
    out: dict[str, str] = {}
    with session_scope(session_factory) as session:

        def make(name: str, *grants: tuple[str, str, str | None], platform: bool = False, **kw: Any) -> None:
            user = accounts.create_user(
                session, username=name, display_name=name.capitalize(), actor="test", platform_operator=platform, **kw
            )
            for tenant, role, essms in grants:
                accounts.grant_role(session, user=user, tenant=tenant, role=role, essms_finess=essms, actor="test")
            out[name] = user.id

        make("lea", (world.tenant_a, "lecteur", None), password=PASSWORD)
        make("oscar", (world.tenant_a, "operateur", None), password=PASSWORD)
        make("adam", (world.tenant_a, "administrateur", None), password=PASSWORD)
        make("sophie", (world.tenant_a, "lecteur", FINESS_A2), password=PASSWORD)
        make("bruno", (world.tenant_b, "operateur", None), password=PASSWORD)
        make("paula", platform=True, password=PASSWORD)
        make(
            "olive",
            (world.tenant_a, "lecteur", None),
            oidc_issuer=oidc_provider.issuer,
            oidc_subject="sub-olive",
        )
    return out


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """requests with the console's forms: GET the form, post it back with its CSRF token."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.http = requests.Session()

    def get(self, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        return self.http.get(self.base + path, **kw)

    def post(self, path: str, data: dict[str, Any], **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 30)
        return self.http.post(self.base + path, data=data, **kw)

    def csrf(self, path: str) -> str:
        page = self.get(path)
        match = _CSRF.search(page.text)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def login(self, username: str, password: str = PASSWORD) -> requests.Response:
        token = self.csrf("/console/connexion")
        return self.post(
            "/console/connexion",
            {"csrf": token, "identifiant": username, "mot_de_passe": password, "suite": "/console/"},
        )


@pytest.fixture
def browser_for(live: str) -> Iterator[Any]:
    made: list[Browser] = []

    def make(username: str | None = None) -> Browser:
        b = Browser(live)
        made.append(b)
        if username is not None:
            reply = b.login(username)
            assert reply.status_code == 200 and "Se déconnecter" in reply.text, reply.text[:500]
        return b

    yield make
    for b in made:
        b.http.close()
