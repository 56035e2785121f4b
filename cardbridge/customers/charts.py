"""Server-drawn SVG charts: no chart library and no script, so the console's CSP stays strict."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

from markupsafe import Markup, escape


def _ticks(peak: int) -> list[int]:
    """Gridline values: whole numbers in steps of 1, 2 or 5 × 10^k, at most five steps."""
    peak = max(peak, 1)
    power = 1
    while True:
        for step in (power, 2 * power, 5 * power):
            if math.ceil(peak / step) <= 5:
                return [step * i for i in range(math.ceil(peak / step) + 1)]
        power *= 10


def bar_chart(
    points: Sequence[tuple[date, int]],
    *,
    title: str,
    description: str,
    width: int = 560,
    height: int = 240,
    chart_id: str = "chart",
    until: date | None = None,
    marker: str | None = None,
    unit: str = "",
    css_class: str = "chart",
) -> Markup:
    """A bar per day. Styling comes from CSS classes (chart-bar, chart-grid, chart-label).

    `until` stretches the axis to a later day (its slots empty: nothing is drawn for days to
    come) and `marker` labels a dashed line on that day (the cutover). `unit` follows each
    bar's value in its tooltip."""
    left, right, top, bottom = 52, 8, 14, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    ticks = _ticks(max((n for _, n in points), default=0))
    peak = ticks[-1]
    days = len(points)
    if until is not None and points and until > points[-1][0]:
        days += (until - points[-1][0]).days
    count = max(days, 1)
    slot = plot_w / count
    bar_w = max(slot * 0.7, 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" '
        f'viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
    ]
    for value in ticks:
        y = top + plot_h - plot_h * value / peak
        label = f"{value:,}"
        parts.append(f'<line class="chart-grid" x1="{left}" x2="{width - right}" '
                     f'y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="chart-label" x="{left - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{label}</text>')
    for i, (day, n) in enumerate(points):
        h = plot_h * n / peak
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h - h
        parts.append(
            f'<rect class="chart-bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
            f'height="{h:.1f}"><title>{day:%-d %b}: {n:,}{unit}</title></rect>'
        )
        # Label the first day, the last day and every seventh between, so labels never collide.
        if i == 0 or i == days - 1 or (i % 7 == 0 and days - 1 - i >= 5):
            anchor, lx = "middle", x + bar_w / 2
            if i == days - 1:
                anchor, lx = "end", x + bar_w  # the last label must not run off the edge
            parts.append(f'<text class="chart-label" x="{lx:.1f}" y="{height - 8}" '
                         f'text-anchor="{anchor}">{day:%-d %b}</text>')
    if until is not None and points and days > len(points):
        x = left + (days - 1) * slot + slot / 2
        parts.append(f'<line class="chart-marker" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" '
                     f'y2="{top + plot_h}"/>')
        parts.append(f'<text class="chart-label chart-marker-label" x="{x - 4:.1f}" '
                     f'y="{top + 10}" text-anchor="end">{escape(marker or "")}</text>')
        parts.append(f'<text class="chart-label" x="{left + plot_w:.1f}" y="{height - 8}" '
                     f'text-anchor="end">{until:%-d %b}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
