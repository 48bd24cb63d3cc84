"""Inline SVG charts, drawn on the server: no JavaScript, no CDN, readable by screen readers
(each chart has a ``<title>``, a ``<desc>`` and the figures as a table next to it)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart", "hbar_chart"]

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
