"""Inbound events about persons the gateway could not match (HL7 v2 ADT over MLLP, ViaTrajectoire),
linked by hand from the console (``/console/personnes-a-rattacher``, issue #12).

The list shows what identifies no one (received when, from which source, which ESSMS, which
kind of event, how many identifiers): nothing is decrypted for it. Opening one entry shows the
peer's identifiers, a read of a person's data, audited (``read``, entity ``unmatched_person``).
Linking is for opérateurs, through a form with its CSRF token and a required confirmation, and
goes through :func:`gateway.persons.link`, the function the API and the CLI call (audited there
as ``person_linked`` with each entry's state before and after).
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from gateway import audit, persons
from gateway.console.roles import TenantAccess
from gateway.console.routes import (
    PREFIX,
    Ctx,
    CtxDep,
    FormDep,
    _check_csrf,
    _db,
    _guard,
    _not_found,
    _one,
    _refused,
    _tenant,
    page,
)

__all__ = ["router"]

router = APIRouter(prefix=PREFIX, include_in_schema=False)

PATH = f"{PREFIX}/personnes-a-rattacher"
_PERSON_REF = re.compile(r"^[\x21-\x7e]{1,128}$")  # as the API's LinkIn.person_ref
_UUID = re.compile(r"^[0-9a-f-]{36}$")

SOURCE_HINTS = {"mllp": "HL7 v2 (MLLP)", "sdo": "ViaTrajectoire", "viatrajectoire": "ViaTrajectoire"}


def _source_label(source: str) -> str:
    for key, label in SOURCE_HINTS.items():
        if key in source:
            return f"{source} — {label}"
    return source


def _essms_any(access: TenantAccess) -> list[str] | None:
    return sorted(access.essms) if access.essms is not None else None


@router.get("/personnes-a-rattacher", response_class=HTMLResponse)
@_guard
def unmatched_list(ctx: CtxDep) -> Response:
    access = _tenant(ctx)
    status = "linked" if ctx.request.query_params.get("statut") == "linked" else "open"
    with _db(ctx.state) as session:
        rows = persons.summaries(session, tenant_id=access.tenant_id, status=status, essms_any=_essms_any(access))
    done = ctx.request.query_params.get("rattaches")
    return page(
        ctx,
        "unmatched.html",
        tenant=access,
        rows=[{**row.__dict__, "source_label": _source_label(row.source)} for row in rows],
        showing=status,
        done=done if done and done.isdigit() else None,
        can_operate=access.can_operate,
    )


def _audit_view(session: Session, ctx: Ctx, access: TenantAccess, entry: persons.Unmatched) -> None:
    """The page shows the peer's identifiers, a person's data: who viewed them is recorded."""
    assert ctx.principal is not None
    audit.append(
        session,
        actor=ctx.principal.actor,
        action="read",
        entity_type="unmatched_person",
        entity_id=entry.id,
        tenant_id=access.tenant_id,
        person_ref=entry.person_ref,
        detail={"view": "unmatched_person", "essms_finess": entry.essms_finess},
    )


def _entry(ctx: Ctx, access: TenantAccess, unmatched_id: str) -> persons.Unmatched | None:
    if not _UUID.match(unmatched_id):
        return None
    with _db(ctx.state) as session:
        found = persons.get_unmatched(
            session, ctx.state.runtime.keyring, tenant_id=access.tenant_id, unmatched_id=unmatched_id
        )
        if found is None or not access.sees_essms(found.essms_finess):
            return None
        _audit_view(session, ctx, access, found)
    return found


def _detail(
    ctx: Ctx,
    access: TenantAccess,
    entry: persons.Unmatched,
    *,
    status: int = 200,
    error: str | None = None,
    person_ref: str = "",
) -> Response:
    return page(
        ctx,
        "unmatched_detail.html",
        status=status,
        tenant=access,
        entry=entry,
        source_label=_source_label(entry.source),
        can_operate=access.can_operate,
        error=error,
        person_ref=person_ref,
        action=f"{PATH}/{entry.id}/rattacher?{urlencode({'t': access.tenant_id})}",
        back=f"{PATH}?{urlencode({'t': access.tenant_id})}",
    )


@router.get("/personnes-a-rattacher/{unmatched_id}", response_class=HTMLResponse)
@_guard
def unmatched_detail(unmatched_id: str, ctx: CtxDep) -> Response:
    access = _tenant(ctx)
    entry = _entry(ctx, access, unmatched_id)
    if entry is None:
        return _not_found(ctx)
    return _detail(ctx, access, entry)


@router.post("/personnes-a-rattacher/{unmatched_id}/rattacher", response_class=HTMLResponse)
@_guard
def unmatched_link(unmatched_id: str, ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    access = _tenant(ctx)
    if not access.can_operate:
        return _refused(ctx)
    principal = ctx.principal
    assert principal is not None
    person_ref = _one(form, "personne").strip()
    if not _UUID.match(unmatched_id):
        return _not_found(ctx)
    with _db(ctx.state) as session:
        entry = persons.get_unmatched(
            session, ctx.state.runtime.keyring, tenant_id=access.tenant_id, unmatched_id=unmatched_id
        )
        if entry is None or not access.sees_essms(entry.essms_finess):
            return _not_found(ctx)
        error = None
        if entry.status != "open":
            error = "Ce message est déjà rattaché."
        elif not _PERSON_REF.match(person_ref):
            error = "Saisissez la référence personne du DUI (1 à 128 caractères visibles, sans espace)."
        elif _one(form, "confirmation") != "oui":
            error = "Cochez la case de confirmation pour rattacher le message."
        elif not persons.known_person(session, tenant_id=access.tenant_id, person_ref=person_ref):
            error = "Aucune personne connue de la passerelle ne porte cette référence dans cet organisme."
        if error is None:
            try:
                linked = persons.link(
                    session,
                    ctx.state.runtime.keyring,
                    unmatched_id=unmatched_id,
                    person_ref=person_ref,
                    actor=principal.actor,
                    tenant_id=access.tenant_id,
                    essms_any=_essms_any(access),
                )
            except LookupError:
                error = "Ce message est déjà rattaché."
        if error is not None:  # the form again, with the identifiers: a view like the GET's
            _audit_view(session, ctx, access, entry)
    if error is not None:
        code = 409 if "déjà" in error else 400
        return _detail(ctx, access, entry, status=code, error=error, person_ref=person_ref)
    return ctx.finish(
        RedirectResponse(f"{PATH}?{urlencode({'t': access.tenant_id, 'rattaches': linked})}", status_code=303)
    )
