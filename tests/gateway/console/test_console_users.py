"""The console's users page over real HTTP: local accounts created with the CLI's functions (a
generated password shown once, or a typed one under the same policy), disable / re-enable,
unlock, password reset, each confirmed, CSRF-protected and audited before/after (never the
password); nobody disables or demotes themselves; a tenant administrator never sees nor changes
an account without a role in its tenant, the platform operator administers every tenant."""

from __future__ import annotations

import html as html_module
import json
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.console import accounts
from gateway.storage.db import session_scope
from gateway.storage.models import AuditEvent, User, UserRole
from tests.gateway.console.conftest import FINESS_A, FINESS_B, PASSWORD, World

USERS = "/console/utilisateurs"
ACTIONS = ("desactivation", "reactivation", "deverrouillage", "mot-de-passe")


def _events(session_factory: sessionmaker[Session], action: str, entity_id: str | None = None) -> list[AuditEvent]:
    with session_factory() as session:
        stmt = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        if entity_id is not None:
            stmt = stmt.where(AuditEvent.entity_id == entity_id)
        return list(session.scalars(stmt))


def _user(session_factory: sessionmaker[Session], user_id: str) -> User:
    with session_factory() as session:
        user = session.get(User, user_id)
        assert user is not None
        session.expunge(user)
        return user


def _by_name(session_factory: sessionmaker[Session], username: str) -> User | None:
    with session_factory() as session:
        return session.scalars(select(User).where(User.username == username)).first()


def _field_error(html: str, name: str) -> str:
    tag = re.search(rf'<(?:input|select)[^>]*\bid="{name}"[^>]*>', html)
    assert tag, f"no field {name}"
    assert 'aria-invalid="true"' in tag.group(0) and f"{name}-erreur" in tag.group(0), tag.group(0)
    message = re.search(rf'id="{name}-erreur">([^<]*)<', html)
    assert message, f"no error for {name}"
    return html_module.unescape(message.group(1))


def _shown_password(html: str) -> str:
    match = re.search(r'id="mot-de-passe-genere">([^<]+)<', html)
    assert match, html[:2000]
    return html_module.unescape(match.group(1))


def _all_audit_text(session_factory: sessionmaker[Session]) -> str:
    with session_factory() as session:
        return json.dumps([e.detail for e in session.scalars(select(AuditEvent))])


def test_an_administrator_creates_a_local_account_with_a_password_shown_once(
    browser_for: Any, users: dict[str, str], world: World, session_factory: sessionmaker[Session]
) -> None:
    adam = browser_for("adam")
    url = f"{USERS}?t={world.tenant_a}"
    token = adam.csrf(url)
    form = {"csrf": token, "nouvel_identifiant": "claire", "nom_affiche": "Claire Durand",
            "role_initial": "operateur", "essms_initial": FINESS_A, "mot_de_passe": ""}  # fmt: skip
    reply = adam.post(f"{USERS}/comptes?t={world.tenant_a}", form)
    assert reply.status_code == 200 and "ne sera plus jamais affiché" in reply.text
    assert reply.headers["Cache-Control"] == "no-store"
    password = _shown_password(reply.text)
    assert len(password) >= accounts.MIN_PASSWORD_LENGTH
    assert password not in adam.get(url).text  # shown once: the list never shows it
    claire = _by_name(session_factory, "claire")
    assert claire is not None and claire.display_name == "Claire Durand" and claire.password_hash
    with session_factory() as session:
        grants = list(session.scalars(select(UserRole).where(UserRole.user_id == claire.id)))
    assert [(g.tenant_id, g.role, g.essms_finess) for g in grants] == [(world.tenant_a, "operateur", FINESS_A)]
    created = _events(session_factory, "user_created", claire.id)
    granted = _events(session_factory, "role_granted", claire.id)
    assert created[-1].actor == f"user:{users['adam']}" and granted[-1].tenant_id == world.tenant_a
    audit_text = _all_audit_text(session_factory)
    assert password not in audit_text and claire.password_hash not in audit_text
    login = browser_for().login("claire", password)
    assert login.status_code == 200 and "Se déconnecter" in login.text

    # an administrator-typed password follows the CLI's policy; it is never echoed back
    short = adam.post(f"{USERS}/comptes?t={world.tenant_a}", {**form, "nouvel_identifiant": "denis",
                                                              "mot_de_passe": "court"})  # fmt: skip
    assert short.status_code == 400 and "au moins 12 caractères" in _field_error(short.text, "mot_de_passe")
    assert 'value="denis"' in short.text and 'value="court"' not in short.text
    assert _by_name(session_factory, "denis") is None
    typed = adam.post(f"{USERS}/comptes?t={world.tenant_a}", {**form, "nouvel_identifiant": "denis",
                                                              "mot_de_passe": "un-mot-de-passe-choisi"})  # fmt: skip
    assert typed.status_code == 200 and "mot-de-passe-genere" not in typed.text
    assert browser_for().login("denis", "un-mot-de-passe-choisi").status_code == 200
    # field errors, in French, tied to their input; nothing is created
    taken = adam.post(f"{USERS}/comptes?t={world.tenant_a}", {**form, "nouvel_identifiant": "lea"})
    assert taken.status_code == 409 and "déjà" in _field_error(taken.text, "nouvel_identifiant")
    missing = adam.post(f"{USERS}/comptes?t={world.tenant_a}", {**form, "nouvel_identifiant": " "})
    assert missing.status_code == 400 and _field_error(missing.text, "nouvel_identifiant")
    bad_role = adam.post(f"{USERS}/comptes?t={world.tenant_a}", {**form, "nouvel_identifiant": "eve",
                                                                 "role_initial": "chef"})  # fmt: skip
    assert bad_role.status_code == 400 and _field_error(bad_role.text, "role_initial")
    assert _by_name(session_factory, "eve") is None


