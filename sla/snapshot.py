"""The SLA page's snapshot: typed, frozen records; JSON only at the HTTP boundary.

`sla.page.snapshot` builds a `Snapshot`, `sla.page.render` draws it, and /api/sla returns
`Snapshot.to_dict()` (the page's charts plot exactly its `series`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sla.overdue import OverdueDecision
from sla.review import ReviewQueueView
from sla.shadow import ShadowFigures

__all__ = ["ArchiveRun", "Chart", "Lag", "Latency", "Slo", "Snapshot"]

# One range's chart: bucket starts (`t`) and one aligned list per plotted quantity
# (`sla.series.Series.chart`).
Chart = Mapping[str, Any]


@dataclass(frozen=True)
class Slo:
    threshold_s: float
    target: float


@dataclass(frozen=True)
class Latency:
    """Signup-to-decision latency percentiles over the window; None before any decision."""

    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class Lag:
    """The listener group's lag and pending entries on the signups stream (None if unknown)."""

    lag: int | None
    pending: int | None
    group: str


@dataclass(frozen=True)
class ArchiveRun:
    """The latest archive run of one Airflow instance."""

    instance: str
    status: str | None
    finished_at: str | None
    duration_s: float | None
    rows: int
    last_success_at: str | None


@dataclass(frozen=True)
class Snapshot:
    """What on-call needs at a glance, over the page window."""

    generated_at: str
    window_s: float
    slo: Slo
    decisions: int
    decisions_per_min: float
    by_decision: Mapping[str, int]
    pipeline_failures: int
    latency_s: Latency
    within_slo_ratio: float | None
    error_budget_left_ratio: float | None
    lag: Lag
    dead_letters: int
    awaiting: int
    overdue_count: int
    overdue: tuple[OverdueDecision, ...]
    archive: tuple[ArchiveRun, ...]
    series: Mapping[str, Chart]
    review: ReviewQueueView | None = None  # the review queue's SLA (sla/review.py)
    shadow: list[ShadowFigures] | None = None  # shadow scoring of a challenger (sla/shadow.py)

    @property
    def slo_met(self) -> bool:
        return self.within_slo_ratio is None or self.within_slo_ratio >= self.slo.target

    def to_dict(self) -> dict[str, Any]:
        """The JSON of /api/sla."""
        return {
            "generated_at": self.generated_at,
            "window_s": self.window_s,
            "slo": {"threshold_s": self.slo.threshold_s, "target": self.slo.target},
            "decisions": self.decisions,
            "decisions_per_min": self.decisions_per_min,
            "by_decision": dict(self.by_decision),
            "pipeline_failures": self.pipeline_failures,
            "latency_s": {"p50": self.latency_s.p50, "p95": self.latency_s.p95, "p99": self.latency_s.p99},
            "within_slo_ratio": self.within_slo_ratio,
            "error_budget_left_ratio": self.error_budget_left_ratio,
            "lag": {"lag": self.lag.lag, "pending": self.lag.pending, "group": self.lag.group},
            "dead_letters": self.dead_letters,
            "awaiting": self.awaiting,
            "overdue_count": self.overdue_count,
            "overdue": [item.to_dict() for item in self.overdue],
            "archive": [
                {
                    "instance": run.instance,
                    "status": run.status,
                    "finished_at": run.finished_at,
                    "duration_s": run.duration_s,
                    "rows": run.rows,
                    "last_success_at": run.last_success_at,
                }
                for run in self.archive
            ],
            "series": {name: dict(chart) for name, chart in self.series.items()},
            "review": self.review.to_dict() if self.review is not None else None,
            "shadow": [f.to_dict() for f in self.shadow] if self.shadow is not None else None,
        }
