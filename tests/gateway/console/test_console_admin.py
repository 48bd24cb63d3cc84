"""The console's administration pages over real HTTP: who sees them, tenant isolation through the
console (another tenant is 404, as in /v1/admin), every change through the shared admin service
and audited before/after, CSRF and confirmations, French errors tied to their field, secrets
shown once, keys never shown, routing rules validated and applied without restart."""

from __future__ import annotations

import html as html_module
import json
import re
from typing import Any

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway import routing_store
from gateway.routing import RoutingTable, parse_config
from gateway.runtime import Runtime
from gateway.storage.models import ApiClient, AuditEvent, CredentialSet, Essms, Tenant
from mappings.base import RecordFacts
from tests.gateway.console.conftest import FINESS_A, FINESS_B, World
from tests.support.pki import certificate_and_key

ADMIN = "/console/administration"


def _events(session_factory: sessionmaker[Session], action: str) -> list[AuditEvent]:
    with session_factory() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)))


def _client_of(session_factory: sessionmaker[Session], tenant_id: str) -> ApiClient:
    with session_factory() as session:
        client = session.scalars(select(ApiClient).where(ApiClient.tenant_id == tenant_id)).first()
        assert client is not None
        return client


def _field_error(html: str, name: str) -> str:
    """The error message tied to a field: the field names it in aria-describedby and is aria-invalid."""
    tag = re.search(rf'<(?:input|textarea|select|fieldset)[^>]*\bid="{name}"[^>]*>', html)
    assert tag, f"no field {name}"
    assert 'aria-invalid="true"' in tag.group(0) and f"{name}-erreur" in tag.group(0), tag.group(0)
    message = re.search(rf'id="{name}-erreur">([^<]*)<', html)
    assert message, f"no error for {name}"
    return html_module.unescape(message.group(1))


def test_only_administrators_get_the_pages_and_the_menu_entry_every_form_needs_csrf(
    browser_for: Any, users: dict[str, str], world: World, session_factory: sessionmaker[Session]
) -> None:
    for name in ("lea", "oscar"):
        b = browser_for(name)
        assert ">Administration<" not in b.get("/console/flux").text
        for path in (ADMIN, f"{ADMIN}/organismes/{world.tenant_a}/clients", f"{ADMIN}/routage"):
            assert b.get(path).status_code == 403, (name, path)
        token = b.csrf("/console/flux")
        refused = b.post(f"{ADMIN}/organismes/{world.tenant_a}/clients", {"csrf": token, "nom_client": "x",
                                                                          "portees": "admin"})  # fmt: skip
        assert refused.status_code == 403
    adam = browser_for("adam")
    home = adam.get("/console/audit")
    assert f'href="{ADMIN}"' in home.text and ">Administration<" in home.text
    assert adam.get(ADMIN).status_code == 200
    # every administration form needs the session's CSRF token: without it, or with another's, 403
    client_a = _client_of(session_factory, world.tenant_a)
    stranger = browser_for("paula").csrf(ADMIN)
    tenant = f"{ADMIN}/organismes/{world.tenant_a}"
    for path, data in (
        (f"{ADMIN}/organismes", {"code": "og-z", "nom": "Z"}),
        (tenant, {"nom": "changé"}),
        (f"{tenant}/essms", {"finess": "750000044", "nom_essms": "X"}),
        (f"{tenant}/clients", {"nom_client": "X", "portees": "admin"}),
        (f"{tenant}/clients/{client_a.id}/revocation", {"confirmation": "oui"}),
        (f"{tenant}/clients/{client_a.id}/secret", {"confirmation": "oui", "delai": "0"}),
        (f"{tenant}/certificats", {"essms": "*", "usage": "dmp"}),
        (f"{ADMIN}/routage", {"regles": "[]"}),
    ):
        for token in ({}, {"csrf": stranger}):
            reply = adam.post(path, {**data, **token})
            assert reply.status_code == 403 and "CSRF" in reply.text, path
    assert _client_of(session_factory, world.tenant_a).active
    with session_factory() as session:
        assert session.get(Tenant, world.tenant_a).name == "Organisme A"  # type: ignore[union-attr]


