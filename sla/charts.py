"""Server-rendered SVG line charts of the SLA page: no JavaScript, no build step.

Each chart is an `<svg class="chart">` whose data attributes give its scale (`data-t0`,
`data-t1` are the Unix seconds at `data-x0`, `data-x1`; `data-v0`, `data-v1` the values at
`data-y0`, `data-y1`), so a plotted point can be read back from its coordinates. Each line
is a `<g class="series" data-series="<key>">` holding a polyline per unbroken run of points
and a circle for a point without neighbours; a point sits at the middle of its bucket, and a
bucket without a value breaks the line.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 660, 210
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 14, 26


@dataclass(frozen=True)
class Line:
    key: str  # the /api/sla series it plots
    label: str
    color: str
    values: Sequence[float | None]


def nice_ceiling(value: float) -> float:
    """The smallest round number (1, 1.2, 1.6, 2, ... 8 times a power of ten) at or above `value` (> 0),
    so the four grid steps are round too."""
    exponent = math.floor(math.log10(value))
    for factor in (1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8, 10):
        candidate = factor * 10**exponent
        if candidate >= value * (1 - 1e-9):
            return float(candidate)
    return float(10 ** (exponent + 1))


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def svg_chart(
    chart_id: str,
    starts: Sequence[int],
    step_s: int,
    lines: Sequence[Line],
    unit: str,
    threshold: float | None = None,
    label_every_s: int = 600,
) -> str:
    """One chart of bucketed values; x: bucket start times, y: from 0 up."""
    t0, t1 = starts[0], starts[-1] + step_s
    x0, x1 = LEFT, WIDTH - RIGHT
    y0, y1 = HEIGHT - BOTTOM, TOP
    top = max([v for line in lines for v in line.values if v is not None] + [threshold * 1.1 if threshold else 0])
    v1 = nice_ceiling(top) if top > 0 else 1.0

    def x(t: float) -> float:
        return round(x0 + (t - t0) / (t1 - t0) * (x1 - x0), 2)

    def y(v: float) -> float:
        return round(y0 - v / v1 * (y0 - y1), 2)

    parts = [
        f'<svg class="chart" id="{chart_id}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" data-t0="{t0}" data-t1="{t1}" data-x0="{x0}" data-x1="{x1}"'
        f' data-v0="0" data-v1="{_fmt(v1)}" data-y0="{y0}" data-y1="{y1}" role="img">'
    ]
    for i in range(5):  # horizontal grid and value labels
        value = v1 * i / 4
        parts.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{y(value)}" y2="{y(value)}"/>')
        label = f"{value:g}"
        parts.append(f'<text class="axis" x="{x0 - 4}" y="{y(value) + 4}" text-anchor="end">{label}</text>')
    parts.append(f'<text class="axis" x="4" y="{TOP - 2}">{html.escape(unit)}</text>')
    first_label = -(-t0 // label_every_s) * label_every_s
    for t in range(first_label, t1 + 1, label_every_s):
        if not x0 + 15 <= x(t) <= x1 - 15:  # a label at the edge would be cut off
            continue
        parts.append(f'<line class="tick" x1="{x(t)}" x2="{x(t)}" y1="{y0}" y2="{y0 + 4}"/>')
        label = time.strftime("%H:%M", time.gmtime(t))
        parts.append(f'<text class="axis" x="{x(t)}" y="{HEIGHT - 8}" text-anchor="middle">{label}</text>')
    if threshold is not None:
        parts.append(
            f'<line class="threshold" data-v="{_fmt(threshold)}" x1="{x0}" x2="{x1}" y1="{y(threshold)}"'
            f' y2="{y(threshold)}"/><text class="threshold-label" x="{x1 - 4}" y="{y(threshold) - 4}"'
            f' text-anchor="end">SLO {threshold:g} {html.escape(unit)}</text>'
        )
    for line in lines:
        parts.append(f'<g class="series" data-series="{line.key}" stroke="{line.color}" fill="{line.color}">')
        run: list[tuple[float, float]] = []
        values: list[tuple[int, float | None]] = [*zip(starts, line.values, strict=True), (t1, None)]
        for start, point in values:
            if point is not None:
                run.append((x(start + step_s / 2), y(point)))
                continue
            if len(run) == 1:
                parts.append(f'<circle cx="{run[0][0]}" cy="{run[0][1]}" r="2.5"/>')
            elif run:
                points = " ".join(f"{px},{py}" for px, py in run)
                parts.append(f'<polyline fill="none" stroke-width="1.8" points="{points}"/>')
            run = []
        parts.append("</g>")
    parts.append(f'<line class="axis-line" x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}"/></svg>')
    legend = "".join(
        f'<span class="key"><i style="background:{line.color}"></i>{html.escape(line.label)}</span>' for line in lines
    )
    return f'<div class="legend">{legend}</div>{"".join(parts)}'
