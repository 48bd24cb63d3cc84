"""The console's pages (``/console``): server-rendered French HTML, forms that work without
JavaScript, a little vanilla JS for the live counters.

Every page resolves the user from the session cookie and the tenant from ``?t=`` (default: the
first tenant the user holds a role in); a tenant the user has no role in does not exist for
them (404, the same page as an unknown id). Reads of a person's data go through
:mod:`gateway.services.queries` (audited there); actions through
:mod:`gateway.services.operations` (audited there).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.console import accounts, charts, data
from gateway.console.oidc import OidcClient, OidcError
from gateway.console.roles import ROLE_LABELS, ConsolePrincipal, TenantAccess
from gateway.console.session import COOKIE, SessionData, SessionSigner
from gateway.errors import Conflict, GatewayError, NotFound, TooManyRequests
from gateway.logging import get_logger
from gateway.runtime import Runtime
from gateway.services import operations, queries
from gateway.storage.models import Submission, Tenant, User

__all__ = ["ConsoleState", "router"]

_log = get_logger(__name__)
PREFIX = "/console"
OIDC_COOKIE = "dgw_console_oidc"

router = APIRouter(prefix=PREFIX, include_in_schema=False)

STATUS_LABELS = {
    "received": "reçu",
    "processing": "en traitement",
    "routed": "routé",
    "delivered": "remis",
    "partially_failed": "partiellement en échec",
    "failed": "en échec",
    "rejected": "rejeté",
    "cancelled": "annulé",
    "pending": "en attente",
    "in_flight": "en cours d'envoi",
    "sent": "envoyé, accusé attendu",
    "unconfirmed": "non confirmé",
    "dead": "abandonné (lettre morte)",
    "held": "mis de côté",
    "ignored": "ignoré",
    "processed": "traité",
}

ACTION_LABELS = {"retry": "Relancer l'envoi", "replay": "Rejouer la soumission", "cancel": "Annuler la soumission"}


class ConsoleState:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.signer = SessionSigner.from_settings(runtime.settings)
        self.oidc = OidcClient.from_settings(runtime.settings)
        folder = resources.files("gateway.console").joinpath("templates")
        self.templates = Jinja2Templates(directory=str(folder))
        self.templates.env.globals["status_label"] = lambda s: STATUS_LABELS.get(s, s)
        self.templates.env.globals["role_label"] = lambda r: ROLE_LABELS.get(r, r)
        self.templates.env.filters["when"] = _when
        self.templates.env.filters["duration"] = _duration


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return queries.as_utc(value).strftime("%d/%m/%Y %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


State = Annotated[ConsoleState, Depends(_state)]


@contextmanager
def _db(state: ConsoleState) -> Iterator[Session]:
    session = state.runtime.session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


class Ctx:
    """The request's session cookie and user (None when anonymous)."""

    def __init__(self, request: Request, state: ConsoleState) -> None:
        self.request = request
        self.state = state
        loaded = state.signer.load(request.cookies.get(COOKIE))
        self.fresh = loaded is None
        self.data: SessionData = loaded or SessionData.anonymous(state.signer.lifetime)
        self.principal: ConsolePrincipal | None = None
        self.tenant_names: dict[str, str] = {}
        if self.data.user_id is not None:
            with _db(state) as session:
                user = accounts.load_user(session, self.data.user_id)
                if user is not None and user.active and user.session_epoch == self.data.epoch:
                    self.principal = accounts.principal_of(user)
                    ids = list(self.principal.tenants) or []
                    rows = session.execute(select(Tenant.id, Tenant.code, Tenant.name).where(Tenant.id.in_(ids)))
                    self.tenant_names = {tid: f"{name} ({code})" for tid, code, name in rows}
            if self.principal is None:  # user gone, disabled, or sessions ended: anonymous again
                self.data = SessionData.anonymous(state.signer.lifetime)
                self.fresh = True

    @property
    def csrf(self) -> str:
        return self.state.signer.csrf_token(self.data)

    def finish(self, response: Response) -> Response:
        if self.fresh:
            self.set_cookie(response)
        response.headers["Cache-Control"] = "no-store"
        return response

    def set_cookie(self, response: Response) -> None:
        response.set_cookie(
            COOKIE,
            self.state.signer.dump(self.data),
            max_age=self.state.signer.lifetime,
            path=PREFIX,
            secure=self.state.signer.secure,
            httponly=True,
            samesite="strict",
        )


