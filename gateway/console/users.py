"""The console's users page (``/console/utilisateurs``): the accounts holding a role in one tenant,
their roles, and the local accounts' life cycle.

For the tenant's ``administrateur`` (accounts with a role in that tenant only) and the platform
operator (every tenant, ``?t=``). Everything goes through :mod:`gateway.console.accounts`, the
functions ``dui-gateway users`` calls: create a local account with its first role, grant or take
away a role, disable / re-enable, unlock, reset the password. An account holding no role in the
tenant does not exist here (404, the same page as an unknown id). Forms carry the CSRF token;
account actions need a confirmation; a user cannot disable themselves nor take away their own
administrator role. Generated passwords are shown once, in a ``no-store`` response, never logged
nor audited (the audit trail records before/after: active, locked, whether a password is set).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.console import accounts
from gateway.console.roles import ADMINISTRATEUR, ROLES, ConsolePrincipal, TenantAccess
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
    _tenant,
    _user,
    page,
)
from gateway.errors import Conflict, GatewayError, NotFound, ValidationFailed
from gateway.storage.models import Essms, Tenant, User

__all__ = ["router"]

router = APIRouter(prefix=f"{PREFIX}/utilisateurs", include_in_schema=False)

# action in the URL -> (title, confirmation label)
ACTIONS = {
    "desactivation": ("Désactiver le compte", "Je confirme : ce compte ne pourra plus se connecter et ses sessions "
                      "ouvertes prennent fin"),
    "reactivation": ("Réactiver le compte", "Je confirme : ce compte pourra de nouveau se connecter"),
    "deverrouillage": ("Déverrouiller le compte", "Je confirme : les tentatives de connexion sont de nouveau "
                       "acceptées"),
    "mot-de-passe": ("Réinitialiser le mot de passe", "Je confirme : l'ancien mot de passe cesse aussitôt et les "
                     "sessions ouvertes prennent fin ; le nouveau sera affiché une seule fois"),
}  # fmt: skip


def _administered(ctx: Ctx) -> tuple[ConsolePrincipal, TenantAccess]:
    """The tenant of ``?t=`` the user administers: their own grants, or any tenant for the platform
    operator (who holds no grant); another tenant is 404, a role without administration 403."""
    principal = _user(ctx)
    wanted = ctx.request.query_params.get("t", "")
    if principal.platform_operator and wanted:
        with _db(ctx.state) as session:
            exists = len(wanted) <= 64 and session.get(Tenant, wanted) is not None
        if not exists:
            raise Stop(_not_found(ctx))
        # its own grants there, if any, for the menu; administering needs none
        own = principal.access(wanted)
        return principal, own or TenantAccess(
            tenant_id=wanted, roles=frozenset(), essms=None, principal=principal.authz_principal
        )
    return principal, _tenant(ctx, need="admin")


def _member(session: Session, ctx: Ctx, tenant_id: str, user_id: str) -> User:
    """An account holding a role in the tenant; any other (or none) is 404."""
    user = accounts.load_user(session, user_id) if len(user_id) <= 64 else None
    if user is None or not any(g.tenant_id == tenant_id for g in user.roles):
        raise Stop(_not_found(ctx))
    return user


def _essms(session: Session, tenant_id: str) -> list[str]:
    return list(session.scalars(select(Essms.finess).where(Essms.tenant_id == tenant_id).order_by(Essms.finess)))


def _users_page(
    ctx: Ctx, access: TenantAccess, status: int = 200, *, errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> Response:  # fmt: skip
    now = datetime.now().astimezone()
    with _db(ctx.state) as session:
        rows = []
        for user in session.scalars(select(User).order_by(User.username)).all():
            grants = [g for g in user.roles if g.tenant_id == access.tenant_id]
            if not grants:
                continue
            rows.append(
                {
                    "id": user.id,
                    "username": user.username,
                    "display_name": user.display_name,
                    "roles": [(g.role, g.essms_finess) for g in grants],
                    "oidc": user.oidc_subject is not None,
                    "local": user.password_hash is not None,
                    "active": user.active,
                    "locked": accounts.is_locked(user, now),
                    "last_login": user.last_login_at,
                    "me": user.id == _user(ctx).user_id,
                }
            )
        essms = _essms(session, access.tenant_id)
    return page(ctx, "users.html", status=status, tenant=access, rows=rows, roles=ROLES, essms=essms,
                errors=errors or {}, values=values or {"role_initial": "lecteur"},
                min_length=accounts.MIN_PASSWORD_LENGTH)  # fmt: skip


def _back(access: TenantAccess) -> Response:
    return RedirectResponse(f"{PREFIX}/utilisateurs?t={access.tenant_id}", status_code=303)


@router.get("", response_class=HTMLResponse)
@_guard
def users_view(ctx: CtxDep) -> Response:
    _, access = _administered(ctx)
    return _users_page(ctx, access)


@router.post("/roles", response_class=HTMLResponse)
@_guard
def users_grant(ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    principal, access = _administered(ctx)
    username, role = _one(form, "identifiant").strip(), _one(form, "role")
    essms = _one(form, "essms") or None
    revoke = _one(form, "operation") == "retirer"
    try:
        with _db(ctx.state) as session:
            user = accounts.find_user(session, username)
            if user is None:
                return _message(ctx, 404, "Utilisateur inconnu", "Aucun compte ne porte cet identifiant.")
            if revoke and user.id == principal.user_id and role == ADMINISTRATEUR:
                return _message(ctx, 409, "Modification refusée", "Vous ne pouvez pas retirer votre propre rôle "
                                "d'administrateur : demandez-le à un autre administrateur.")  # fmt: skip
            if revoke:
                accounts.revoke_role(session, user=user, tenant=access.tenant_id, role=role, actor=principal.actor)
            else:
                accounts.grant_role(
                    session, user=user, tenant=access.tenant_id, role=role, essms_finess=essms, actor=principal.actor
                )
    except GatewayError as exc:
        return _message(ctx, 400, "Modification refusée", exc.detail)
    return _back(access)


@router.post("/comptes", response_class=HTMLResponse)
@_guard
def create_account(ctx: CtxDep, form: FormDep) -> Response:
    """A local account and its first role in this tenant, in one transaction, with the CLI's functions."""
    _check_csrf(ctx, form)
    principal, access = _administered(ctx)
    username = _one(form, "nouvel_identifiant").strip()
    name = _one(form, "nom_affiche").strip()
    role = _one(form, "role_initial")
    essms = _one(form, "essms_initial") or None
    typed = _one(form, "mot_de_passe")
    # echoed back on errors: never the password
    values = {"nouvel_identifiant": username, "nom_affiche": name, "role_initial": role, "essms_initial": essms or ""}
    errors: dict[str, str] = {}
    if not username:
        errors["nouvel_identifiant"] = "Indiquez l'identifiant de connexion."
    elif len(username) > 255:
        errors["nouvel_identifiant"] = "L'identifiant dépasse 255 caractères."
    if len(name) > 255:
        errors["nom_affiche"] = "Le nom dépasse 255 caractères."
    if role not in ROLES:
        errors["role_initial"] = "Choisissez un rôle dans la liste."
    if typed:
        try:
            accounts.check_password(typed)
        except ValidationFailed:
            errors["mot_de_passe"] = (
                f"Le mot de passe doit compter au moins {accounts.MIN_PASSWORD_LENGTH} caractères "
                "(laissez vide pour en générer un)."
            )
    with _db(ctx.state) as session:
        if essms is not None and essms not in _essms(session, access.tenant_id):
            errors["essms_initial"] = "Choisissez un ESSMS de cet organisme."
    if errors:
        return _users_page(ctx, access, 400, errors=errors, values=values)
    password = typed or accounts.generate_password()
    try:
        with _db(ctx.state) as session:
            user = accounts.create_user(
                session, username=username, display_name=name, password=password, actor=principal.actor
            )
            accounts.grant_role(
                session, user=user, tenant=access.tenant_id, role=role, essms_finess=essms, actor=principal.actor
            )
            created = {"username": user.username, "display_name": user.display_name}
    except Conflict:
        errors["nouvel_identifiant"] = "Un compte porte déjà cet identifiant : choisissez-en un autre."
        return _users_page(ctx, access, 409, errors=errors, values=values)
    except (ValidationFailed, NotFound) as exc:
        return _message(ctx, 400, "Création refusée", exc.detail)
    # a generated password is in this response only (no redirect, no storage; Cache-Control: no-store)
    return page(ctx, "users_password.html", tenant=access, account=created, created=True,
                password=None if typed else password)  # fmt: skip


