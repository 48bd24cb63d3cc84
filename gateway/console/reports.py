"""The console's indicators page (``/console/indicateurs``, issue #11): per ESSMS, the occupancy of
a year by month or quarter and per accommodation type (an inline SVG chart with its figures as a
table), the chosen period's key figures, and the period's CSV/JSON exports.

Everything comes from :mod:`gateway.services.stays`, the API's own computation: the dataset of
``GET /v1/essms/{finess}/indicators/{period}`` and the daily series of ``…/occupancy`` summed per
period. The figures are aggregates, but computing them reads (decrypts) the ESSMS's stay events,
which are about persons: the page is for the tenant's lecteurs and opérateurs (an ESSMS-limited
grant sees its ESSMS only), and each computation is audited like the API's (docs/indicators.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from sqlalchemy import select

from gateway.console import charts
from gateway.console.roles import TenantAccess
from gateway.console.routes import PREFIX, Ctx, CtxDep, _db, _guard, _message, _tenant, page
from gateway.services import stays
from gateway.storage.models import Essms
from reporting import Figures, Period
from reporting.export import to_csv, to_json_bytes
from reporting.indicators import TOTAL

__all__ = ["router"]

router = APIRouter(prefix=PREFIX, include_in_schema=False)

MONTHS = ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.", "déc.")
MONTH_NAMES = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)
ACCOMMODATION_LABELS = {
    TOTAL: "Tous types",
    "permanent": "Hébergement permanent",
    "temporary": "Hébergement temporaire",
    "day_care": "Accueil de jour",
    "night_care": "Accueil de nuit",
    "pasa": "PASA",
    "uhr": "UHR",
    "semi_boarding": "Semi-internat",
    "boarding": "Internat",
    "home_service": "Service à domicile",
}
BY_LABELS = {"month": "par mois", "quarter": "par trimestre"}


def _label(acc: str) -> str:
    return ACCOMMODATION_LABELS.get(acc, acc)


def _period_label(period: Period) -> str:
    if period.kind == "month":
        return f"{MONTH_NAMES[period.start.month - 1]} {period.start.year}"
    if period.kind == "quarter":
        return f"{period.code[-2:].replace('Q', 'T')} {period.start.year}"
    return f"année {period.start.year}"


def _short_label(period: Period) -> str:
    if period.kind == "month":
        return MONTHS[period.start.month - 1]
    return period.code[-2:].replace("Q", "T")


def fr_number(value: float | None, digits: int = 0, unit: str = "") -> str:
    """French formatting: decimal comma, narrow no-break space between thousands; — when undefined."""
    if value is None:
        return "—"
    text = f"{value:,.{digits}f}".replace(",", "\u202f").replace(".", ",")
    return f"{text}{unit}"


# the key figures of the page (the dataset has more: the exports carry them all)
KEY_FIGURES: tuple[tuple[str, str, int, str], ...] = (
    ("places", "Places autorisées (fin de période)", 0, ""),
    ("theoretical_days", "Journées théoriques", 0, ""),
    ("days_realised", "Journées réalisées", 0, ""),
    ("days_billable", "Journées facturables", 0, ""),
    ("occupancy_rate", "Taux d'occupation", 2, "\u00a0%"),
    ("people_accompanied", "Personnes accompagnées", 0, ""),
    ("entries", "Entrées", 0, ""),
    ("exits", "Sorties", 0, ""),
    ("average_length_of_stay", "Durée moyenne de séjour des sortis (jours)", 1, ""),
)


def _essms_options(ctx: Ctx, access: TenantAccess) -> list[tuple[str, str]]:
    with _db(ctx.state) as session:
        rows = session.execute(
            select(Essms.finess, Essms.name).where(Essms.tenant_id == access.tenant_id).order_by(Essms.finess)
        ).all()
    return [(finess, name) for finess, name in rows if access.sees_essms(finess)]


def _choices(ctx: Ctx, access: TenantAccess) -> tuple[list[tuple[str, str]], str | None, Period | None, str]:
    """The ESSMS the user may see, the chosen one (None: not theirs), the period, the chart's step."""
    q = ctx.request.query_params
    options = _essms_options(ctx, access)
    finess = q.get("essms") or (options[0][0] if options else "")
    chosen = finess if any(f == finess for f, _ in options) else None
    try:
        period: Period | None = Period.parse(q.get("periode") or str(datetime.now(UTC).year))
    except ValueError:
        period = None
    by = q.get("decoupage", "month")
    return options, chosen, period, by if by in BY_LABELS else "month"