def test_a_tenant_administrator_never_sees_another_tenant_the_platform_operator_does(
    browser_for: Any, users: dict[str, str], world: World, session_factory: sessionmaker[Session]
) -> None:
    client_b = _client_of(session_factory, world.tenant_b)
    adam = browser_for("adam")
    index = adam.get(ADMIN).text
    assert "og-a" in index and "og-b" not in index and "Créer un organisme" not in index
    assert "DUI A" in adam.get(f"{ADMIN}/organismes/{world.tenant_a}/clients").text
    with session_factory() as session:
        essms_b = session.scalars(select(Essms.id).where(Essms.finess == FINESS_B)).one()
    unknown = "00000000-0000-0000-0000-000000000000"
    for tid in (world.tenant_b, unknown):  # another tenant looks exactly like no tenant
        for path in ("", "/clients", "/certificats", f"/essms/{essms_b}", f"/clients/{client_b.id}/revocation"):
            reply = adam.get(f"{ADMIN}/organismes/{tid}{path}")
            assert reply.status_code == 404 and "Introuvable" in reply.text, (tid, path)
    for path in (f"{ADMIN}/organismes/{'x' * 300}/clients", f"{ADMIN}/organismes/{world.tenant_a}/essms/{'y' * 300}",
                 f"{ADMIN}/organismes/{world.tenant_a}/clients/{'z' * 300}/secret"):  # fmt: skip
        assert adam.get(path).status_code == 404, path
    token = adam.csrf(ADMIN)
    for path, data in (
        (f"/organismes/{world.tenant_b}/clients/{client_b.id}/revocation", {"confirmation": "oui"}),
        (f"/organismes/{world.tenant_b}", {"nom": "pris"}),
        (f"/organismes/{world.tenant_b}/essms", {"finess": "750000044", "nom_essms": "x"}),
        (f"/organismes/{world.tenant_a}/clients/{client_b.id}/revocation", {"confirmation": "oui"}),
    ):
        assert adam.post(ADMIN + path, {"csrf": token, **data}).status_code == 404, path
    assert _client_of(session_factory, world.tenant_b).active
    # platform-level administration is not a tenant administrator's business
    assert adam.get(f"{ADMIN}/routage").status_code == 403
    assert adam.post(f"{ADMIN}/organismes", {"csrf": token, "code": "og-x", "nom": "X"}).status_code == 403
    with session_factory() as session:
        assert session.scalars(select(Tenant).where(Tenant.code == "og-x")).first() is None
        assert session.get(Tenant, world.tenant_b).name == "Organisme B"  # type: ignore[union-attr]

    paula = browser_for("paula")
    index = paula.get(ADMIN).text
    assert "og-a" in index and "og-b" in index
    assert "DUI B" in paula.get(f"{ADMIN}/organismes/{world.tenant_b}/clients").text
    assert paula.get(f"{ADMIN}/routage").status_code == 200


def test_tenants_and_essms_created_and_edited_with_french_errors_and_audit(
    browser_for: Any, users: dict[str, str], world: World, session_factory: sessionmaker[Session]
) -> None:
    paula = browser_for("paula")
    token = paula.csrf(ADMIN)
    bad = paula.post(f"{ADMIN}/organismes", {"csrf": token, "code": "Pas Bon", "nom": ""})
    assert bad.status_code == 422
    assert "lettres minuscules" in _field_error(bad.text, "code")
    assert "nom de l'organisme" in _field_error(bad.text, "nom")
    assert 'href="#code"' in bad.text  # the error summary links to the field
    assert paula.post(f"{ADMIN}/organismes", {"code": "og-c", "nom": "C"}).status_code == 403  # no CSRF token
    made = paula.post(f"{ADMIN}/organismes", {"csrf": token, "code": "og-c", "nom": "Organisme C"})
    assert made.status_code == 200 and "Organisme créé" in made.text
    tid = made.url.split("/organismes/")[1].split("?")[0]
    again = paula.post(f"{ADMIN}/organismes", {"csrf": token, "code": "og-c", "nom": "Encore"})
    assert "déjà ce code" in _field_error(again.text, "code")

    wrong = paula.post(f"{ADMIN}/organismes/{tid}/essms", {"csrf": token, "finess": "750000037", "nom_essms": "X"})
    assert wrong.status_code == 422 and "Numéro FINESS invalide" in _field_error(wrong.text, "finess")
    taken = paula.post(f"{ADMIN}/organismes/{tid}/essms", {"csrf": token, "finess": FINESS_A, "nom_essms": "X"})
    assert "déjà enregistré" in _field_error(taken.text, "finess")
    added = paula.post(f"{ADMIN}/organismes/{tid}/essms",
                       {"csrf": token, "finess": "750000044", "nom_essms": "EHPAD C", "categorie": "500"})  # fmt: skip
    assert added.status_code == 200 and "750000044" in added.text
    with session_factory() as session:
        essms_id = session.scalars(select(Essms.id).where(Essms.finess == "750000044")).one()
    edit = f"{ADMIN}/organismes/{tid}/essms/{essms_id}"
    assert 'value="EHPAD C"' in paula.get(edit).text
    empty = paula.post(edit, {"csrf": token, "nom_essms": " ", "categorie": "500"})
    assert "nom de l'ESSMS" in _field_error(empty.text, "nom_essms")
    assert paula.post(edit, {"csrf": token, "nom_essms": "EHPAD Les Cèdres", "categorie": "500"}).status_code == 200
    renamed = paula.post(f"{ADMIN}/organismes/{tid}", {"csrf": token, "nom": "Organisme C renommé"})
    assert "Nom enregistré" in renamed.text
    [created] = _events(session_factory, "tenant_created")[-1:]
    assert created.actor == f"user:{users['paula']}"
    [essms_event] = _events(session_factory, "essms_updated")
    assert essms_event.detail["before"] == {"essms_name": "EHPAD C", "category": "500"}
    assert essms_event.detail["after"] == {"essms_name": "EHPAD Les Cèdres", "category": "500"}
    [tenant_event] = _events(session_factory, "tenant_updated")
    assert tenant_event.detail == {
        "before": {"tenant_name": "Organisme C"},
        "after": {"tenant_name": "Organisme C renommé"},
    }