def test_disable_reenable_unlock_and_reset_each_confirmed_and_audited(
    browser_for: Any, users: dict[str, str], world: World, session_factory: sessionmaker[Session]
) -> None:
    adam = browser_for("adam")
    oscar = browser_for("oscar")
    base = f"{USERS}/comptes/{users['oscar']}"
    q = f"?t={world.tenant_a}"
    assert f"{base}/desactivation{q}" in adam.get(f"{USERS}{q}").text
    confirm = adam.get(f"{base}/desactivation{q}")
    assert confirm.status_code == 200 and 'id="confirmation"' in confirm.text
    token = adam.csrf(f"{base}/desactivation{q}")
    unconfirmed = adam.post(f"{base}/desactivation{q}", {"csrf": token})
    assert unconfirmed.status_code == 400 and _field_error(unconfirmed.text, "confirmation")
    assert _user(session_factory, users["oscar"]).active
    done = adam.post(f"{base}/desactivation{q}", {"csrf": token, "confirmation": "oui"}, allow_redirects=False)
    assert done.status_code == 303
    assert not _user(session_factory, users["oscar"]).active
    assert oscar.get("/console/flux", allow_redirects=False).status_code == 303  # open session ended
    assert browser_for().login("oscar").status_code == 401
    event = _events(session_factory, "user_disabled", users["oscar"])[-1]
    assert event.actor == f"user:{users['adam']}" and event.tenant_id == world.tenant_a
    assert event.detail is not None
    assert event.detail["before"]["active"] is True and event.detail["after"]["active"] is False
    assert "désactivé" in adam.get(f"{USERS}{q}").text
    # disabling twice is refused, re-enabling works
    assert adam.post(f"{base}/desactivation{q}", {"csrf": token, "confirmation": "oui"}).status_code == 409
    assert adam.post(f"{base}/reactivation{q}", {"csrf": token, "confirmation": "oui"}).status_code == 200
    event = _events(session_factory, "user_enabled", users["oscar"])[-1]
    assert event.detail == {"before": {"active": False, "locked": False, "local_password": True},
                            "after": {"active": True, "locked": False, "local_password": True}}  # fmt: skip
    assert browser_for().login("oscar").status_code == 200

    # locked out after repeated failures, unlocked by the administrator
    assert adam.get(f"{base}/deverrouillage{q}").status_code == 409  # not locked
    for _ in range(3):  # console_lockout_threshold=3 in these tests
        browser_for().login("oscar", "wrong-password-123")
    assert browser_for().login("oscar").status_code == 401
    assert "verrouillé" in adam.get(f"{USERS}{q}").text
    assert adam.post(f"{base}/deverrouillage{q}", {"csrf": token, "confirmation": "oui"}).status_code == 200
    event = _events(session_factory, "unlocked", users["oscar"])[-1]
    assert event.detail is not None and event.detail["before"]["locked"] and not event.detail["after"]["locked"]
    assert browser_for().login("oscar").status_code == 200

    # password reset: a new one shown once, the old one and the open sessions end
    oscar = browser_for("oscar")
    assert adam.get(f"{base}/mot-de-passe{q}").status_code == 200
    reset = adam.post(f"{base}/mot-de-passe{q}", {"csrf": token, "confirmation": "oui"})
    assert reset.status_code == 200 and reset.headers["Cache-Control"] == "no-store"
    new_password = _shown_password(reset.text)
    assert oscar.get("/console/flux", allow_redirects=False).status_code == 303
    assert browser_for().login("oscar").status_code == 401  # the old password
    assert browser_for().login("oscar", new_password).status_code == 200
    event = _events(session_factory, "password_set", users["oscar"])[-1]
    assert event.actor == f"user:{users['adam']}" and event.detail is not None
    assert set(event.detail) == {"before", "after"}
    hashed = _user(session_factory, users["oscar"]).password_hash
    audit_text = _all_audit_text(session_factory)
    assert hashed and hashed not in audit_text and new_password not in audit_text
    # an OpenID Connect-only account has no password to reset
    assert adam.get(f"{USERS}/comptes/{users['olive']}/mot-de-passe{q}").status_code == 409
    assert adam.get(f"{base}/inconnue{q}").status_code == 404


