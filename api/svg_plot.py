"""Server-rendered line charts as inline SVG: no script, no CDN, nothing fetched by the browser.

:func:`line_chart` draws time series (unix seconds, value) as one ``<path>`` per series over a
time axis, with a y axis from zero, gridlines, a title and a legend. Every text is escaped; an
empty chart says "no data" rather than drawing nothing. Pure functions: the dashboard's tests
check the markup without a browser, and the page test in Chromium checks what it renders.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime

__all__ = ["PALETTE", "line_chart", "nice_ceiling"]

#: Series colours (colour-blind safe: Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

_W, _H = 560, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 28, 44


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten at or above ``value`` (1 for zero)."""
    if not value > 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * (1 + 1e-12):
            return float(step * power)
    return float(10 * power)


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.3g}"


def line_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    unit: str,
    start: float,
    end: float,
) -> str:
    """An SVG chart of ``series`` (name, points) between unix times ``start`` and ``end``."""
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    span = max(end - start, 1e-9)
    values = [v for _name, points in series for _t, v in points if math.isfinite(v)]
    top = nice_ceiling(max(values, default=0.0))
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" '
        f'width="{_W}" height="{_H}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{_LEFT}" y="18" font-size="13" font-weight="bold">'
        f"{html.escape(title)} ({html.escape(unit)})</text>",
    ]
    for i in range(5):
        y = _TOP + plot_h - plot_h * i / 4
        out.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}" '
            f'stroke="#ddd" stroke-width="1"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{_fmt(top * i / 4)}</text>"
        )
    for i in range(4):
        t = start + span * i / 3
        x = _LEFT + plot_w * i / 3
        label = datetime.fromtimestamp(t, UTC).strftime("%H:%M")
        anchor = "start" if i == 0 else "end" if i == 3 else "middle"
        out.append(
            f'<text x="{x:.1f}" y="{_TOP + plot_h + 14}" font-size="10" '
            f'text-anchor="{anchor}">{label}</text>'
        )
    drawn = 0
    for index, (name, points) in enumerate(series):
        finite = [(t, v) for t, v in points if math.isfinite(v)]
        if not finite:
            continue
        colour = PALETTE[index % len(PALETTE)]
        coords = [
            (_LEFT + plot_w * (t - start) / span, _TOP + plot_h - plot_h * v / top)
            for t, v in finite
        ]
        if len(coords) == 1:  # one point: a short tick, so it is seen
            x, y = coords[0]
            coords = [(x - 2, y), (x + 2, y)]
        d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        out.append(
            f'<path class="series" d="{d}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{html.escape(name)}</title></path>"
        )
        legend_x = _LEFT + (drawn % 4) * (plot_w / 4)
        legend_y = _H - 18 + (drawn // 4) * 12
        out.append(
            f'<rect x="{legend_x:.1f}" y="{legend_y - 8}" width="10" height="3" fill="{colour}"/>'
            f'<text x="{legend_x + 14:.1f}" y="{legend_y - 4}" font-size="10">'
            f"{html.escape(name[:24])}</text>"
        )
        drawn += 1
    if not drawn:
        out.append(
            f'<text x="{_LEFT + plot_w / 2}" y="{_TOP + plot_h / 2}" font-size="12" '
            f'text-anchor="middle" fill="#888">no data in this range</text>'
        )
    out.append(
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}" stroke="#333"/>'
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_W - _RIGHT}" y2="{_TOP + plot_h}" '
        f'stroke="#333"/></svg>'
    )
    return "".join(out)
