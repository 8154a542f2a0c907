"""SLA visibility: decision latency metrics, the SLA page and overdue decisions.

`onboarding-sla serve` observes every decision event through its own consumer group on
the decisions stream and exposes end-to-end and per-stage latency histograms, decisions by
outcome and model version, stream lag, dead-letter depth, overdue signups and scheduler
heartbeats, and keeps per-minute series of the last day for the SLA page's charts;
`onboarding-sla overdue` / `redrive` are the on-call commands.
"""

from sla.metrics import SlaMetrics, StreamCollector, latency_buckets
from sla.observer import DecisionObserver
from sla.overdue import OverdueDecision, Stuck, list_overdue, redrive
from sla.series import Series
from sla.settings import SlaSettings

__all__ = [
    "DecisionObserver",
    "OverdueDecision",
    "Series",
    "SlaMetrics",
    "SlaSettings",
    "StreamCollector",
    "Stuck",
    "latency_buckets",
    "list_overdue",
    "redrive",
]