@router.get("/indicateurs", response_class=HTMLResponse)
@_guard
def indicators(ctx: CtxDep) -> Response:
    access = _tenant(ctx)
    principal = ctx.principal
    assert principal is not None  # _tenant sent anonymous users to the login page
    options, finess, period, by = _choices(ctx, access)
    if not options:
        return _message(ctx, 404, "Aucun établissement", "Aucun ESSMS de cet organisme ne vous est accessible.")
    if finess is None:
        return _message(ctx, 404, "Introuvable", "Cette page n'existe pas ou ne vous est pas accessible.")
    if period is None:
        return _message(
            ctx, 400, "Période invalide", "Une période s'écrit 2026, 2026-Q1 (trimestre) ou 2026-03 (mois)."
        )
    with _db(ctx.state) as session:
        view = stays.overview(
            session,
            tenant_id=access.tenant_id,
            finess=finess,
            period=period,
            by=by,
            keyring=ctx.state.runtime.keyring,
            actor=principal.actor,
        )
    ds = view.dataset
    groups: list[tuple[str, Figures]] = [(TOTAL, ds.totals)]
    groups += [(acc, ds.by_accommodation[acc]) for acc in view.accommodations if acc in ds.by_accommodation]
    figures = [
        {"label": label, "cells": [fr_number(getattr(fig, name), digits, unit) for _, fig in groups]}
        for name, label, digits, unit in KEY_FIGURES
    ]
    lines = [TOTAL, *view.accommodations]
    labels = [_short_label(p) for p in view.chart_periods]
    year = view.chart_periods[0].start.year
    chart = charts.line_chart(
        "occupation",
        f"Taux d'occupation {BY_LABELS[by]}, {year}, ESSMS {finess}",
        labels,
        [(_label(acc), [row["occupancy_rate"] for row in view.occupancy[acc]]) for acc in lines],
    )
    chart_rows = [
        {
            "label": _period_label(p),
            "code": p.code,
            "cells": [
                {
                    "rate": fr_number(view.occupancy[acc][i]["occupancy_rate"], 1, "\u00a0%"),
                    "detail": f"{fr_number(view.occupancy[acc][i]['in_stay_days'])} / "
                    f"{fr_number(view.occupancy[acc][i]['place_days'])}",
                }
                for acc in lines
            ],
        }
        for i, p in enumerate(view.chart_periods)
    ]
    base = {"t": access.tenant_id, "essms": finess, "periode": period.code}

    def link(code: str) -> str:
        return f"{PREFIX}/indicateurs?{urlencode({**base, 'periode': code, 'decoupage': by})}"

    for row in chart_rows:
        row["url"] = link(str(row["code"]))
    return page(
        ctx,
        "indicators.html",
        tenant=access,
        essms_options=options,
        finess=finess,
        period=period,
        period_label=_period_label(period),
        year=year,
        year_links={"previous": link(str(year - 1)), "current": link(str(year)), "next": link(str(year + 1))},
        by=by,
        by_labels=BY_LABELS,
        chart=Markup(chart),  # noqa: S704 - built by charts.line_chart, every text escaped there
        chart_rows=chart_rows,
        columns=[_label(acc) for acc in lines],
        group_labels=[_label(acc) for acc, _ in groups],
        figures=figures,
        events_used=ds.events_used,
        anomalies=ds.anomalies,
        exports={fmt: f"{PREFIX}/indicateurs/export?{urlencode({**base, 'format': fmt})}" for fmt in ("csv", "json")},
    )


@router.get("/indicateurs/export")
@_guard
def indicators_export(ctx: CtxDep) -> Response:
    """The period's dataset in the API's layout (CSV or JSON 1.0), for the console's users."""
    access = _tenant(ctx)
    principal = ctx.principal
    assert principal is not None
    _, finess, period, _ = _choices(ctx, access)
    fmt = ctx.request.query_params.get("format", "csv")
    if finess is None or fmt not in ("csv", "json"):
        return _message(ctx, 404, "Introuvable", "Cette page n'existe pas ou ne vous est pas accessible.")
    if period is None:
        return _message(
            ctx, 400, "Période invalide", "Une période s'écrit 2026, 2026-Q1 (trimestre) ou 2026-03 (mois)."
        )
    with _db(ctx.state) as session:
        ds = stays.dataset(
            session,
            tenant_id=access.tenant_id,
            finess=finess,
            period=period,
            keyring=ctx.state.runtime.keyring,
            actor=principal.actor,
        )
    name = f"indicateurs-{finess}-{period.code}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    if fmt == "csv":
        return Response(to_csv([ds]), media_type="text/csv; charset=utf-8", headers=headers)
    return Response(to_json_bytes([ds]), media_type="application/json", headers=headers)