def test_nobody_disables_or_demotes_themselves(
    browser_for: Any, users: dict[str, str], world: World, session_factory: sessionmaker[Session]
) -> None:
    adam = browser_for("adam")
    q = f"?t={world.tenant_a}"
    page = adam.get(f"{USERS}{q}").text
    assert f"comptes/{users['adam']}/desactivation" not in page
    assert adam.get(f"{USERS}/comptes/{users['adam']}/desactivation{q}").status_code == 409
    token = adam.csrf(f"{USERS}{q}")
    mine = f"{USERS}/comptes/{users['adam']}/desactivation{q}"
    assert adam.post(mine, {"csrf": token, "confirmation": "oui"}).status_code == 409
    demote = {"csrf": token, "identifiant": "adam", "role": "administrateur", "operation": "retirer"}
    refused = adam.post(f"{USERS}/roles{q}", demote)
    assert refused.status_code == 409 and "propre rôle" in refused.text
    me = _user(session_factory, users["adam"])
    assert me.active
    with session_factory() as session:
        roles = set(session.scalars(select(UserRole.role).where(UserRole.user_id == users["adam"])))
    assert roles == {"administrateur"}
    assert not _events(session_factory, "user_disabled") and not _events(session_factory, "role_revoked")
    # still an administrator: the page still opens
    assert adam.get(f"{USERS}{q}").status_code == 200


def test_a_tenant_administrator_never_sees_nor_changes_another_tenants_accounts(
    browser_for: Any, users: dict[str, str], world: World, session_factory: sessionmaker[Session]
) -> None:
    adam = browser_for("adam")
    page = adam.get(f"{USERS}?t={world.tenant_a}").text
    assert "oscar" in page and "bruno" not in page and "paula" not in page
    token = adam.csrf(f"{USERS}?t={world.tenant_a}")
    unknown = "00000000-0000-0000-0000-000000000000"
    # bruno holds a role in tenant B only, paula none: from tenant A they look like an unknown id
    for target in (users["bruno"], users["paula"], unknown, "x" * 300):
        for action in ACTIONS:
            path = f"{USERS}/comptes/{target}/{action}?t={world.tenant_a}"
            got = adam.get(path)
            assert got.status_code == 404 and "Introuvable" in got.text, (target, action)
            assert adam.post(path, {"csrf": token, "confirmation": "oui"}).status_code == 404, (target, action)
    # tenant B itself is not adam's: its page, its accounts and creating there are 404
    assert adam.get(f"{USERS}?t={world.tenant_b}").status_code == 404
    for action in ACTIONS:
        path = f"{USERS}/comptes/{users['bruno']}/{action}?t={world.tenant_b}"
        assert adam.post(path, {"csrf": token, "confirmation": "oui"}).status_code == 404
    form = {"csrf": token, "nouvel_identifiant": "intrus", "role_initial": "administrateur", "mot_de_passe": ""}
    assert adam.post(f"{USERS}/comptes?t={world.tenant_b}", form).status_code == 404
    grant = {"csrf": token, "identifiant": "adam", "role": "administrateur", "operation": "attribuer"}
    assert adam.post(f"{USERS}/roles?t={world.tenant_b}", grant).status_code == 404
    # an ESSMS of tenant B cannot be the initial grant's scope from tenant A
    scoped = adam.post(f"{USERS}/comptes?t={world.tenant_a}", {**form, "essms_initial": FINESS_B})
    assert scoped.status_code == 400 and _field_error(scoped.text, "essms_initial")
    assert _by_name(session_factory, "intrus") is None
    bruno = _user(session_factory, users["bruno"])
    assert bruno.active and bruno.session_epoch == 0
    with session_factory() as session:
        roles = list(session.scalars(select(UserRole.tenant_id).where(UserRole.user_id == users["adam"])))
    assert roles == [world.tenant_a]
    for action in ("user_disabled", "user_enabled", "unlocked", "password_set", "user_created"):
        assert not [e for e in _events(session_factory, action) if e.actor == f"user:{users['adam']}"], action


