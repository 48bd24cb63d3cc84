"""The console over real HTTP (no browser): login, lockout, CSRF, roles, tenant isolation,
audited reads, actions through the operations service, offline API docs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.storage.models import AuditEvent, Delivery, User
from tests.gateway.console.conftest import FINESS_A2, PASSWORD, World


def _events(session_factory: sessionmaker[Session], **where: Any) -> list[AuditEvent]:
    with session_factory() as session:
        stmt = select(AuditEvent).order_by(AuditEvent.seq)
        for name, value in where.items():
            stmt = stmt.where(getattr(AuditEvent, name) == value)
        return list(session.scalars(stmt))


def test_pages_need_a_session(browser_for: Any, users: dict[str, str]) -> None:
    b = browser_for()
    reply = b.get("/console/flux", allow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"].startswith("/console/connexion?suite=%2Fconsole%2Fflux")
    assert b.get("/console/api/compteurs").status_code == 401


def test_login_page_is_french_and_sets_a_strict_httponly_cookie(live: str, runtime: Any, users: Any) -> None:
    import requests

    reply = requests.get(live + "/console/connexion", timeout=30)
    assert reply.status_code == 200
    assert '<html lang="fr">' in reply.text
    assert '<label for="identifiant">' in reply.text and '<label for="mot_de_passe">' in reply.text
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert "default-src 'self'" in reply.headers["content-security-policy"]


def test_cookie_is_secure_by_default(session_factory: Any, keyring: Any) -> None:
    from gateway.console.session import SessionSigner
    from gateway.settings import Settings

    assert SessionSigner.from_settings(Settings(profile="dev")).secure is True


def test_local_login_and_logout(browser_for: Any, users: dict[str, str], session_factory: Any) -> None:
    b = browser_for()
    reply = b.login("lea")
    assert reply.status_code == 200 and "Flux de documents" in reply.text
    assert _events(session_factory, action="logged_in", entity_id=users["lea"])
    stolen = b.http.cookies.get("dgw_console")
    token = b.csrf("/console/flux")
    out = b.post("/console/deconnexion", {"csrf": token}, allow_redirects=False)
    assert out.status_code == 303
    assert b.get("/console/flux", allow_redirects=False).status_code == 303
    replayed = browser_for()
    replayed.http.cookies.set("dgw_console", stolen, path="/console")
    assert replayed.get("/console/flux", allow_redirects=False).status_code == 303  # a copied cookie ended too
    assert _events(session_factory, action="logged_out", entity_id=users["lea"])


def test_wrong_password_is_refused(browser_for: Any, users: dict[str, str]) -> None:
    b = browser_for()
    reply = b.login("lea", "not-the-password")
    assert reply.status_code == 401
    assert "Identifiant ou mot de passe incorrect" in reply.text
    unknown = b.login("nobody", "whatever-password")
    assert unknown.status_code == 401 and "Identifiant ou mot de passe incorrect" in unknown.text


def test_lockout_after_repeated_failures(browser_for: Any, users: dict[str, str], session_factory: Any) -> None:
    b = browser_for()
    for _ in range(3):  # console_lockout_threshold=3 in these tests
        assert b.login("oscar", "wrong-password-123").status_code == 401
    locked = b.login("oscar")  # the right password, too late
    assert locked.status_code == 401
    assert "verrouillé" in locked.text
    assert _events(session_factory, action="locked_out", entity_id=users["oscar"])
    # another user is not affected
    assert browser_for().login("lea").status_code == 200


def test_csrf_token_is_required(browser_for: Any, users: dict[str, str], world: World) -> None:
    anon = browser_for()
    anon.get("/console/connexion")
    no_token = anon.post("/console/connexion", {"identifiant": "lea", "mot_de_passe": PASSWORD})
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    b = browser_for("oscar")
    form = {"action": "retry", "envoi": world.dead_delivery_a, "confirmation": "oui"}
    bad = b.post(f"/console/flux/{world.failed_a}/actions?t={world.tenant_a}", {**form, "csrf": "forged"})
    assert bad.status_code == 403
    other = browser_for("lea").csrf("/console/flux")  # a token of another session
    assert (
        b.post(f"/console/flux/{world.failed_a}/actions?t={world.tenant_a}", {**form, "csrf": other}).status_code == 403
    )


def test_flows_list_filters_and_counts(browser_for: Any, users: dict[str, str], world: World) -> None:
    b = browser_for("lea")
    page = b.get(f"/console/flux?t={world.tenant_a}")
    assert world.failed_a in page.text and world.rejected_a in page.text
    assert world.delivered_b not in page.text
    only = b.get(f"/console/flux?t={world.tenant_a}&statut=rejected")
    assert world.rejected_a in only.text and world.failed_a not in only.text
    by_essms = b.get(f"/console/flux?t={world.tenant_a}&essms={FINESS_A2}")
    assert world.other_essms_a in by_essms.text and world.failed_a not in by_essms.text
    by_person = b.get(f"/console/flux?t={world.tenant_a}&q=P-A-003")
    assert world.rejected_a in by_person.text and world.failed_a not in by_person.text
    by_destination = b.get(f"/console/flux?t={world.tenant_a}&destination=dmp")
    assert world.failed_a in by_destination.text and world.rejected_a not in by_destination.text
    counts = b.get(f"/console/api/compteurs?t={world.tenant_a}").json()
    assert counts["counts"]["failed"] == 2 and counts["counts"]["rejected"] == 1 and counts["total"] == 3


def test_detail_shows_attempts_receipts_and_is_an_audited_read(
    browser_for: Any, users: dict[str, str], world: World, session_factory: Any
) -> None:
    b = browser_for("lea")
    page = b.get(f"/console/flux/{world.failed_a}?t={world.tenant_a}")
    assert page.status_code == 200
    assert "HTTP 503 from peer" in page.text and "&lt;mdn-1@mssante.test&gt;" in page.text
    assert "boîte aux lettres pleine" in page.text
    reads = _events(session_factory, action="read", actor=f"user:{users['lea']}")
    assert [e.entity_id for e in reads] == [world.failed_a]
    doc = b.get(f"/console/flux/{world.failed_a}/document/note?t={world.tenant_a}")
    assert doc.status_code == 200
    assert "Paracétamol 1 g" in doc.text and "TESTPERSONNE" in doc.text and "Traitements" in doc.text
    reads = _events(session_factory, action="read", actor=f"user:{users['lea']}")
    assert reads[-1].entity_type == "rendition" and reads[-1].detail["submission_id"] == world.failed_a


def test_rejected_shows_the_conformance_report(browser_for: Any, users: dict[str, str], world: World) -> None:
    page = browser_for("lea").get(f"/console/flux/{world.rejected_a}?t={world.tenant_a}")
    assert "DLU-ENT-012" in page.text and "/ClinicalDocument/author[1]" in page.text


def test_lecteur_cannot_act_operateur_can_with_confirmation(
    browser_for: Any, users: dict[str, str], world: World, session_factory: Any
) -> None:
    reader = browser_for("lea")
    detail = reader.get(f"/console/flux/{world.failed_a}?t={world.tenant_a}")
    assert "Relancer cet envoi" not in detail.text
    token = reader.csrf("/console/flux")
    form = {"action": "retry", "envoi": world.dead_delivery_a, "confirmation": "oui", "csrf": token}
    assert reader.post(f"/console/flux/{world.failed_a}/actions?t={world.tenant_a}", form).status_code == 403
    op = browser_for("oscar")
    assert "Relancer cet envoi" in op.get(f"/console/flux/{world.failed_a}?t={world.tenant_a}").text
    token = op.csrf(
        f"/console/flux/{world.failed_a}/confirmer?t={world.tenant_a}&action=retry&envoi={world.dead_delivery_a}"
    )
    unconfirmed = {"action": "retry", "envoi": world.dead_delivery_a, "csrf": token}
    assert op.post(f"/console/flux/{world.failed_a}/actions?t={world.tenant_a}", unconfirmed).status_code == 400
    done = op.post(f"/console/flux/{world.failed_a}/actions?t={world.tenant_a}", {**unconfirmed, "confirmation": "oui"})
    assert done.status_code == 200 and "enregistrée" in done.text
    with session_factory() as session:
        delivery = session.get(Delivery, world.dead_delivery_a)
        assert delivery is not None and delivery.status == "pending"
    retried = _events(session_factory, action="retried")
    assert retried and retried[-1].actor == f"user:{users['oscar']}"


def test_bulk_retry_of_dead_letters(
    browser_for: Any, users: dict[str, str], world: World, session_factory: Any
) -> None:
    op = browser_for("oscar")
    page = op.get(f"/console/lettres-mortes?t={world.tenant_a}")
    assert page.text.count('name="envoi"') == 2
    with session_factory() as session:
        dead = list(
            session.scalars(select(Delivery.id).where(Delivery.status == "dead", Delivery.tenant_id == world.tenant_a))
        )
    token = op.csrf(f"/console/lettres-mortes?t={world.tenant_a}")
    reply = op.post(
        f"/console/lettres-mortes/relancer?t={world.tenant_a}", {"csrf": token, "envoi": dead, "confirmation": "oui"}
    )
    assert reply.status_code == 200 and "2 envoi(s) relancé(s)" in reply.text
    assert len(_events(session_factory, action="retried")) == 2


def test_administrator_reads_audit_but_no_clinical_content(
    browser_for: Any, users: dict[str, str], world: World, session_factory: Any
) -> None:
    browser_for("lea").get(f"/console/flux/{world.failed_a}/document/note?t={world.tenant_a}")
    admin = browser_for("adam")
    for path in (
        f"/console/flux?t={world.tenant_a}",
        f"/console/flux/{world.failed_a}?t={world.tenant_a}",
        f"/console/flux/{world.failed_a}/document/note?t={world.tenant_a}",
        f"/console/lettres-mortes?t={world.tenant_a}",
    ):
        reply = admin.get(path)
        assert reply.status_code == 403, path
        assert "P-A-001" not in reply.text
    audit = admin.get(f"/console/audit?t={world.tenant_a}&action=read")
    assert audit.status_code == 200
    assert "lea" in audit.text and "rendition " in audit.text and world.failed_a in audit.text
    assert not _events(session_factory, action="read", actor=f"user:{users['adam']}")
    assert browser_for("lea").get(f"/console/audit?t={world.tenant_a}").status_code == 403


def test_essms_restricted_reader(browser_for: Any, users: dict[str, str], world: World) -> None:
    b = browser_for("sophie")
    page = b.get(f"/console/flux?t={world.tenant_a}")
    assert world.other_essms_a in page.text and world.failed_a not in page.text
    assert b.get(f"/console/flux/{world.failed_a}?t={world.tenant_a}").status_code == 404
    assert b.get(f"/console/api/compteurs?t={world.tenant_a}").json()["total"] == 1


def test_tenant_isolation(browser_for: Any, users: dict[str, str], world: World, session_factory: Any) -> None:
    b = browser_for("bruno")  # operator of tenant B
    own = b.get("/console/flux")
    assert world.delivered_b in own.text and world.failed_a not in own.text
    missing = b.get(f"/console/flux/{uuid_like()}?t={world.tenant_b}")
    probes = [
        b.get(f"/console/flux?t={world.tenant_a}"),
        b.get(f"/console/flux/{world.failed_a}?t={world.tenant_a}"),
        b.get(f"/console/flux/{world.failed_a}?t={world.tenant_b}"),
        b.get(f"/console/flux/{world.failed_a}/document/note?t={world.tenant_b}"),
        b.get(f"/console/lettres-mortes?t={world.tenant_a}"),
        b.get(f"/console/api/compteurs?t={world.tenant_a}"),
        b.get(f"/console/tableau-de-bord?t={world.tenant_a}"),
    ]
    for reply in probes:  # the same answer as an id that does not exist: nothing to infer
        assert reply.status_code == 404, reply.url
        assert "P-A-" not in reply.text and world.failed_a not in reply.text
    assert missing.status_code == 404
    assert b.get(f"/console/api/compteurs?t={world.tenant_b}").json()["total"] == 1
    # acting on tenant A's delivery from tenant B's context
    token = b.csrf("/console/flux")
    form = {"action": "retry", "envoi": world.dead_delivery_a, "confirmation": "oui", "csrf": token}
    assert b.post(f"/console/flux/{world.delivered_b}/actions?t={world.tenant_b}", form).status_code == 404
    assert (
        b.post(
            f"/console/lettres-mortes/relancer?t={world.tenant_b}",
            {"csrf": token, "envoi": world.dead_delivery_a, "confirmation": "oui"},
        ).status_code
        == 409
    )
    with session_factory() as session:
        delivery = session.get(Delivery, world.dead_delivery_a)
        assert delivery is not None and delivery.status == "dead"
    dash = b.get("/console/tableau-de-bord")
    assert '<span class="kpi">1</span> soumissions en 24 h' in dash.text


def uuid_like() -> str:
    import uuid

    return str(uuid.uuid4())


def test_platform_operator_sees_metrics_of_every_tenant_never_documents(
    browser_for: Any, users: dict[str, str], world: World
) -> None:
    p = browser_for("paula")
    dash = p.get("/console/tableau-de-bord")
    assert dash.status_code == 200 and "tous les organismes" in dash.text
    assert '<span class="kpi">4</span> soumissions en 24 h' in dash.text
    assert "<svg" in dash.text and "P-A-" not in dash.text and "P-B-" not in dash.text
    assert p.get("/console/connecteurs").status_code == 200
    assert p.get("/console/flux").status_code == 403
    assert p.get(f"/console/flux/{world.failed_a}?t={world.tenant_a}").status_code == 404


def test_oidc_login(browser_for: Any, users: dict[str, str], oidc_provider: Any, session_factory: Any) -> None:
    b = browser_for()
    assert "Se connecter avec Fournisseur de test" in b.get("/console/connexion").text
    reply = b.get("/console/oidc/connexion?suite=/console/flux")
    assert reply.status_code == 200 and "Flux de documents" in reply.text, reply.text[:300]
    exchange = oidc_provider.token_requests[-1]
    assert exchange["code_verifier"] and exchange["grant_type"] == "authorization_code"
    logins = _events(session_factory, action="logged_in", entity_id=users["olive"])
    assert logins and logins[-1].detail["method"] == "oidc"


def test_oidc_refuses_bad_tokens_and_unknown_subjects(
    browser_for: Any, users: dict[str, str], oidc_provider: Any
) -> None:
    for tamper in ("nonce", "audience", "signature", "expired"):
        oidc_provider.tamper = tamper
        reply = browser_for().get("/console/oidc/connexion")
        assert reply.status_code == 401, tamper
        assert "Se déconnecter" not in reply.text
    oidc_provider.tamper = None
    oidc_provider.subject = "sub-nobody"
    reply = browser_for().get("/console/oidc/connexion")
    assert reply.status_code == 403 and "aucun compte" in reply.text


def test_oidc_callback_needs_the_state_it_issued(browser_for: Any, users: dict[str, str]) -> None:
    b = browser_for()
    assert b.get("/console/oidc/retour?code=x&state=y").status_code == 401


def test_password_change_ends_open_sessions(browser_for: Any, users: dict[str, str], session_factory: Any) -> None:
    from gateway.console import accounts
    from gateway.storage.db import session_scope

    b = browser_for("lea")
    with session_scope(session_factory) as session:
        user = session.get(User, users["lea"])
        assert user is not None
        accounts.set_password(session, user=user, password="un-autre-mot-de-passe", actor="test")
    assert b.get("/console/flux", allow_redirects=False).status_code == 303


def test_api_docs_are_served_without_a_cdn(live: str) -> None:
    import requests

    docs = requests.get(live + "/docs", timeout=30).text
    redoc = requests.get(live + "/redoc", timeout=30).text
    for page in (docs, redoc):
        assert "cdn." not in page and "fonts.googleapis" not in page
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "/docs-assets/redoc.standalone.js" in redoc
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        reply = requests.get(f"{live}/docs-assets/{asset}", timeout=30)
        assert reply.status_code == 200 and len(reply.content) > 100_000


def test_inbound_messages_left_aside_are_listed_per_tenant(
    browser_for: Any, users: dict[str, str], world: World, session_factory: Any, keyring: Any
) -> None:
    import uuid
    from datetime import UTC, datetime

    from gateway.security.crypto import encrypt
    from gateway.storage.db import session_scope
    from gateway.storage.models import InboundMessage

    with session_scope(session_factory) as session:
        for tenant, source, note_text in (
            (world.tenant_a, "mllp-a", "no person matches PID-3"),
            (world.tenant_b, "mllp-b", "secret-of-b"),
        ):
            mid = str(uuid.uuid4())
            ct, key_id = encrypt(session, tenant_id=tenant, plaintext=b"MSH|...", keyring=keyring, aad=mid.encode())
            session.add(
                InboundMessage(
                    id=mid,
                    source=source,
                    tenant_id=tenant,
                    external_id=mid,
                    media_type="application/hl7-v2",
                    content_ct=ct,
                    data_key_id=key_id,
                    size=7,
                    status="held",
                    note=note_text,
                    received_at=datetime.now(UTC),
                )
            )
    page = browser_for("lea").get(f"/console/entrants?t={world.tenant_a}")
    assert "no person matches PID-3" in page.text and "mllp-a" in page.text
    assert "secret-of-b" not in page.text and "mllp-b" not in page.text


def test_documents_are_rendered_without_their_markup() -> None:
    import json

    from gateway.console.render import render_document

    cda = (
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>T</title><component><structuredBody><component><section>'
        b'<title>S</title><text><paragraph onclick="x()">&lt;script&gt;alert(1)&lt;/script&gt; texte</paragraph>'
        b'<linkHtml href="javascript:alert(1)">lien</linkHtml></text></section></component></structuredBody>'
        b"</component></ClinicalDocument>"
    )
    html = str(render_document(cda, "application/xml"))
    assert "<script>" not in html and "onclick" not in html and "javascript:" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; texte" in html and "<h4>S</h4>" in html
    fhir = {
        "resourceType": "Composition",
        "title": "<b>DLU</b>",
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml"><img src=x onerror=alert(1)></div>',
        },
    }
    out = str(render_document(json.dumps(fhir).encode(), "application/fhir+json"))
    assert "<h3>Composition</h3>" in out and "&lt;b&gt;DLU&lt;/b&gt;" in out
    assert "<img" not in out and "&lt;img src=x onerror=alert(1)&gt;" in out
    assert "pas pu" in str(render_document(b"<not-closed", "application/xml"))


def test_a_real_dlu_is_readable() -> None:
    from pathlib import Path

    from gateway.console.render import render_document

    golden = Path(__file__).resolve().parents[2] / "resources" / "golden" / "minimal.dlu.xml"
    html = str(render_document(golden.read_bytes(), "application/xml"))
    assert "Dossier de liaison d'urgence" in html and "EHPAD Saint-Joseph" in html
    assert "<h4>Directives anticipées</h4>" in html and '<th scope="col">Directive</th>' in html


def test_administrator_grants_roles_in_their_tenant_only(
    browser_for: Any, users: dict[str, str], world: World, session_factory: Any
) -> None:
    admin = browser_for("adam")
    page = admin.get(f"/console/utilisateurs?t={world.tenant_a}")
    assert page.status_code == 200 and "lea" in page.text and "bruno" not in page.text
    token = admin.csrf(f"/console/utilisateurs?t={world.tenant_a}")
    form = {"csrf": token, "identifiant": "paula", "role": "lecteur", "essms": "", "operation": "attribuer"}
    assert admin.post(f"/console/utilisateurs/roles?t={world.tenant_a}", form).status_code == 200
    assert world.failed_a in browser_for("paula").get(f"/console/flux?t={world.tenant_a}").text
    granted = _events(session_factory, action="role_granted", actor=f"user:{users['adam']}")
    assert granted and granted[-1].tenant_id == world.tenant_a
    # not in another tenant, and not without the administrator role
    assert admin.post(f"/console/utilisateurs/roles?t={world.tenant_b}", form).status_code == 404
    reader = browser_for("lea")
    token = reader.csrf("/console/flux")
    assert reader.post(f"/console/utilisateurs/roles?t={world.tenant_a}", {**form, "csrf": token}).status_code == 403
    assert reader.get(f"/console/utilisateurs?t={world.tenant_a}").status_code == 403