def test_api_client_secret_shown_once_rotated_without_downtime(
    browser_for: Any, users: dict[str, str], world: World, live: str, session_factory: sessionmaker[Session]
) -> None:
    adam = browser_for("adam")
    clients = f"{ADMIN}/organismes/{world.tenant_a}/clients"
    token = adam.csrf(clients)
    none = adam.post(clients, {"csrf": token, "nom_client": "DUI neuf"})
    assert "au moins une portée" in _field_error(none.text, "portees")
    made = adam.post(clients, {"csrf": token, "nom_client": "DUI neuf", "portees": ["submissions:read"],
                               "essms": [FINESS_A], "oauth": "oui"})  # fmt: skip
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    client_id = re.search(r'id="client-id">([^<]+)<', made.text).group(1)  # type: ignore[union-attr]
    secret = re.search(r'id="secret-client">([^<]+)<', made.text).group(1)  # type: ignore[union-attr]
    api_key = re.search(r'id="cle-api">([^<]+)<', made.text).group(1)  # type: ignore[union-attr]
    listing = adam.get(clients).text
    assert "DUI neuf" in listing and secret not in listing and api_key not in listing

    def token_with(value: str) -> int:
        return requests.post(f"{live}/oauth/token", data={"grant_type": "client_credentials"},
                             auth=(client_id, value), timeout=30).status_code  # fmt: skip

    assert token_with(secret) == 200
    rotate = f"{clients}/{client_id}/secret"
    form = adam.get(rotate).text
    assert 'name="delai"' in form and 'id="confirmation"' in form
    unconfirmed = adam.post(rotate, {"csrf": token, "delai": "3600"})
    assert unconfirmed.status_code == 400 and "Cochez la case" in _field_error(unconfirmed.text, "confirmation")
    rotated = adam.post(rotate, {"csrf": token, "delai": "3600", "confirmation": "oui"})
    assert rotated.status_code == 200 and "1 heure" in rotated.text
    new_secret = re.search(r'id="secret-client">([^<]+)<', rotated.text).group(1)  # type: ignore[union-attr]
    assert new_secret != secret and 'id="cle-api"' not in rotated.text
    assert token_with(new_secret) == 200 and token_with(secret) == 200  # both during the grace period
    [event] = _events(session_factory, "client_secret_rotated")
    assert event.actor == f"user:{users['adam']}" and event.detail["grace_seconds"] == 3600
    # revocation needs its confirmation
    revoke = f"{clients}/{client_id}/revocation"
    assert adam.post(revoke, {"csrf": token}).status_code == 400
    assert token_with(new_secret) == 200


def test_credentials_uploaded_encrypted_alerted_and_replaced_only_when_confirmed(
    browser_for: Any, users: dict[str, str], world: World, session_factory: sessionmaker[Session]
) -> None:
    adam = browser_for("adam")
    page = f"{ADMIN}/organismes/{world.tenant_a}/certificats"
    token = adam.csrf(page)
    cert, key = certificate_and_key(10)
    other_cert, other_key = certificate_and_key(200)
    mismatch = adam.post(page, {"csrf": token, "essms": FINESS_A, "usage": "dmp", "certificat": cert, "cle": other_key})
    assert mismatch.status_code == 422 and "ne correspond pas" in _field_error(mismatch.text, "cle")
    assert "PRIVATE KEY" not in mismatch.text  # never sent back, even to correct it
    foreign = adam.post(page, {"csrf": token, "essms": FINESS_B, "usage": "dmp", "certificat": cert, "cle": key})
    assert "n'appartient pas" in _field_error(foreign.text, "essms")
    stored = adam.post(page, {"csrf": token, "essms": FINESS_A, "usage": "dmp", "certificat": cert, "cle": key})
    assert stored.status_code == 200, stored.text[:2000]
    assert "expire dans" in stored.text and 'role="alert"' in stored.text and "1 certificat expiré" in stored.text
    assert "1 à remplacer" in adam.get(ADMIN).text  # the index shows it too
    assert "PRIVATE KEY" not in stored.text and "BEGIN CERTIFICATE" not in stored.text
    with session_factory() as session:
        row = session.scalars(select(CredentialSet).where(CredentialSet.tenant_id == world.tenant_a)).one()
        assert b"PRIVATE" not in row.data_ct and b"BEGIN" not in row.data_ct
    # replacing needs the confirmation box
    replace = {"csrf": token, "essms": FINESS_A, "usage": "dmp", "certificat": other_cert, "cle": other_key}
    refused = adam.post(page, replace)
    assert refused.status_code == 422 and "confirmer leur remplacement" in _field_error(refused.text, "confirmation")
    replaced = adam.post(page, {**replace, "confirmation": "oui"})
    assert replaced.status_code == 200 and "expire dans" not in replaced.text and "valide (" in replaced.text
    first, second = _events(session_factory, "credentials_set")
    assert second.actor == f"user:{users['adam']}" and second.detail["replaced"] is True
    assert second.detail["before"]["certificates"] == first.detail["after"]["certificates"]
    assert "PRIVATE" not in json.dumps(second.detail)
    # the platform operator sees tenant A's credentials
    assert "valide (" in browser_for("paula").get(page).text