def test_the_platform_operator_administers_every_tenants_accounts(
    browser_for: Any, users: dict[str, str], world: World, session_factory: sessionmaker[Session]
) -> None:
    paula = browser_for("paula")
    assert f"{USERS}?t={world.tenant_b}" in paula.get("/console/administration").text
    q = f"?t={world.tenant_b}"
    page = paula.get(f"{USERS}{q}")
    assert page.status_code == 200 and "bruno" in page.text and "oscar" not in page.text
    assert paula.get(f"{USERS}?t=00000000-0000-0000-0000-000000000000").status_code == 404
    token = paula.csrf(f"{USERS}{q}")
    path = f"{USERS}/comptes/{users['bruno']}/desactivation{q}"
    assert paula.post(path, {"csrf": token, "confirmation": "oui"}, allow_redirects=False).status_code == 303
    event = _events(session_factory, "user_disabled", users["bruno"])[-1]
    assert event.actor == f"user:{users['paula']}" and event.tenant_id == world.tenant_b
    # an account of tenant A is not reachable through tenant B's page
    assert paula.get(f"{USERS}/comptes/{users['oscar']}/desactivation{q}").status_code == 404
    form = {"csrf": token, "nouvel_identifiant": "gerard", "role_initial": "administrateur", "mot_de_passe": ""}
    created = paula.post(f"{USERS}/comptes{q}", form)
    assert created.status_code == 200 and _shown_password(created.text)
    gerard = _by_name(session_factory, "gerard")
    assert gerard is not None
    with session_factory() as session:
        grants = [(g.tenant_id, g.role) for g in session.scalars(select(UserRole).where(UserRole.user_id == gerard.id))]
    assert grants == [(world.tenant_b, "administrateur")]
    # a platform operator who also reads tenant A still administers its accounts
    with session_scope(session_factory) as session:
        me = session.get(User, users["paula"])
        assert me is not None
        accounts.grant_role(session, user=me, tenant=world.tenant_a, role="lecteur", actor="test")
    paula = browser_for("paula")
    page_a = paula.get(f"{USERS}?t={world.tenant_a}")
    assert page_a.status_code == 200 and "oscar" in page_a.text


def test_every_new_users_form_needs_the_sessions_csrf_token(
    browser_for: Any, users: dict[str, str], world: World, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:  # locked, so that unlocking has something to do
        oscar = session.get(User, users["oscar"])
        assert oscar is not None
        for _ in range(3):
            accounts.authenticate_local(session, username="oscar", password="wrong-password-123", threshold=3,
                                        lockout_seconds=600, source="test")  # fmt: skip
    before = _user(session_factory, users["oscar"])
    assert accounts.is_locked(before)
    adam = browser_for("adam")
    stranger = browser_for("lea").csrf("/console/flux")
    q = f"?t={world.tenant_a}"
    posts: list[tuple[str, dict[str, str]]] = [
        (f"{USERS}/comptes{q}", {"nouvel_identifiant": "fantome", "role_initial": "lecteur", "mot_de_passe": ""}),
        (f"{USERS}/roles{q}", {"identifiant": "lea", "role": "operateur", "operation": "attribuer"}),
    ]
    posts += [(f"{USERS}/comptes/{users['oscar']}/{a}{q}", {"confirmation": "oui"}) for a in ACTIONS]
    for path, data in posts:
        for token in ({}, {"csrf": stranger}, {"csrf": "forged"}):
            reply = adam.post(path, {**data, **token})
            assert reply.status_code == 403 and "CSRF" in reply.text, (path, token)
    after = _user(session_factory, users["oscar"])
    assert (after.active, after.password_hash, after.locked_until, after.session_epoch) == (
        before.active, before.password_hash, before.locked_until, before.session_epoch)  # fmt: skip
    assert _by_name(session_factory, "fantome") is None
    with session_factory() as session:
        roles = set(session.scalars(select(UserRole.role).where(UserRole.user_id == users["lea"])))
    assert roles == {"lecteur"}
    assert PASSWORD not in _all_audit_text(session_factory)
