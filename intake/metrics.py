"""Prometheus metrics of the intake process (served by onboarding.http.serve_http)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge


class IntakeMetrics:
    """One registry per process, so tests can inspect a fresh one."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.forwarded = Counter(
            "onboarding_intake_forwarded_total",
            "Entries forwarded from an app's intake stream into the signups stream, by app.",
            ["app"],
            registry=self.registry,
        )
        self.errors = Counter(
            "onboarding_intake_errors_total",
            "Failed forwarding calls, by app (the app's intake is skipped, the others go on).",
            ["app"],
            registry=self.registry,
        )
        self.trimmed = Counter(
            "onboarding_intake_trimmed_total",
            "Stream entries removed by retention (never pending or undelivered ones, but an app's feed is "
            "trimmed by age alone), by stream kind.",
            ["stream"],
            registry=self.registry,
        )
        self.last_loop = Gauge(
            "onboarding_intake_last_loop_timestamp_seconds",
            "Unix time of the intake loop's last iteration (a stuck loop stops moving it).",
            registry=self.registry,
        )

    def loop_tick(self) -> None:
        self.last_loop.set(time.time())