def _confirm_page(
    ctx: Ctx, access: TenantAccess, user: User, action: str, status: int = 200, errors: dict[str, str] | None = None
) -> Response:
    title, label = ACTIONS[action]
    account = {"id": user.id, "username": user.username, "display_name": user.display_name}
    return page(ctx, "users_confirm.html", status=status, tenant=access, account=account, action=action,
                title=title, confirm_label=label, errors=errors or {})  # fmt: skip


def _refusal(user: User, action: str, principal: ConsolePrincipal) -> str | None:
    """Why the action makes no sense for this account now (French), or None."""
    if action == "desactivation" and user.id == principal.user_id:
        return "Vous ne pouvez pas désactiver votre propre compte : demandez-le à un autre administrateur."
    if action == "desactivation" and not user.active:
        return "Ce compte est déjà désactivé."
    if action == "reactivation" and user.active:
        return "Ce compte est déjà actif."
    if action == "deverrouillage" and not accounts.is_locked(user):
        return "Ce compte n'est pas verrouillé."
    if action == "mot-de-passe" and user.password_hash is None:
        return "Ce compte se connecte par OpenID Connect uniquement : il n'a pas de mot de passe local."
    return None


@router.get("/comptes/{user_id}/{action}", response_class=HTMLResponse)
@_guard
def account_confirm(user_id: str, action: str, ctx: CtxDep) -> Response:
    principal, access = _administered(ctx)
    if action not in ACTIONS:
        return _not_found(ctx)
    with _db(ctx.state) as session:
        user = _member(session, ctx, access.tenant_id, user_id)
        refusal = _refusal(user, action, principal)
        if refusal:
            return _message(ctx, 409, "Action impossible", refusal)
        return _confirm_page(ctx, access, user, action)


@router.post("/comptes/{user_id}/{action}", response_class=HTMLResponse)
@_guard
def account_action(user_id: str, action: str, ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    principal, access = _administered(ctx)
    if action not in ACTIONS:
        return _not_found(ctx)
    password: str | None = None
    with _db(ctx.state) as session:
        user = _member(session, ctx, access.tenant_id, user_id)
        refusal = _refusal(user, action, principal)
        if refusal:
            return _message(ctx, 409, "Action impossible", refusal)
        if _one(form, "confirmation") != "oui":
            return _confirm_page(ctx, access, user, action, 400, {"confirmation": "Cochez la case pour confirmer."})
        common: dict[str, Any] = {"user": user, "actor": principal.actor, "tenant_id": access.tenant_id}
        if action == "desactivation":
            accounts.set_active(session, active=False, **common)
        elif action == "reactivation":
            accounts.set_active(session, active=True, **common)
        elif action == "deverrouillage":
            accounts.unlock(session, **common)
        else:
            password = accounts.generate_password()
            accounts.set_password(session, password=password, **common)
        account = {"username": user.username, "display_name": user.display_name}
    if password is None:
        return _back(access)
    return page(ctx, "users_password.html", tenant=access, account=account, created=False, password=password)
