"""Inline SVG charts, drawn on the server: no JavaScript, no CDN, readable by screen readers
(each chart has a ``<title>``, a ``<desc>`` and the figures as a table next to it)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart", "hbar_chart", "line_chart"]

_W, _H, _PAD = 640, 200, 32


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], *, unit: str = "") -> str:
    """Vertical bars (one per label), the largest value scaled to the chart's height."""
    top = max([*values, 1])
    n = max(1, len(values))
    step = (_W - 2 * _PAD) / n
    bars = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = (_H - 2 * _PAD) * value / top
        x = _PAD + i * step
        y = _H - _PAD - h
        bars.append(
            f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(1.0, step - 2):.1f}" height="{h:.1f}" class="bar">'
            f"<title>{escape(label)} : {value:g}{escape(unit)}</title></rect>"
        )
        if i % max(1, n // 8) == 0:
            bars.append(
                f'<text x="{x + step / 2:.1f}" y="{_H - _PAD + 14}" text-anchor="middle" class="axis">'
                f"{escape(label)}</text>"
            )
    desc = ", ".join(f"{label} : {value:g}" for label, value in zip(labels, values, strict=True))
    return (
        f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-labelledby="t-{id(title)}" class="chart">'
        f'<title id="t-{id(title)}">{escape(title)}</title><desc>{escape(desc)}</desc>'
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" class="axisline"/>'
        f'<text x="{_PAD}" y="{_PAD - 10}" class="axis">max {top:g}{escape(unit)}</text>' + "".join(bars) + "</svg>"
    )


def hbar_chart(title: str, rows: Sequence[tuple[str, float, str]], *, maximum: float | None = None) -> str:
    """Horizontal bars: (label, value, text shown after the bar)."""
    top = maximum if maximum is not None else max([v for _, v, _ in rows] + [1])
    top = top or 1
    line = 26
    height = max(line * len(rows) + 10, 40)
    parts = []
    for i, (label, value, text) in enumerate(rows):
        y = 6 + i * line
        w = (_W - 260) * value / top
        parts.append(f'<text x="0" y="{y + 15}" class="axis">{escape(label)}</text>')
        parts.append(f'<rect x="150" y="{y}" width="{max(w, 1):.1f}" height="18" class="bar"/>')
        parts.append(f'<text x="{156 + w:.1f}" y="{y + 15}" class="axis">{escape(text)}</text>')
    if not rows:
        parts.append('<text x="0" y="24" class="axis">aucune donnée</text>')
    desc = ", ".join(f"{label} : {text}" for label, _, text in rows)
    return (
        f'<svg viewBox="0 0 {_W} {height}" role="img" class="chart"><title>{escape(title)}</title>'
        f"<desc>{escape(desc)}</desc>" + "".join(parts) + "</svg>"
    )


# series told apart by dash pattern and marker shape as well as colour (never by colour alone)
_DASHES = ("", "8 4", "2 3", "10 3 2 3", "4 4")


def line_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    unit: str = " %",
    floor_top: float = 100.0,
) -> str:
    """Lines over ``labels`` (one per series: name, values; None leaves a gap), the top of the
    scale at least ``floor_top``; a legend; each point has its value as a tooltip."""
    values = [v for _, vs in series for v in vs if v is not None]
    top = max([floor_top, *values]) or 1.0
    left, right, top_pad, bottom = 48, 16, 16, 40
    legend_h = 20 * len(series)
    height = _H + 60 + legend_h
    plot_h = _H + 60 - top_pad - bottom
    n = max(1, len(labels))
    step = (_W - left - right) / n

    def x(i: int) -> float:
        return left + step * (i + 0.5)

    def y(v: float) -> float:
        return top_pad + plot_h * (1 - v / top)

    parts = []
    for k in range(5):
        v = top * k / 4
        parts.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{_W - right}" y2="{y(v):.1f}" class="grid"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="axis">{v:g}{escape(unit)}</text>'
        )
    for i, label in enumerate(labels):
        parts.append(
            f'<text x="{x(i):.1f}" y="{top_pad + plot_h + 18}" text-anchor="middle" class="axis">{escape(label)}</text>'
        )
    for s_i, (name, vals) in enumerate(series):
        dash = _DASHES[s_i % len(_DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        runs: list[list[tuple[float, float]]] = [[]]
        for i, point in enumerate(vals):
            if point is None:
                runs.append([])
                continue
            runs[-1].append((x(i), y(point)))
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{a:.1f},{b:.1f}" for a, b in run)
                parts.append(f'<polyline points="{points}" class="line s{s_i % 5}"{dash_attr}/>')
        for i, point in enumerate(vals):
            if point is None:
                continue
            tip = f"<title>{escape(name)}, {escape(labels[i])} : {point:g}{escape(unit)}</title>"
            if s_i % 2:
                half = 4
                parts.append(
                    f'<rect x="{x(i) - half:.1f}" y="{y(point) - half:.1f}" width="8" height="8" '
                    f'class="dot s{s_i % 5}">{tip}</rect>'
                )
            else:
                parts.append(f'<circle cx="{x(i):.1f}" cy="{y(point):.1f}" r="4" class="dot s{s_i % 5}">{tip}</circle>')
        ly = _H + 60 + 14 + 20 * s_i
        parts.append(
            f'<line x1="{left}" y1="{ly - 4}" x2="{left + 36}" y2="{ly - 4}" class="line s{s_i % 5}"{dash_attr}/>'
            f'<text x="{left + 44}" y="{ly}" class="axis">{escape(name)}</text>'
        )
    desc = "; ".join(
        f"{name} : "
        + ", ".join(f"{label} {('—' if v is None else f'{v:g}{unit}')}" for label, v in zip(labels, vals, strict=True))
        for name, vals in series
    )
    return (
        f'<svg viewBox="0 0 {_W} {height}" role="img" aria-labelledby="{chart_id}-t {chart_id}-d" class="chart" '
        f'id="{chart_id}"><title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(desc)}</desc>'
        + "".join(parts)
        + "</svg>"
    )
