"""Prometheus metrics of the listener (served by onboarding.http.serve_http)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ListenerMetrics:
    """One registry per listener, so tests can inspect a fresh one."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "onboarding_listener_events_total",
            "Signup entries read from the stream, by outcome (triggered, duplicate, already_decided, dead_lettered).",
            ["outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "onboarding_listener_dead_letters_total",
            "Signup entries sent to the dead-letter stream, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.airflow_errors = Counter(
            "onboarding_listener_airflow_errors_total",
            "Failed calls to the realtime Airflow API, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.trigger_seconds = Histogram(
            "onboarding_listener_trigger_seconds",
            "Time from reading a signup to Airflow accepting its run.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.reclaimed = Counter(
            "onboarding_listener_reclaimed_total",
            "Entries claimed from consumers that left them pending (crashed or stuck).",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "onboarding_listener_in_flight",
            "Signup entries read but not yet acknowledged by this process.",
            registry=self.registry,
        )
        self.last_loop = Gauge(
            "onboarding_listener_last_loop_timestamp_seconds",
            "Unix time of the consumer loop's last iteration (a stuck loop stops moving it).",
            registry=self.registry,
        )

    def loop_tick(self) -> None:
        self.last_loop.set(time.time())
