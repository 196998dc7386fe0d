"""Charts as inline SVG for the console: stacked bars and lines over the minutes of an hour.

Pure text out, no script: the console's Content-Security-Policy (``default-src 'none'``) lets
inline SVG draw because nothing is fetched; colours are presentation attributes. Every text is
escaped. Each bar and point has a ``<title>``, which a browser shows on hover.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from gateway.operators.activity import Series

WIDTH, HEIGHT = 640, 190
LEFT, RIGHT, TOP, BOTTOM = 56, 10, 10, 22  # the plot's margins: y labels left, x labels below
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
X_LABEL_EVERY = 10  # minutes between time labels


@dataclass(frozen=True)
class Scale:
    top: float  # the value at the top of the plot
    step: float  # between grid lines

    def y(self, value: float) -> float:
        return TOP + PLOT_H - PLOT_H * value / self.top


def nice_scale(highest: float, *, lines: int = 4, whole: bool = False) -> Scale:
    """A top of 1, 2 or 5 times a power of ten, in at most ``lines`` steps, at or above ``highest``;
    ``whole``: steps of at least 1 (counts of documents have no quarters)."""
    if highest <= 0:
        return Scale(1.0, 1.0 if whole else 0.25)
    raw = max(highest / lines, 1.0) if whole else highest / lines
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return Scale(step * math.ceil(highest / step - 1e-9), step)


def number_text(value: float) -> str:
    return f"{value:.4g}" if value < 10_000 else f"{value / 1000:.4g}k"


def seconds_text(value: float) -> str:
    """A duration for an axis or a hover: seconds, minutes or hours, three digits at most."""
    if value < 60:
        return f"{value:.3g} s"
    if value < 3600:
        return f"{value / 60:.3g} min"
    return f"{value / 3600:.3g} h"


def in_duration_unit(series: Sequence[Series]) -> tuple[list[Series], Callable[[float], str]]:
    """Seconds turned into the unit their largest value reads best in, so that the axis steps by
    round minutes or hours (not by 1000 s), and the text that names the unit."""
    highest = max((v for s in series for v in s.values if v is not None), default=0.0)
    size, unit = (3600.0, "h") if highest >= 3 * 3600 else (60.0, "min") if highest >= 180 else (1.0, "s")
    scaled = [Series(s.name, tuple(None if v is None else v / size for v in s.values)) for s in series]
    return scaled, lambda v: f"{v:.3g} {unit}"


def _frame(
    chart_id: str, title: str, scale: Scale, labels: Sequence[str], text: Callable[[float], str]
) -> list[str]:
    parts = [
        f'<svg id="{escape(chart_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    ]
    ticks = round(scale.top / scale.step)
    for k in range(ticks + 1):
        value = scale.step * k
        y = round(scale.y(value), 2)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="#e3e3e3"/>'
            f'<text x="{LEFT - 4}" y="{y + 4}" text-anchor="end" font-size="11" fill="#555">'
            f"{escape(text(value))}</text>"
        )
    slot = PLOT_W / max(len(labels), 1)
    for i, label in enumerate(labels):
        if label and (i % X_LABEL_EVERY == 0 or i == len(labels) - 1):
            x = round(LEFT + slot * (i + 0.5), 2)
            parts.append(
                f'<text x="{x}" y="{HEIGHT - 6}" text-anchor="middle" font-size="11" fill="#555">'
                f"{escape(label)}</text>"
            )
    bottom = TOP + PLOT_H
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" stroke="#999"/>')
    return parts


def _empty(parts: list[str], note: str) -> None:
    parts.append(
        f'<text class="empty" x="{LEFT + PLOT_W / 2}" y="{TOP + PLOT_H / 2}" text-anchor="middle" '
        f'font-size="13" fill="#888">{escape(note)}</text>'
    )


def legend(series: Sequence[Series], colors: dict[str, str], names: dict[str, str] | None = None) -> str:
    """The colours and names as HTML, under the chart (wraps with the page, unlike SVG text)."""
    names = names or {}
    items = "".join(
        f'<span class="key"><svg width="10" height="10" aria-hidden="true"><rect width="10" height="10" '
        f'fill="{escape(colors.get(s.name, "#888"))}"/></svg>{escape(names.get(s.name, s.name))}</span>'
        for s in series
    )
    return f'<div class="legend">{items}</div>'


def stacked_bars(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    colors: dict[str, str],
    *,
    empty: str = "nothing in the last hour",
) -> str:
    """One bar per label, its series stacked in order; a zero draws nothing."""
    totals = [sum(s.values[i] or 0.0 for s in series) for i in range(len(labels))]
    scale = nice_scale(max(totals, default=0.0), whole=True)
    parts = _frame(chart_id, title, scale, labels, number_text)
    slot = PLOT_W / max(len(labels), 1)
    width = round(slot * 0.8, 2)
    for i, label in enumerate(labels):
        base = 0.0
        x = round(LEFT + slot * i + slot * 0.1, 2)
        for s in series:
            value = s.values[i] or 0.0
            if value <= 0:
                continue
            top, bottom = scale.y(base + value), scale.y(base)
            base += value
            color = escape(colors.get(s.name, "#888"))
            parts.append(
                f'<rect class="bar" data-series="{escape(s.name)}" x="{x}" y="{round(top, 2)}" '
                f'width="{width}" height="{round(bottom - top, 2)}" fill="{color}">'
                f"<title>{escape(label)} {escape(s.name)}: {escape(number_text(value))}</title></rect>"
            )
    if not any(totals):
        _empty(parts, empty)
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    colors: dict[str, str],
    *,
    text: Callable[[float], str] = number_text,
    whole: bool = False,
    dots: bool = True,
    empty: str = "nothing in the last hour",
) -> str:
    """One line per series through the middle of each label's slot; a None breaks the line, and
    with ``dots`` each value is also a dot, so that a lone minute shows."""
    values = [v for s in series for v in s.values if v is not None]
    scale = nice_scale(max(values, default=0.0), whole=whole)
    parts = _frame(chart_id, title, scale, labels, text)
    slot = PLOT_W / max(len(labels), 1)
    for s in series:
        color = escape(colors.get(s.name, "#888"))
        path: list[str] = []
        marks: list[str] = []
        pen_up = True
        for i, value in enumerate(s.values):
            if value is None:
                pen_up = True
                continue
            x, y = round(LEFT + slot * (i + 0.5), 2), round(scale.y(value), 2)
            path.append(f"{'M' if pen_up else 'L'}{x} {y}")
            pen_up = False
            marks.append(
                f'<circle class="dot" cx="{x}" cy="{y}" r="2.2" fill="{color}">'
                f"<title>{escape(labels[i])} {escape(s.name)}: {escape(text(value))}</title></circle>"
            )
        if path:
            parts.append(
                f'<path class="line" data-series="{escape(s.name)}" d="{" ".join(path)}" fill="none" '
                f'stroke="{color}" stroke-width="2"/>'
            )
        if dots:
            parts.extend(marks)
    if not values:
        _empty(parts, empty)
    parts.append("</svg>")
    return "".join(parts)