ROUTING = {
    "destinations": {
        "dmp": {"connector": "dmp", "category": "dmp"},
        "hook": {"connector": "webhook", "category": "webhook"},
    },
    "rules": [{"name": "notes au webhook", "document_types": ["test-note"], "destinations": ["hook"]}],
}


def _decide(runtime: Runtime) -> tuple[str, ...]:
    facts = RecordFacts(person_ref="P", essms_finess=FINESS_A, ins_qualified=True)
    table = routing_store.current_table(runtime)
    return table.decide(tenant_code="og-a", tenant_id="t", document_type="test-note", facts=facts).destinations


def test_routing_rules_edited_validated_in_french_versioned_and_applied_without_restart(
    browser_for: Any, users: dict[str, str], world: World, runtime: Runtime, session_factory: sessionmaker[Session]
) -> None:
    runtime.routing = RoutingTable(config=parse_config(ROUTING), source="routing.yaml")
    assert _decide(runtime) == ("hook",)
    paula = browser_for("paula")
    page = paula.get(f"{ADMIN}/routage")
    assert "notes au webhook" in page.text and "dmp, hook" in page.text and "fichier de routage" in page.text
    token = paula.csrf(f"{ADMIN}/routage")
    unreadable = paula.post(f"{ADMIN}/routage", {"csrf": token, "regles": "- name: [oops", "version_attendue": "0"})
    assert unreadable.status_code == 422 and "Texte illisible" in _field_error(unreadable.text, "regles")
    nowhere = "- name: x\n  document_types: [test-note]\n  destinations: [nulle-part]\n"
    invalid = paula.post(f"{ADMIN}/routage", {"csrf": token, "regles": nowhere, "version_attendue": "0"})
    error = _field_error(invalid.text, "regles")
    assert "Règle n° 1" in error and "destination inconnue" in error and "nulle-part" in error
    assert "nulle-part" in invalid.text.split('id="regles"')[1]  # the text typed is kept to be corrected
    laughs = "- &a {name: x, document_types: [test-note], destinations: [hook]}\n- *a\n"
    aliases = paula.post(f"{ADMIN}/routage", {"csrf": token, "regles": laughs, "version_attendue": "0"})
    assert "alias" in _field_error(aliases.text, "regles")
    missing = paula.post(f"{ADMIN}/routage", {"csrf": token, "regles": "[{name: x}]", "version_attendue": "0"})
    assert "champ « document_types » : champ obligatoire" in _field_error(missing.text, "regles")
    assert _decide(runtime) == ("hook",)
    new = json.dumps([{"name": "notes au DMP", "document_types": ["test-note"], "destinations": ["dmp", "hook"]}])
    applied = paula.post(f"{ADMIN}/routage", {"csrf": token, "regles": new, "commentaire": "ouverture DMP",
                                              "version_attendue": "0"})  # fmt: skip
    assert applied.status_code == 200 and "Version 1 enregistrée et appliquée" in applied.text
    assert _decide(runtime) == ("dmp", "hook")  # no restart
    assert '<span class="add">+' in applied.text and '<span class="del">-' in applied.text
    assert "ouverture DMP" in applied.text
    stale = paula.post(f"{ADMIN}/routage", {"csrf": token, "regles": new, "version_attendue": "0"})
    assert "modifiées entre-temps" in _field_error(stale.text, "regles")
    [event] = _events(session_factory, "routing_changed")
    assert event.actor == f"user:{users['paula']}"
    assert json.loads(event.detail["before"])[0]["destinations"] == ["hook"]
