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
    top = max([v for line in lines for v in line.values if v is not None] + [threshold * 1.1 if threshold else 0])
    scale = _Scale(t0, t1, nice_ceiling(top) if top > 0 else 1.0)
    x0, x1, y0, y1 = scale.x0, scale.x1, scale.y0, scale.y1
    parts = [
        f'<svg class="chart" id="{chart_id}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" data-t0="{t0}" data-t1="{t1}" data-x0="{x0}" data-x1="{x1}"'
        f' data-v0="0" data-v1="{_fmt(scale.v1)}" data-y0="{y0}" data-y1="{y1}" role="img">',
        *_value_grid(scale),
        f'<text class="axis" x="4" y="{TOP - 2}">{html.escape(unit)}</text>',
        *_time_labels(scale, label_every_s),
    ]
    if threshold is not None:
        parts.append(_threshold_line(scale, threshold, unit))
    for line in lines:
        parts += _series(scale, line, starts, step_s)
    parts.append(f'<line class="axis-line" x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}"/></svg>')
    legend = "".join(
        f'<span class="key"><i style="background:{line.color}"></i>{html.escape(line.label)}</span>' for line in lines
    )
    return f'<div class="legend">{legend}</div>{"".join(parts)}'


@dataclass(frozen=True)
class _Scale:
    """Where a time and a value sit on the chart: t0..t1 spans x0..x1, 0..v1 spans y0..y1."""

    t0: int
    t1: int
    v1: float
    x0: int = LEFT
    x1: int = WIDTH - RIGHT
    y0: int = HEIGHT - BOTTOM
    y1: int = TOP

    def x(self, t: float) -> float:
        return round(self.x0 + (t - self.t0) / (self.t1 - self.t0) * (self.x1 - self.x0), 2)

    def y(self, v: float) -> float:
        return round(self.y0 - v / self.v1 * (self.y0 - self.y1), 2)


def _value_grid(scale: _Scale) -> list[str]:
    """Five horizontal grid lines from 0 to the top value, each labelled with its value."""
    parts: list[str] = []
    for i in range(5):
        value = scale.v1 * i / 4
        y = scale.y(value)
        parts.append(f'<line class="grid" x1="{scale.x0}" x2="{scale.x1}" y1="{y}" y2="{y}"/>')
        parts.append(f'<text class="axis" x="{scale.x0 - 4}" y="{y + 4}" text-anchor="end">{value:g}</text>')
    return parts


def _time_labels(scale: _Scale, label_every_s: int) -> list[str]:
    """A tick and an HH:MM label (UTC) every `label_every_s` on the round times, except too near an edge."""
    parts: list[str] = []
    first_label = -(-scale.t0 // label_every_s) * label_every_s
    for t in range(first_label, scale.t1 + 1, label_every_s):
        x = scale.x(t)
        if not scale.x0 + 15 <= x <= scale.x1 - 15:  # a label at the edge would be cut off
            continue
        parts.append(f'<line class="tick" x1="{x}" x2="{x}" y1="{scale.y0}" y2="{scale.y0 + 4}"/>')
        label = time.strftime("%H:%M", time.gmtime(t))
        parts.append(f'<text class="axis" x="{x}" y="{HEIGHT - 8}" text-anchor="middle">{label}</text>')
    return parts


def _threshold_line(scale: _Scale, threshold: float, unit: str) -> str:
    """The SLO: a line across the chart at `threshold`, labelled at its right end."""
    y = scale.y(threshold)
    return (
        f'<line class="threshold" data-v="{_fmt(threshold)}" x1="{scale.x0}" x2="{scale.x1}" y1="{y}"'
        f' y2="{y}"/><text class="threshold-label" x="{scale.x1 - 4}" y="{y - 4}"'
        f' text-anchor="end">SLO {threshold:g} {html.escape(unit)}</text>'
    )


def _series(scale: _Scale, line: Line, starts: Sequence[int], step_s: int) -> list[str]:
    """One line's group: a polyline per unbroken run of values, a circle for a value alone;
    each point at the middle of its bucket."""
    parts = [f'<g class="series" data-series="{line.key}" stroke="{line.color}" fill="{line.color}">']
    run: list[tuple[float, float]] = []
    values: list[tuple[int, float | None]] = [*zip(starts, line.values, strict=True), (scale.t1, None)]
    for start, point in values:
        if point is not None:
            run.append((scale.x(start + step_s / 2), scale.y(point)))
            continue
        if len(run) == 1:
            parts.append(f'<circle cx="{run[0][0]}" cy="{run[0][1]}" r="2.5"/>')
        elif run:
            points = " ".join(f"{px},{py}" for px, py in run)
            parts.append(f'<polyline fill="none" stroke-width="1.8" points="{points}"/>')
        run = []
    parts.append("</g>")
    return parts