def _ctx(request: Request, state: State) -> Ctx:
    return Ctx(request, state)


CtxDep = Annotated[Ctx, Depends(_ctx)]


async def _form(request: Request) -> dict[str, list[str]]:
    body = await request.body()
    if len(body) > 256 * 1024:
        return {}
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


FormDep = Annotated[dict[str, list[str]], Depends(_form)]


def _one(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[0]


def page(ctx: Ctx, name: str, status: int = 200, **values: Any) -> Response:
    tenant = values.get("tenant")
    response = ctx.state.templates.TemplateResponse(
        ctx.request,
        name,
        {
            "principal": ctx.principal,
            "csrf": ctx.csrf,
            "tenant_names": ctx.tenant_names,
            "tenant": tenant,
            "tq": f"?t={tenant.tenant_id}" if isinstance(tenant, TenantAccess) else "",
            "prefix": PREFIX,
            **values,
        },
        status_code=status,
    )
    return ctx.finish(response)


def _message(ctx: Ctx, status: int, title: str, text: str) -> Response:
    return page(ctx, "message.html", status=status, title=title, text=text)


def _login_redirect(ctx: Ctx) -> Response:
    target = ctx.request.url.path
    if ctx.request.url.query:
        target += "?" + ctx.request.url.query
    return ctx.finish(RedirectResponse(f"{PREFIX}/connexion?{urlencode({'suite': target})}", status_code=303))


class Stop(Exception):
    """A page cannot be served: the response to send instead."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _user(ctx: Ctx) -> ConsolePrincipal:
    if ctx.principal is None:
        raise Stop(_login_redirect(ctx))
    return ctx.principal


def _tenant(ctx: Ctx, *, need: str = "clinical") -> TenantAccess:
    """The tenant of ``?t=`` (or the first suitable one) if the user may ``need`` there."""
    principal = _user(ctx)
    wanted = ctx.request.query_params.get("t")

    def fits(access: TenantAccess) -> bool:
        if need == "clinical":
            return access.can_read_clinical
        if need == "admin":
            return access.can_administer
        return True

    if wanted:
        access = principal.access(wanted)
        if access is None:
            raise Stop(_message(ctx, 404, "Introuvable", "Cette page n'existe pas ou ne vous est pas accessible."))
    else:
        candidates = [a for a in principal.tenants.values() if fits(a)]
        if not candidates:
            raise Stop(_refused(ctx))
        access = candidates[0]
    if not fits(access):
        raise Stop(_refused(ctx))
    return access


CSRF_REFUSED = ("Requête refusée", "Jeton de sécurité (CSRF) absent ou invalide. Rechargez la page et recommencez.")


def _check_csrf(ctx: Ctx, form: dict[str, list[str]]) -> None:
    """Every form of the console carries the session's CSRF token: a 403 page (``Stop``) otherwise."""
    if not ctx.state.signer.check_csrf(ctx.data, _one(form, "csrf")):
        raise Stop(_message(ctx, 403, *CSRF_REFUSED))


def _refused(ctx: Ctx) -> Response:
    return _message(
        ctx,
        403,
        "Accès refusé",
        "Votre rôle ne permet pas cette action ou cette page. Demandez le rôle nécessaire à un administrateur.",
    )


def _guard(fn: Any) -> Any:
    """Turn :class:`Stop` into its response (keeps the routes linear)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            result: Response = fn(*args, **kwargs)
            return result
        except Stop as stop:
            return stop.response

    return wrapper


# -- login / logout ---------------------------------------------------------------------------
def _safe_next(value: str | None) -> str:
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/"


@router.get("/connexion", response_class=HTMLResponse)
@_guard
def login_form(ctx: CtxDep) -> Response:
    return page(
        ctx,
        "login.html",
        suite=_safe_next(ctx.request.query_params.get("suite")),
        oidc_label=ctx.state.oidc.label if ctx.state.oidc else None,
        error=None,
    )


@router.post("/connexion", response_class=HTMLResponse)
@_guard
def login(ctx: CtxDep, form: FormDep) -> Response:
    suite = _safe_next(_one(form, "suite"))
    oidc_label = ctx.state.oidc.label if ctx.state.oidc else None
    if not ctx.state.signer.check_csrf(None if ctx.fresh else ctx.data, _one(form, "csrf")):
        return page(ctx, "login.html", status=403, suite=suite, oidc_label=oidc_label, error="csrf")
    settings = ctx.state.runtime.settings
    source = ctx.request.client.host if ctx.request.client else ""
    with _db(ctx.state) as session:
        result = accounts.authenticate_local(
            session,
            username=_one(form, "identifiant").strip(),
            password=_one(form, "mot_de_passe"),
            threshold=settings.console_lockout_threshold,
            lockout_seconds=settings.console_lockout_seconds,
            source=source,
        )
        user_id = result.user.id if result.user is not None else None
        epoch = result.user.session_epoch if result.user is not None else 0
    if user_id is None:
        error = "locked" if result.locked else "invalid"
        return page(ctx, "login.html", status=401, suite=suite, oidc_label=oidc_label, error=error)
    return _open_session(ctx, user_id, epoch, suite)


def _open_session(ctx: Ctx, user_id: str, epoch: int, target: str) -> Response:
    signer = ctx.state.signer
    ctx.data = SessionData(
        nonce=uuid.uuid4().hex, user_id=user_id, epoch=epoch, expires=SessionData.anonymous(signer.lifetime).expires
    )
    response = RedirectResponse(target, status_code=303)
    ctx.set_cookie(response)
    response.delete_cookie(OIDC_COOKIE, path=PREFIX)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/deconnexion")
@_guard
def logout(ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    if ctx.principal is not None:  # the cookie is stateless: end every session of this user
        with _db(ctx.state) as session:
            user = accounts.load_user(session, ctx.principal.user_id)
            if user is not None:
                accounts.end_sessions(session, user=user, actor=ctx.principal.actor)
    response = RedirectResponse(f"{PREFIX}/connexion", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


def _redirect_uri(ctx: Ctx) -> str:
    base = ctx.state.runtime.settings.oidc_redirect_base
    root = base.rstrip("/") if base else str(ctx.request.base_url).rstrip("/")
    return f"{root}{PREFIX}/oidc/retour"


@router.get("/oidc/connexion")
@_guard
def oidc_start(ctx: CtxDep) -> Response:
    oidc = ctx.state.oidc
    if oidc is None:
        return _message(ctx, 404, "Introuvable", "La connexion OpenID Connect n'est pas configurée.")
    try:
        url, kept = oidc.start(_redirect_uri(ctx))
    except Exception as exc:  # the provider is down or misconfigured: say so, log the type
        _log.warning("oidc_discovery_failed", error_type=type(exc).__name__)
        return _message(ctx, 502, "Fournisseur d'identité indisponible", "Réessayez plus tard.")
    kept["suite"] = _safe_next(ctx.request.query_params.get("suite"))
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        OIDC_COOKIE,
        ctx.state.signer.sign("oidc", kept),
        max_age=600,
        path=PREFIX,
        secure=ctx.state.signer.secure,
        httponly=True,
        samesite="lax",  # the provider's redirect back is a cross-site top-level GET
    )
    return ctx.finish(response)


@router.get("/oidc/retour")
@_guard
def oidc_callback(ctx: CtxDep) -> Response:
    oidc = ctx.state.oidc
    if oidc is None:
        return _message(ctx, 404, "Introuvable", "La connexion OpenID Connect n'est pas configurée.")
    kept = ctx.state.signer.unsign("oidc", ctx.request.cookies.get(OIDC_COOKIE))
    params = ctx.request.query_params
    failed = _message(ctx, 401, "Connexion refusée", "La connexion via le fournisseur d'identité a échoué.")
    if kept is None or not params.get("code") or params.get("state") != kept.get("s"):
        return failed
    try:
        login = oidc.finish(redirect_uri=_redirect_uri(ctx), code=params["code"], kept=kept)
    except (OidcError, KeyError, ValueError) as exc:
        _log.warning("oidc_login_refused", reason=str(exc)[:200])
        return failed
    with _db(ctx.state) as session:
        user = accounts.find_oidc_user(session, issuer=login.issuer, subject=login.subject)
        if user is None or not user.active:
            from gateway import audit

            audit.append(
                session,
                actor="console",
                action="login_failed",
                entity_type="user",
                entity_id=user.id if user is not None else "unknown",
                outcome="failure",
                detail={"method": "oidc", "issuer": login.issuer, "reason": "no_console_user"},
            )
            return _message(
                ctx,
                403,
                "Compte inconnu",
                "Votre identité est reconnue, mais aucun compte de la console ne lui est associé. "
                "Demandez à un administrateur de vous créer un accès.",
            )
        accounts.record_oidc_login(session, user=user, issuer=login.issuer, source="oidc")
        user_id, epoch = user.id, user.session_epoch
    return _open_session(ctx, user_id, epoch, _safe_next(str(kept.get("suite"))))


# -- pages --------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
@_guard
def home(ctx: CtxDep) -> Response:
    principal = _user(ctx)
    if principal.clinical_tenants():
        return RedirectResponse(f"{PREFIX}/flux", status_code=303)
    if principal.admin_tenants():
        return RedirectResponse(f"{PREFIX}/audit", status_code=303)
    return RedirectResponse(f"{PREFIX}/tableau-de-bord", status_code=303)


def _parse_day(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None


def _filters(ctx: Ctx, access: TenantAccess) -> tuple[queries.SubmissionFilter, dict[str, str]]:
    q = ctx.request.query_params
    raw = {k: q.get(k, "").strip() for k in ("statut", "type", "destination", "essms", "du", "au", "personne", "q")}
    person = raw["personne"] or None
    search = raw["q"]
    if search and not person:
        person = search
    essms = raw["essms"] or None
    if essms is not None and not access.sees_essms(essms):
        essms = "-"  # matches nothing: an ESSMS outside the user's grant is not theirs to list
    until = _parse_day(raw["au"])
    filters = queries.SubmissionFilter(
        status=[raw["statut"]] if raw["statut"] else [],
        document_type=raw["type"] or None,
        essms=essms,
        essms_any=sorted(access.essms) if access.essms is not None else (),
        person_ref=person,
        created_from=_parse_day(raw["du"]),
        created_to=until + timedelta(days=1) if until else None,
        destination=raw["destination"] or None,
    )
    return filters, raw


@router.get("/flux", response_class=HTMLResponse)
@_guard
def flows(ctx: CtxDep) -> Response:
    access = _tenant(ctx)
    principal = _user(ctx)
    search = ctx.request.query_params.get("q", "").strip()
    filters, raw = _filters(ctx, access)
    cursor = ctx.request.query_params.get("apres") or None
    with _db(ctx.state) as session:
        if search:
            try:
                uuid.UUID(search)
            except ValueError:
                pass
            else:  # a submission id: straight to its page (still checked there)
                return RedirectResponse(f"{PREFIX}/flux/{search}?t={access.tenant_id}", status_code=303)
        try:
            result = queries.list_submissions(
                session, tenant_id=access.tenant_id, actor=principal.actor, filters=filters, cursor=cursor, limit=50
            )
        except GatewayError:
            result = queries.Page(items=[])
        counts = data.status_counts(session, tenant_id=access.tenant_id, filters=filters)
        options = data.filter_options(
            session, tenant_id=access.tenant_id, essms_any=sorted(access.essms) if access.essms else ()
        )
        rows = [
            {
                "id": s.id,
                "created_at": s.created_at,
                "status": s.status,
                "document_type": s.document_type,
                "essms": s.essms_finess,
                "person_ref": s.person_ref,
                "destinations": sorted({d.destination for d in s.deliveries}),
            }
            for s in result.items
        ]
    query = {k: v for k, v in raw.items() if v}
    query["t"] = access.tenant_id
    next_url = f"{PREFIX}/flux?{urlencode({**query, 'apres': result.next_cursor})}" if result.next_cursor else None
    counts_query = urlencode({k: v for k, v in query.items() if k != "statut"})
    return page(
        ctx,
        "flows.html",
        tenant=access,
        rows=rows,
        counts=counts,
        raw=raw,
        options=options,
        statuses=data.SUBMISSION_STATUSES,
        next_url=next_url,
        counts_url=f"{PREFIX}/api/compteurs?{counts_query}",
    )


@router.get("/api/compteurs")
@_guard
def counts_json(ctx: CtxDep) -> Response:
    """Counts per status for the live counters (no person data; the same filters as the list)."""
    if ctx.principal is None:
        return JSONResponse({"error": "unauthenticated"}, status_code=401)
    try:
        access = _tenant(ctx)
    except Stop:
        return JSONResponse({"error": "forbidden"}, status_code=404)
    filters, _ = _filters(ctx, access)
    with _db(ctx.state) as session:
        counts = data.status_counts(session, tenant_id=access.tenant_id, filters=filters)
    response = JSONResponse({"counts": counts, "total": sum(counts.values()), "at": datetime.now(UTC).isoformat()})
    response.headers["Cache-Control"] = "no-store"
    return response


def _load_visible(session: Session, access: TenantAccess, submission_id: str) -> Any:
    try:
        sub = queries.get_submission(session, tenant_id=access.tenant_id, submission_id=submission_id)
    except NotFound:
        return None
    if not access.sees_essms(sub.essms_finess):
        return None
    return sub


def _not_found(ctx: Ctx) -> Response:
    return _message(ctx, 404, "Introuvable", "Cette page n'existe pas ou ne vous est pas accessible.")


def _report_issues(report: dict[str, Any] | None) -> list[dict[str, str]]:
    """The conformance report's failures as (document, rule, location, message): the report is
    stored already redacted of the document's values (gateway.conformance.redact_report)."""
    issues: list[dict[str, str]] = []
    if not report:
        return issues
    if report.get("error"):
        err = report["error"]
        issues.append(
            {
                "document": report.get("stage", ""),
                "rule": str(err.get("code", "")) if isinstance(err, dict) else "",
                "location": str(err.get("pointer", "")) if isinstance(err, dict) else "",
                "message": str(err.get("message", err)) if isinstance(err, dict) else str(err),
            }
        )
    for error in report.get("errors", []) or []:
        if isinstance(error, dict):
            issues.append(
                {
                    "document": report.get("stage", ""),
                    "rule": str(error.get("code", "")),
                    "location": str(error.get("pointer", "")),
                    "message": str(error.get("message", "")),
                }
            )
    for rendition in report.get("renditions", []) or []:
        for check in rendition.get("checks", []):
            if check.get("ok"):
                continue
            inner = check.get("report") or {}
            for finding in inner.get("findings", []) or []:
                if finding.get("severity", "error") != "error":
                    continue
                rule = finding.get("assert_id") or finding.get("pattern") or finding.get("stage", "")
                issues.append(
                    {
                        "document": f"{rendition.get('kind', '')} ({check.get('tag', '')})",
                        "rule": str(rule),
                        "location": str(finding.get("location") or finding.get("line") or ""),
                        "message": str(finding.get("message", "")),
                    }
                )
            for issue in inner.get("issue", []) or []:
                if issue.get("severity") not in ("error", "fatal"):
                    continue
                issues.append(
                    {
                        "document": f"{rendition.get('kind', '')} ({check.get('tag', '')})",
                        "rule": str(issue.get("code", "")),
                        "location": ", ".join(issue.get("expression", []) or issue.get("location", []) or []),
                        "message": str(issue.get("diagnostics") or (issue.get("details") or {}).get("text", "")),
                    }
                )
    return issues


@router.get("/flux/{submission_id}", response_class=HTMLResponse)
@_guard
def flow_detail(submission_id: str, ctx: CtxDep) -> Response:
    access = _tenant(ctx)
    principal = _user(ctx)
    with _db(ctx.state) as session:
        if _load_visible(session, access, submission_id) is None:
            return _not_found(ctx)
        sub = queries.view_submission(
            session, tenant_id=access.tenant_id, submission_id=submission_id, actor=principal.actor
        )
        events = data.timeline(session, sub)
        user_ids = {e.actor.removeprefix("user:") for e in events if e.actor.startswith("user:")}
        names = {
            uid: name for uid, name in session.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
        }
        actors = {e.seq: names.get(e.actor.removeprefix("user:"), e.actor) for e in events}
        deliveries = [
            {
                "row": d,
                "attempts": list(d.attempts),
                "receipts": list(d.receipts),
                "retryable": d.status in ("dead", "failed", "unconfirmed"),
            }
            for d in sub.deliveries
        ]
        view = {
            "id": sub.id,
            "status": sub.status,
            "document_type": sub.document_type,
            "essms": sub.essms_finess,
            "person_ref": sub.person_ref,
            "created_at": sub.created_at,
            "updated_at": sub.updated_at,
            "correlation_id": sub.correlation_id,
            "renditions": [
                {"kind": r.kind, "media_type": r.media_type, "document_id": r.document_id, "version": r.version}
                for r in sub.renditions
            ],
        }
        issues = _report_issues(sub.report) if sub.status == "rejected" else []
        response = page(
            ctx,
            "flow.html",
            tenant=access,
            sub=view,
            events=events,
            actors=actors,
            deliveries=deliveries,
            issues=issues,
            can_operate=access.can_operate,
        )
    return response


@router.get("/flux/{submission_id}/document/{kind}", response_class=HTMLResponse)
@_guard
def flow_document(submission_id: str, kind: str, ctx: CtxDep) -> Response:
    from gateway.console.render import render_document

    access = _tenant(ctx)
    principal = _user(ctx)
    with _db(ctx.state) as session:
        if _load_visible(session, access, submission_id) is None:
            return _not_found(ctx)
        try:
            rendition, content = queries.read_rendition(
                session,
                tenant_id=access.tenant_id,
                submission_id=submission_id,
                kind=kind,
                keyring=ctx.state.runtime.keyring,
                actor=principal.actor,
            )
        except NotFound:
            return _not_found(ctx)
        html = render_document(content, rendition.media_type)
        meta = {"kind": rendition.kind, "document_id": rendition.document_id, "version": rendition.version}
    return page(ctx, "document.html", tenant=access, sub_id=submission_id, meta=meta, html=html)


@router.get("/flux/{submission_id}/confirmer", response_class=HTMLResponse)
@_guard
def confirm_action(submission_id: str, ctx: CtxDep) -> Response:
    access = _tenant(ctx)
    action = ctx.request.query_params.get("action", "")
    delivery = ctx.request.query_params.get("envoi", "")
    if action not in ACTION_LABELS:
        return _not_found(ctx)
    if not access.can_operate:
        return _refused(ctx)
    with _db(ctx.state) as session:
        if _load_visible(session, access, submission_id) is None:
            return _not_found(ctx)
    return page(
        ctx,
        "confirm.html",
        tenant=access,
        sub_id=submission_id,
        action=action,
        action_label=ACTION_LABELS[action],
        delivery=delivery,
    )


@router.post("/flux/{submission_id}/actions", response_class=HTMLResponse)
@_guard
def run_action(submission_id: str, ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    access = _tenant(ctx)
    principal = _user(ctx)
    if not access.can_operate:
        return _refused(ctx)
    action = _one(form, "action")
    if action not in ACTION_LABELS:
        return _not_found(ctx)
    if _one(form, "confirmation") != "oui":
        return _message(ctx, 400, "Confirmation requise", "Cochez la case de confirmation pour lancer l'action.")
    settings = ctx.state.runtime.settings
    try:
        with _db(ctx.state) as session:
            if _load_visible(session, access, submission_id) is None:
                return _not_found(ctx)
            if action == "retry":
                delivery_id = _one(form, "envoi")
                delivery = operations.retry_delivery(
                    session, delivery_id=delivery_id, actor=principal.actor, tenant_id=access.tenant_id
                )
                if delivery.submission_id != submission_id:
                    raise NotFound("delivery of another submission")
            elif action == "replay":
                operations.replay_submission(
                    session,
                    submission_id=submission_id,
                    actor=principal.actor,
                    tenant_id=access.tenant_id,
                    min_interval_seconds=settings.replay_min_interval_seconds,
                )
            else:
                operations.cancel_submission(
                    session, submission_id=submission_id, actor=principal.actor, tenant_id=access.tenant_id
                )
    except NotFound:
        return _not_found(ctx)
    except (Conflict, TooManyRequests) as exc:
        return _message(
            ctx,
            409,
            "Action impossible",
            f"L'action n'est pas possible dans l'état actuel de la soumission (détail : {exc.detail}).",
        )
    ctx.state.runtime.wake_workers()
    return ctx.finish(
        RedirectResponse(f"{PREFIX}/flux/{submission_id}?t={access.tenant_id}&fait={action}", status_code=303)
    )


@router.get("/lettres-mortes", response_class=HTMLResponse)
@_guard
def dead_letters(ctx: CtxDep) -> Response:
    access = _tenant(ctx)
    with _db(ctx.state) as session:
        rows = [
            {
                "delivery_id": d.id,
                "submission_id": s.id,
                "destination": d.destination,
                "attempts": d.attempt_count,
                "last_error": d.last_error,
                "updated_at": d.updated_at,
                "document_type": s.document_type,
                "essms": s.essms_finess,
            }
            for d, s in data.dead_letters(
                session, tenant_id=access.tenant_id, essms_any=sorted(access.essms) if access.essms else ()
            )
        ]
    done = ctx.request.query_params.get("relances")
    return page(ctx, "dead_letters.html", tenant=access, rows=rows, done=done, can_operate=access.can_operate)


@router.post("/lettres-mortes/relancer", response_class=HTMLResponse)
@_guard
def dead_letters_retry(ctx: CtxDep, form: FormDep) -> Response:
    _check_csrf(ctx, form)
    access = _tenant(ctx)
    principal = _user(ctx)
    if not access.can_operate:
        return _refused(ctx)
    if _one(form, "confirmation") != "oui":
        return _message(ctx, 400, "Confirmation requise", "Cochez la case de confirmation pour relancer les envois.")
    ids = [i for i in form.get("envoi", []) if i][:200]
    retried = 0
    refused: list[str] = []
    for delivery_id in ids:
        try:
            with _db(ctx.state) as session:  # one transaction each: one refusal does not undo the others
                delivery = operations.retry_delivery(
                    session, delivery_id=delivery_id, actor=principal.actor, tenant_id=access.tenant_id
                )
                sub = session.get(Submission, delivery.submission_id)
                if sub is None or not access.sees_essms(sub.essms_finess):
                    raise NotFound("not visible")
            retried += 1
        except (NotFound, Conflict):
            refused.append(delivery_id)
    ctx.state.runtime.wake_workers()
    if refused:
        return _message(
            ctx,
            409,
            "Relance partielle",
            f"{retried} envoi(s) relancé(s) ; {len(refused)} n'ont pas pu l'être (déjà relancés, version plus "
            "récente en cours ou introuvables).",
        )
    return ctx.finish(
        RedirectResponse(f"{PREFIX}/lettres-mortes?t={access.tenant_id}&relances={retried}", status_code=303)
    )


@router.get("/entrants", response_class=HTMLResponse)
@_guard
def inbound(ctx: CtxDep) -> Response:
    access = _tenant(ctx)
    with _db(ctx.state) as session:
        rows = [
            {
                "id": m.id,
                "source": m.source,
                "received_at": m.received_at,
                "status": m.status,
                "note": m.note,
                "media_type": m.media_type,
                "size": m.size,
            }
            for m in data.unmatched_inbound(session, tenant_id=access.tenant_id)
        ]
    return page(ctx, "inbound.html", tenant=access, rows=rows)


def _platform_or_tenant(ctx: Ctx) -> tuple[list[str] | None, TenantAccess | None]:
    """Metadata pages: the platform operator sees every tenant; others their tenant."""
    principal = _user(ctx)
    if principal.platform_operator and not ctx.request.query_params.get("t"):
        return None, None
    access = _tenant(ctx, need="any")
    return [access.tenant_id], access


@router.get("/connecteurs", response_class=HTMLResponse)
@_guard
def connectors(ctx: CtxDep) -> Response:
    _, access = _platform_or_tenant(ctx)
    runtime = ctx.state.runtime
    circuits = runtime.bulkheads.snapshot()
    rows = []
    for name, health in sorted(runtime.health().items()):
        lane = circuits.get(name, {})
        rows.append(
            {
                "name": name,
                "ok": health.ok,
                "detail": health.detail,
                "circuit": lane.get("circuit", "closed"),
                "in_flight": lane.get("in_flight", 0),
                "limit": lane.get("limit", 0),
                "failures": lane.get("consecutive_failures", 0),
                "retry_in": lane.get("retry_in_seconds", 0.0),
            }
        )
    return page(ctx, "connectors.html", tenant=access, rows=rows)


@router.get("/tableau-de-bord", response_class=HTMLResponse)
@_guard
def dashboard(ctx: CtxDep) -> Response:
    tenant_ids, access = _platform_or_tenant(ctx)
    with _db(ctx.state) as session:
        board = data.dashboard(session, tenant_ids=tenant_ids)
    labels = [h.strftime("%Hh") for h in board.hours]
    throughput = Markup(charts.bar_chart("Soumissions reçues par heure (24 h)", labels, board.throughput))  # noqa: S704
    error_rows = [
        (dest, (bad / total * 100) if total else 0.0, f"{bad}/{total} ({(bad / total * 100 if total else 0):.0f} %)")
        for dest, (bad, total) in board.errors.items()
    ]
    errors = Markup(charts.hbar_chart("Taux d'erreur par destination (24 h)", error_rows, maximum=100))  # noqa: S704
    queue_rows = [(dest, float(n), str(n)) for dest, n in board.queue_by_destination.items()]
    queue = Markup(charts.hbar_chart("File d'attente par destination", queue_rows))  # noqa: S704
    lat_rows = [(k, v or 0.0, _duration(v)) for k, v in board.latency_seconds.items()]
    latency = Markup(charts.hbar_chart("Latence de bout en bout (réception → remise)", lat_rows))  # noqa: S704
    return page(
        ctx,
        "dashboard.html",
        tenant=access,
        board=board,
        labels=labels,
        charts={"throughput": throughput, "errors": errors, "queue": queue, "latency": latency},
        all_tenants=tenant_ids is None,
    )


@router.get("/audit", response_class=HTMLResponse)
@_guard
def audit_view(ctx: CtxDep) -> Response:
    access = _tenant(ctx, need="admin")
    action = ctx.request.query_params.get("action") or None
    before = ctx.request.query_params.get("avant")
    with _db(ctx.state) as session:
        events = data.audit_page(
            session,
            tenant_id=access.tenant_id,
            action=action,
            before_seq=int(before) if before and before.isdigit() else None,
        )
        users = {f"user:{uid}": name for uid, name in session.execute(select(User.id, User.username)).all()}
        rows = [
            {
                "seq": e.seq,
                "at": e.recorded_at,
                "actor": users.get(e.actor, e.actor),
                "action": e.action,
                "entity": f"{e.entity_type} {e.entity_id}",
                "submission": (e.detail or {}).get("submission_id"),
                "view": (e.detail or {}).get("view") or (e.detail or {}).get("kind") or "",
                "outcome": e.outcome,
            }
            for e in events
        ]
    more = None
    if len(rows) == 100:
        older = {"t": access.tenant_id, "avant": rows[-1]["seq"], **({"action": action} if action else {})}
        more = f"{PREFIX}/audit?{urlencode(older)}"
    return page(ctx, "audit.html", tenant=access, rows=rows, action=action or "", more=more)
