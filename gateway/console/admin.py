"""The console's administration pages (``/console/administration``): tenants and their ESSMS, API
clients and their secrets, connector credentials, routing rules.

For a tenant's ``administrateur`` (its own tenant only) and the platform operator (every tenant,
tenant creation, routing rules); anyone else gets 403 and no menu entry. Every page calls the
same service functions as ``/v1/admin`` (:mod:`gateway.services.admin`) with the user's
:class:`~gateway.security.authz.Principal`, so who may do what, tenant isolation (another
tenant does not exist: 404) and the audit trail (before/after) are the API's. Forms carry the
CSRF token; destructive actions (revoke, rotate, replace credentials) need a confirmation;
errors are shown in French next to their field. Secrets are shown once, keys never.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import yaml
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import routing_store
from gateway.console.roles import ConsolePrincipal
from gateway.console.routes import (
    PREFIX,
    Ctx,
    CtxDep,
    FormDep,
    Stop,
    _check_csrf,
    _db,
    _guard,
    _message,
    _not_found,
    _one,
    _refused,
    _user,
    page,
)
from gateway.credentials import CredentialsError, load_material
from gateway.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from gateway.security.authz import SCOPES, Principal, can_administer, roles_for_scopes
from gateway.security.clients import is_valid_finess
from gateway.services import admin
from gateway.services.queries import as_utc
from gateway.storage.models import ApiClient, AuditEvent, Tenant, User

__all__ = ["router"]

router = APIRouter(prefix=f"{PREFIX}/administration", include_in_schema=False)

SCOPE_LABELS = {
    "submissions:write": "Déposer des dossiers ; relancer, rejouer, annuler",
    "submissions:read": "Lire les soumissions et les documents",
    "fhir:read": "Lire par la façade FHIR",
    "audit:read": "Exporter le journal d'audit (références, sans contenu clinique)",
    "admin": "Administrer l'organisme (ESSMS, clients, certificats), sans contenu clinique",
}
GRACE_CHOICES = {"0": "aucun (l'ancien secret cesse aussitôt)", "3600": "1 heure", "86400": "24 heures",
                 "604800": "7 jours"}  # fmt: skip
PURPOSES = ("dmp", "mssante", "sdo")
MAX_RULES = 1000  # as PUT /v1/admin/routing


# -- shared helpers ---------------------------------------------------------------------------
def _administrator(ctx: Ctx) -> tuple[ConsolePrincipal, Principal]:
    """The user and the principal the services are called with; 403 for who administers nothing."""
    user = _user(ctx)
    if not user.administers():
        raise Stop(_refused(ctx))
    return user, user.authz_principal


@contextmanager
def _service(ctx: Ctx) -> Iterator[Session]:
    """A transaction; the services' refusals become the console's pages (404 for another tenant)."""
    try:
        with _db(ctx.state) as session:
            yield session
    except NotFound:
        raise Stop(_not_found(ctx)) from None
    except Forbidden:
        raise Stop(_refused(ctx)) from None


def _tenant(session: Session, ctx: Ctx, principal: Principal, tenant_id: str) -> Tenant:
    try:
        return admin.administered_tenant(session, principal=principal, tenant_id=tenant_id)
    except NotFound:
        raise Stop(_not_found(ctx)) from None


def _admin_page(ctx: Ctx, name: str, status: int = 200, **values: Any) -> Response:
    user = _user(ctx)
    values.setdefault("errors", {})
    values.setdefault("values", {})
    return page(ctx, name, status=status, nav="admin", platform=can_administer(user.authz_principal, None), **values)


def _to(path: str, **query: str) -> Response:
    suffix = f"?{urlencode(query)}" if query else ""
    return RedirectResponse(f"{PREFIX}/administration{path}{suffix}", status_code=303)


# -- tenants and ESSMS ------------------------------------------------------------------------
@router.get("", response_class=HTMLResponse)
@_guard
def index(ctx: CtxDep) -> Response:
    user, principal = _administrator(ctx)
    with _service(ctx) as session:
        tenants = admin.list_tenants(session, principal=principal)
        rows: list[dict[str, Any]] = [
            {"id": t.id, "code": t.code, "name": t.name, "created_at": t.created_at} for t in tenants
        ]
        keyring = ctx.state.runtime.keyring
        for row in rows:
            entries = admin.credential_expiries(session, principal=principal, keyring=keyring, tenant_id=row["id"])
            row["alerts"] = sum(
                1 for e in entries for c in e["certificates"] if c.get("expired") or c.get("expiring_soon")
            )
            # the users page: one's own tenants, or every tenant for the platform operator
            row["users"] = user.platform_operator or row["id"] in user.admin_tenants()
    return _admin_page(ctx, "admin_index.html", rows=rows, done=ctx.request.query_params.get("fait"))


@router.post("/organismes", response_class=HTMLResponse)
@_guard
def create_tenant(ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    _, principal = _administrator(ctx)
    code, name = _one(form, "code").strip(), _one(form, "nom").strip()
    errors: dict[str, str] = {}
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", code):
        errors["code"] = "Code invalide : lettres minuscules, chiffres et tirets (64 au plus)."
    if not name:
        errors["nom"] = "Indiquez le nom de l'organisme."
    if not errors:
        try:
            with _service(ctx) as session:
                tenant = admin.create_tenant(session, principal=principal, code=code, name=name)
                tenant_id = tenant.id
            return ctx.finish(_to(f"/organismes/{tenant_id}", fait="cree"))
        except Conflict:
            errors["code"] = "Un organisme porte déjà ce code."
        except ValidationFailed as exc:
            errors["code"] = f"Organisme refusé ({exc.detail})."
    with _service(ctx) as session:
        rows = [{"id": t.id, "code": t.code, "name": t.name, "created_at": t.created_at}
                for t in admin.list_tenants(session, principal=principal)]  # fmt: skip
    return _admin_page(ctx, "admin_index.html", status=422, rows=rows, done=None, errors=errors,
                       values={"code": code, "nom": name})  # fmt: skip


def _tenant_page(ctx: Ctx, tenant_id: str, *, status: int = 200, **values: Any) -> Response:
    _, principal = _administrator(ctx)
    with _service(ctx) as session:
        tenant = _tenant(session, ctx, principal, tenant_id)
        essms = [
            {"id": e.id, "finess": e.finess, "name": e.name, "category": e.category}
            for e in admin.list_essms(session, principal=principal, tenant_id=tenant.id)
        ]
        org = {"id": tenant.id, "code": tenant.code, "name": tenant.name}
    values.setdefault("done", ctx.request.query_params.get("fait"))
    return _admin_page(ctx, "admin_tenant.html", status=status, org=org, essms=essms, section="organisme", **values)


@router.get("/organismes/{tenant_id}", response_class=HTMLResponse)
@_guard
def tenant_view(tenant_id: str, ctx: CtxDep) -> Response:
    return _tenant_page(ctx, tenant_id)


@router.post("/organismes/{tenant_id}", response_class=HTMLResponse)
@_guard
def tenant_rename(tenant_id: str, ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    _, principal = _administrator(ctx)
    name = _one(form, "nom").strip()
    if not name or len(name) > 255:
        return _tenant_page(ctx, tenant_id, status=422, errors={"nom": "Indiquez un nom (255 caractères au plus)."},
                            values={"nom": name})  # fmt: skip
    with _service(ctx) as session:
        admin.update_tenant(session, principal=principal, tenant_id=tenant_id, name=name)
    return ctx.finish(_to(f"/organismes/{tenant_id}", fait="renomme"))


def _essms_errors(finess: str | None, name: str, category: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    if finess is not None and not is_valid_finess(finess):
        errors["finess"] = "Numéro FINESS invalide : 9 caractères dont une clé de contrôle (Luhn)."
    if not name or len(name) > 255:
        errors["nom_essms"] = "Indiquez le nom de l'ESSMS (255 caractères au plus)."
    if len(category) > 16:
        errors["categorie"] = "Catégorie FINESS trop longue (16 caractères au plus)."
    return errors


@router.post("/organismes/{tenant_id}/essms", response_class=HTMLResponse)
@_guard
def essms_add(tenant_id: str, ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    _, principal = _administrator(ctx)
    finess = _one(form, "finess").strip().upper()
    name, category = _one(form, "nom_essms").strip(), _one(form, "categorie").strip()
    errors = _essms_errors(finess, name, category)
    if not errors:
        try:
            with _service(ctx) as session:
                admin.add_essms(
                    session, principal=principal, tenant_id=tenant_id, finess=finess, name=name, category=category
                )
            return ctx.finish(_to(f"/organismes/{tenant_id}", fait="essms"))
        except Conflict:
            errors["finess"] = "Ce numéro FINESS est déjà enregistré."
        except ValidationFailed as exc:
            errors["finess"] = f"ESSMS refusé ({exc.detail})."
    values = {"finess": finess, "nom_essms": name, "categorie": category}
    return _tenant_page(ctx, tenant_id, status=422, errors=errors, values=values)


def _essms_row(session: Session, principal: Principal, tenant_id: str, essms_id: str) -> dict[str, str]:
    for e in admin.list_essms(session, principal=principal, tenant_id=tenant_id):
        if e.id == essms_id:
            return {"id": e.id, "finess": e.finess, "name": e.name, "category": e.category}
    raise NotFound(f"no ESSMS {essms_id}")


@router.get("/organismes/{tenant_id}/essms/{essms_id}", response_class=HTMLResponse)
@_guard
def essms_view(tenant_id: str, essms_id: str, ctx: CtxDep) -> Response:
    _, principal = _administrator(ctx)
    with _service(ctx) as session:
        tenant = _tenant(session, ctx, principal, tenant_id)
        row = _essms_row(session, principal, tenant.id, essms_id)
        org = {"id": tenant.id, "code": tenant.code, "name": tenant.name}
    values = {"nom_essms": row["name"], "categorie": row["category"]}
    return _admin_page(ctx, "admin_essms.html", org=org, essms=row, values=values, section="organisme")


@router.post("/organismes/{tenant_id}/essms/{essms_id}", response_class=HTMLResponse)
@_guard
def essms_update(tenant_id: str, essms_id: str, ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    _, principal = _administrator(ctx)
    name, category = _one(form, "nom_essms").strip(), _one(form, "categorie").strip()
    errors = _essms_errors(None, name, category)
    if not errors:
        with _service(ctx) as session:
            admin.update_essms(
                session, principal=principal, tenant_id=tenant_id, essms_id=essms_id, name=name, category=category
            )
        return ctx.finish(_to(f"/organismes/{tenant_id}", fait="essms-modifie"))
    with _service(ctx) as session:
        tenant = _tenant(session, ctx, principal, tenant_id)
        row = _essms_row(session, principal, tenant.id, essms_id)
        org = {"id": tenant.id, "code": tenant.code, "name": tenant.name}
    return _admin_page(ctx, "admin_essms.html", status=422, org=org, essms=row, errors=errors, section="organisme",
                       values={"nom_essms": name, "categorie": category})  # fmt: skip


# -- API clients ------------------------------------------------------------------------------
def _scope_choices() -> list[dict[str, str]]:
    out = []
    for scope in SCOPES:
        roles = ", ".join(r.label for r in sorted(roles_for_scopes([scope])))
        out.append({"scope": scope, "label": SCOPE_LABELS.get(scope, scope), "roles": roles})
    return out


def _client_row(session: Session, client: ApiClient) -> dict[str, Any]:
    now = datetime.now(UTC)
    secrets = []
    for s in admin.client_secrets(session, client_id=client.id):
        expires = as_utc(s.expires_at) if s.expires_at else None
        state = "révoqué" if s.revoked_at else "expiré" if expires and expires <= now else "valide"
        if state == "valide" and expires:
            state = "valide jusqu'au délai de grâce"
        if not client.active:
            state = "refusé (client révoqué)"
        secrets.append({"prefix": s.prefix, "created_at": s.created_at, "expires_at": s.expires_at, "state": state})
    return {
        "id": client.id,
        "name": client.name,
        "scopes": client.scopes.split(),
        "essms": client.essms.split() if client.essms else [],
        "active": client.active,
        "key_prefix": client.key_prefix,
        "created_at": client.created_at,
        "secrets": secrets,
    }


def _clients_page(ctx: Ctx, tenant_id: str, *, status: int = 200, **values: Any) -> Response:
    _, principal = _administrator(ctx)
    with _service(ctx) as session:
        tenant = _tenant(session, ctx, principal, tenant_id)
        rows = [_client_row(session, c) for c in admin.list_clients(session, principal=principal, tenant_id=tenant.id)]
        finess = [e.finess for e in admin.list_essms(session, principal=principal, tenant_id=tenant.id)]
        org = {"id": tenant.id, "code": tenant.code, "name": tenant.name}
    values.setdefault("done", ctx.request.query_params.get("fait"))
    return _admin_page(ctx, "admin_clients.html", status=status, org=org, rows=rows, finess=finess,
                       scopes=_scope_choices(), section="clients", **values)  # fmt: skip


@router.get("/organismes/{tenant_id}/clients", response_class=HTMLResponse)
@_guard
def clients_view(tenant_id: str, ctx: CtxDep) -> Response:
    return _clients_page(ctx, tenant_id, values={"portees": ["submissions:write", "submissions:read"], "oauth": "oui"})


@router.post("/organismes/{tenant_id}/clients", response_class=HTMLResponse)
@_guard
def client_create(tenant_id: str, ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    _, principal = _administrator(ctx)
    name = _one(form, "nom_client").strip()
    scopes = [s for s in form.get("portees", []) if s]
    essms = [f for f in form.get("essms", []) if f]
    oauth = _one(form, "oauth") == "oui"
    errors: dict[str, str] = {}
    if not name or len(name) > 255:
        errors["nom_client"] = "Indiquez le nom du client (255 caractères au plus)."
    if not scopes or set(scopes) - set(SCOPES):
        errors["portees"] = "Choisissez au moins une portée."
    if not errors:
        try:
            with _service(ctx) as session:
                client, key, secret = admin.create_client(
                    session,
                    principal=principal,
                    tenant_id=tenant_id,
                    name=name,
                    scopes=" ".join(scopes),
                    essms=essms or None,
                    with_secret=oauth,
                )
                org_id, client_id, client_name = client.tenant_id, client.id, client.name
        except ValidationFailed as exc:
            errors["essms" if "ESSMS" in exc.detail or "FINESS" in exc.detail else "portees"] = (
                f"Client refusé : vérifiez les portées et les ESSMS ({exc.detail})."
            )
        else:
            # the plaintexts are in this response only (no redirect, no storage; Cache-Control: no-store)
            return _admin_page(ctx, "admin_secret.html", org={"id": org_id}, section="clients", client_id=client_id,
                               client_name=client_name, api_key=key, client_secret=secret, rotated=False)  # fmt: skip
    values = {"nom_client": name, "portees": scopes, "essms": essms, "oauth": "oui" if oauth else ""}
    return _clients_page(ctx, tenant_id, status=422, errors=errors, values=values)


def _one_client(
    ctx: Ctx, principal: Principal, tenant_id: str, client_id: str
) -> tuple[dict[str, str], dict[str, Any]]:
    with _service(ctx) as session:
        tenant = _tenant(session, ctx, principal, tenant_id)
        for c in admin.list_clients(session, principal=principal, tenant_id=tenant.id):
            if c.id == client_id:
                return {"id": tenant.id, "code": tenant.code, "name": tenant.name}, _client_row(session, c)
    raise Stop(_not_found(ctx))


_CLIENT_ACTIONS = {
    "secret": ("Renouveler le secret OAuth2", "Je confirme le renouvellement du secret"),
    "revocation": ("Révoquer le client", "Je confirme la révocation : la clé, les secrets et les jetons de ce client "
                   "seront refusés dès maintenant"),
}  # fmt: skip


@router.get("/organismes/{tenant_id}/clients/{client_id}/{action}", response_class=HTMLResponse)
@_guard
def client_confirm(tenant_id: str, client_id: str, action: str, ctx: CtxDep) -> Response:
    _, principal = _administrator(ctx)
    if action not in _CLIENT_ACTIONS:
        return _not_found(ctx)
    org, client = _one_client(ctx, principal, tenant_id, client_id)
    if not client["active"]:
        return _message(ctx, 409, "Client révoqué", "Ce client est révoqué : aucune action n'est possible.")
    title, confirm = _CLIENT_ACTIONS[action]
    return _admin_page(ctx, "admin_client_confirm.html", org=org, client=client, action=action, title=title,
                       confirm_label=confirm, grace=GRACE_CHOICES, section="clients",
                       values={"delai": "86400"})  # fmt: skip


@router.post("/organismes/{tenant_id}/clients/{client_id}/{action}", response_class=HTMLResponse)
@_guard
def client_action(tenant_id: str, client_id: str, action: str, ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    _, principal = _administrator(ctx)
    if action not in _CLIENT_ACTIONS:
        return _not_found(ctx)
    org, client = _one_client(ctx, principal, tenant_id, client_id)
    title, confirm = _CLIENT_ACTIONS[action]
    grace = _one(form, "delai")
    errors: dict[str, str] = {}
    if _one(form, "confirmation") != "oui":
        errors["confirmation"] = "Cochez la case pour confirmer."
    if action == "secret" and grace not in GRACE_CHOICES:
        errors["delai"] = "Choisissez un délai de grâce dans la liste."
    if errors:
        return _admin_page(ctx, "admin_client_confirm.html", status=400, org=org, client=client, action=action,
                           title=title, confirm_label=confirm, grace=GRACE_CHOICES, section="clients", errors=errors,
                           values={"delai": grace})  # fmt: skip
    with _service(ctx) as session:
        if action == "revocation":
            admin.revoke_client(session, principal=principal, tenant_id=tenant_id, client_id=client_id)
        else:
            _, secret = admin.rotate_secret(
                session, principal=principal, tenant_id=tenant_id, client_id=client_id, grace_seconds=int(grace)
            )
    if action == "revocation":
        return ctx.finish(_to(f"/organismes/{tenant_id}/clients", fait="revoque"))
    return _admin_page(ctx, "admin_secret.html", org=org, section="clients", client_id=client_id,
                       client_name=client["name"], api_key=None, client_secret=secret, rotated=True,
                       grace_label=GRACE_CHOICES[grace])  # fmt: skip


# -- connector credentials --------------------------------------------------------------------
def _credentials_page(ctx: Ctx, tenant_id: str, *, status: int = 200, **values: Any) -> Response:
    _, principal = _administrator(ctx)
    with _service(ctx) as session:
        tenant = _tenant(session, ctx, principal, tenant_id)
        entries = admin.credential_expiries(
            session, principal=principal, keyring=ctx.state.runtime.keyring, tenant_id=tenant.id
        )
        finess = [e.finess for e in admin.list_essms(session, principal=principal, tenant_id=tenant.id)]
        org = {"id": tenant.id, "code": tenant.code, "name": tenant.name}
    for entry in entries:
        entry["updated"] = datetime.fromisoformat(entry["updated_at"])
        for cert in entry["certificates"]:
            if "not_after" in cert:
                cert["until"] = datetime.fromisoformat(cert["not_after"])
    query = ctx.request.query_params
    values.setdefault("values", {"essms": query.get("essms", "*"), "usage": query.get("usage", "")})
    values.setdefault("done", query.get("fait"))
    alerts = sum(1 for e in entries for c in e["certificates"] if c.get("expired") or c.get("expiring_soon"))
    return _admin_page(ctx, "admin_credentials.html", status=status, org=org, entries=entries, finess=finess,
                       purposes=PURPOSES, alerts=alerts, section="certificats", **values)  # fmt: skip


@router.get("/organismes/{tenant_id}/certificats", response_class=HTMLResponse)
@_guard
def credentials_view(tenant_id: str, ctx: CtxDep) -> Response:
    return _credentials_page(ctx, tenant_id)


def _material_errors(message: str) -> dict[str, str]:
    if "private_key" in message or "private key" in message:
        return {"cle": "Ce n'est pas une clé privée PEM, le mot de passe est faux, ou elle ne correspond pas au "
                       "certificat."}  # fmt: skip
    return {"certificat": "Ce n'est pas un certificat PEM valide."}


@router.post("/organismes/{tenant_id}/certificats", response_class=HTMLResponse)
@_guard
def credentials_store(tenant_id: str, ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    _, principal = _administrator(ctx)
    essms, purpose = _one(form, "essms").strip() or "*", _one(form, "usage").strip()
    certificate, key, password = _one(form, "certificat").strip(), _one(form, "cle").strip(), _one(form, "mot_de_passe")
    values = {"essms": essms, "usage": purpose}  # the certificate and the key are never sent back
    errors: dict[str, str] = {}
    if not re.fullmatch(r"[a-z][a-z0-9_.:-]{0,31}", purpose):
        errors["usage"] = "Usage invalide : lettres minuscules et chiffres (par exemple dmp, mssante, sdo)."
    if "BEGIN CERTIFICATE" not in certificate:
        errors["certificat"] = "Collez le certificat au format PEM (-----BEGIN CERTIFICATE-----)."
    if "PRIVATE KEY" not in key:
        errors["cle"] = "Collez la clé privée au format PEM (-----BEGIN PRIVATE KEY-----)."
    material = None
    if not errors:
        try:
            material = load_material(
                certificate=certificate.encode(),
                private_key=key.encode(),
                private_key_password=password.encode() if password else None,
            )
        except (CredentialsError, UnicodeEncodeError) as exc:
            errors = _material_errors(str(exc))
    with _service(ctx) as session:
        existing = {(e["essms"], e["purpose"]) for e in admin.credential_expiries(
            session, principal=principal, keyring=ctx.state.runtime.keyring, tenant_id=tenant_id)}  # fmt: skip
    if (essms, purpose) in existing and _one(form, "confirmation") != "oui":
        errors["confirmation"] = (
            "Des identifiants existent déjà pour cet ESSMS et cet usage : cochez la case pour confirmer leur "
            "remplacement (collez de nouveau le certificat et la clé)."
        )
    if not errors and material is not None:
        try:
            with _service(ctx) as session:
                admin.put_credentials(session, principal=principal, keyring=ctx.state.runtime.keyring,
                                      tenant_id=tenant_id, essms_finess=essms, purpose=purpose,
                                      material=material)  # fmt: skip
            if ctx.state.runtime.credentials is not None:  # this process's cache; others expire theirs
                ctx.state.runtime.credentials.forget()
            return ctx.finish(_to(f"/organismes/{tenant_id}/certificats", fait="enregistre"))
        except ValidationFailed as exc:
            pointer = _pointer(exc)
            if pointer == "/essms":
                errors = {"essms": "Cet ESSMS n'appartient pas à l'organisme."}
            elif pointer == "/purpose":
                errors = {"usage": "Usage invalide."}
            else:
                errors = _material_errors(exc.detail)
    return _credentials_page(ctx, tenant_id, status=422, errors=errors, values=values)


def _pointer(exc: ValidationFailed) -> str:
    errors: list[FieldError] = exc.errors
    return errors[0].pointer if errors else ""


# -- routing rules ----------------------------------------------------------------------------
_PYDANTIC_FR = {
    "Field required": "champ obligatoire",
    "Extra inputs are not permitted": "champ inconnu",
    "Input should be a valid list": "doit être une liste",
    "Input should be a valid string": "doit être un texte",
    "Input should be a valid boolean": "doit être vrai ou faux",
    "Input should be a valid dictionary": "doit être un objet (clé: valeur)",
}


def _french(line: str) -> str:
    """One routing validator message in French: which rule, which field, what is wrong."""
    text = line.split("#", 1)[-1]
    found = re.search(r"/rules/(\d+)((?:/[\w.-]+)*)", text)
    where = "Règles"
    if found:
        where = f"Règle n° {int(found[1]) + 1}"
        if found[2]:
            where += f", champ « {found[2].strip('/').replace('/', ' › ')} »"
    message = text.rsplit(": ", 1)[-1].removeprefix("Value error, ").strip()
    if message in _PYDANTIC_FR:
        message = _PYDANTIC_FR[message]
    elif message.startswith("unknown destination"):
        message = "destination inconnue " + message.removeprefix("unknown destination").strip()
    elif message.startswith("FINESS must be 9 digits"):
        message = "le FINESS doit compter 9 chiffres" + message.removeprefix("FINESS must be 9 digits")
    else:
        message = f"refusé par le validateur ({message})"
    return f"{where} : {message}."


def _dump(rules: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rules, ensure_ascii=False, indent=2)
    return yaml.safe_dump(rules, allow_unicode=True, sort_keys=False, default_flow_style=False)


def _routing_history(session: Session) -> list[dict[str, Any]]:
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "routing_changed").order_by(AuditEvent.seq.desc()).limit(20)
    ).all()
    users = {f"user:{uid}": name for uid, name in session.execute(select(User.id, User.username)).all()}
    out = []
    for e in events:
        detail = e.detail or {}
        before = json.dumps(json.loads(detail.get("before", "[]")), ensure_ascii=False, indent=2).splitlines()
        after = json.dumps(json.loads(detail.get("after", "[]")), ensure_ascii=False, indent=2).splitlines()
        diff = list(difflib.unified_diff(before, after, "avant", "après", lineterm="", n=2))
        out.append({"version": detail.get("version"), "at": e.recorded_at, "actor": users.get(e.actor, e.actor),
                    "comment": detail.get("comment", ""), "diff": diff[2:]})  # fmt: skip
    return out


def _routing_page(ctx: Ctx, *, status: int = 200, text: str | None = None, **values: Any) -> Response:
    _, principal = _administrator(ctx)
    fmt = "json" if ctx.request.query_params.get("format") == "json" else "yaml"
    with _service(ctx) as session:
        stored = admin.routing_in_force(session, principal=principal)
        history = _routing_history(session)
    table = routing_store.current_table(ctx.state.runtime)
    rules = stored.rules if stored is not None else [
        r.model_dump(mode="json", exclude_none=True) for r in table.config.rules]  # fmt: skip
    values.setdefault("values", {})
    values["values"].setdefault("regles", text if text is not None else _dump(rules, fmt))
    values["values"].setdefault("version_attendue", str(stored.version if stored else 0))
    values.setdefault("done", ctx.request.query_params.get("fait"))
    return _admin_page(ctx, "admin_routing.html", status=status, stored=stored, history=history, fmt=fmt,
                       destinations=sorted(table.config.destinations), **values)  # fmt: skip


@router.get("/routage", response_class=HTMLResponse)
@_guard
def routing_view(ctx: CtxDep) -> Response:
    return _routing_page(ctx)


@router.post("/routage", response_class=HTMLResponse)
@_guard
def routing_change(ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    _, principal = _administrator(ctx)
    text, comment = _one(form, "regles"), _one(form, "commentaire").strip()[:1000]
    expected = _one(form, "version_attendue")
    values = {"regles": text, "commentaire": comment, "version_attendue": expected}
    problems: list[str] = []
    rules: Any = None
    try:
        # anchors and aliases refused: a few lines of them would expand into millions of rules
        if any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=yaml.SafeLoader)):
            problems.append("Les ancres et alias YAML (& et *) ne sont pas acceptés : écrivez chaque règle en entier.")
        else:
            rules = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (ligne {mark.line + 1}, colonne {mark.column + 1})" if mark is not None else ""
        problems.append(f"Texte illisible : ce n'est ni du YAML ni du JSON valide{at}.")
    if isinstance(rules, dict) and set(rules) == {"rules"}:
        rules = rules["rules"]
    if not problems and not (isinstance(rules, list) and all(isinstance(r, dict) for r in rules)):
        problems.append("Le texte doit être une liste de règles (ou un objet dont la seule clé est « rules »).")
    elif not problems and len(rules) > MAX_RULES:
        problems.append(f"Trop de règles : {MAX_RULES} au plus.")
    if not problems:
        try:
            with _service(ctx) as session:
                stored = admin.change_routing(
                    session,
                    principal=principal,
                    runtime=ctx.state.runtime,
                    rules=rules,
                    comment=comment,
                    expected_version=int(expected) if expected.isdigit() else None,
                )
            routing_store.apply(ctx.state.runtime, stored)  # this process now; the others within seconds
            return ctx.finish(_to("/routage", fait=str(stored.version)))
        except ValidationFailed as exc:
            problems = [_french(e.message) for e in exc.errors] or [f"Règles refusées ({exc.detail})."]
        except Conflict:
            problems = ["Les règles ont été modifiées entre-temps par quelqu'un d'autre : rechargez la page, "
                        "reportez vos changements et validez de nouveau."]  # fmt: skip
    return _routing_page(ctx, status=422, text=text, values=values, problems=problems)
