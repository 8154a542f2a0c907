"""Prometheus metrics of the SLA service.

Counters and histograms are fed by the decision observer (one observation per decision
event); gauges that describe Redis or Airflow state are collected at scrape time, so they
are right even just after a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from onboarding.awaiting import awaiting_before, awaiting_count, clear_awaiting
from onboarding.keys import marker_key
from onboarding.streams import text
from sla.settings import SlaSettings

logger = logging.getLogger(__name__)

# Stages of a decision, each between two timestamps the decision event carries.
STAGES = (
    ("queued", "accepted_at", "run_started_at"),  # listener accepted -> first task running
    ("scoring", "run_started_at", "scored_at"),  # enrich + score
    ("publishing", "scored_at", "published_at"),  # decide + publish
)


def latency_buckets(threshold_s: float) -> tuple[float, ...]:
    """Fine buckets around the SLO threshold (always one bucket exactly at it)."""
    factors = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0, 3.0, 6.0, 12.0, 30.0)
    return tuple(round(threshold_s * f, 3) for f in factors)


class SlaMetrics:
    """One registry per process, so tests can inspect a fresh one."""

    def __init__(self, settings: SlaSettings, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.latency = Histogram(
            "onboarding_decision_latency_seconds",
            "Signup accepted by the listener -> decision published, per decision event.",
            buckets=latency_buckets(settings.slo_threshold_s),
            registry=self.registry,
        )
        self.stage = Histogram(
            "onboarding_decision_stage_seconds",
            "Per-stage time of a decision: queued (accepted -> run started), scoring, publishing.",
            ["stage"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0),
            registry=self.registry,
        )
        self.decisions = Counter(
            "onboarding_decisions",
            "Decision events observed, by decision (approve, review, decline) and model version.",
            ["decision", "model_version"],
            registry=self.registry,
        )
        self.pipeline_failures = Counter(
            "onboarding_decision_pipeline_failures",
            "Decisions published as review because the pipeline failed.",
            registry=self.registry,
        )
        self.model_integrity_failures = Counter(
            "onboarding_model_integrity_failures",
            "Decisions published as review because the task refused the model version in service "
            "(unsigned, signed with another key, or a file changed after signing: risk.integrity).",
            registry=self.registry,
        )
        self.unmeasured = Counter(
            "onboarding_decisions_unmeasured",
            "Decision events without the accepted/published timestamps (latency unknown).",
            registry=self.registry,
        )
        self.slo_threshold = Gauge(
            "onboarding_slo_threshold_seconds", "The SLO's latency threshold.", registry=self.registry
        )
        self.slo_target = Gauge(
            "onboarding_slo_target_ratio",
            "The SLO's target share of decisions within the threshold.",
            registry=self.registry,
        )
        self.last_loop = Gauge(
            "onboarding_sla_last_loop_timestamp_seconds",
            "Unix time of the decision observer's last iteration.",
            registry=self.registry,
        )
        self.slo_threshold.set(settings.slo_threshold_s)
        self.slo_target.set(settings.slo_target)


class StreamCollector(Collector):
    """Consumer-group lag and pending entries, dead-letter depth, awaiting and overdue signups."""

    def __init__(self, client: redis.Redis, settings: SlaSettings) -> None:
        self.client = client
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        streams = self.settings.streams
        lag = GaugeMetricFamily(
            "onboarding_stream_lag",
            "Entries of a stream not yet delivered to a consumer group.",
            labels=["stream", "group"],
        )
        pending = GaugeMetricFamily(
            "onboarding_stream_pending",
            "Entries delivered to a consumer group but not yet acknowledged.",
            labels=["stream", "group"],
        )
        dead = GaugeMetricFamily("onboarding_dead_letters_depth", "Entries in the dead-letter stream.")
        awaiting = GaugeMetricFamily(
            "onboarding_awaiting_decisions", "Signups accepted by the listener whose decision is not out yet."
        )
        overdue = GaugeMetricFamily(
            "onboarding_overdue_decisions", "Accepted signups still without a decision after the SLA."
        )
        oldest = GaugeMetricFamily(
            "onboarding_overdue_oldest_age_seconds", "Age of the oldest overdue signup (0 when none)."
        )
        up = GaugeMetricFamily("onboarding_sla_redis_up", "1 if Redis answered this scrape.")
        try:
            for stream, group in (
                (streams.signups_stream, self.settings.listener_group),
                (streams.decisions_stream, self.settings.group),
            ):
                for row in _groups(self.client, stream):
                    if row.get("name") == group:
                        lag.add_metric([stream, group], float(row.get("lag") or 0))
                        pending.add_metric([stream, group], float(row.get("pending") or 0))
            dead.add_metric([], float(self.client.xlen(streams.dead_letter_stream)))
            items = overdue_now(self.client, self.settings)
            awaiting.add_metric([], float(awaiting_count(self.client, streams)))
            overdue.add_metric([], float(len(items)))
            oldest.add_metric([], time.time() - items[0][1] if items else 0.0)
            up.add_metric([], 1.0)
        except redis.RedisError as err:
            logger.warning("sla: redis failed during a scrape: %s", err)
            up.add_metric([], 0.0)
            yield up
            return
        yield from (lag, pending, dead, awaiting, overdue, oldest, up)


def _groups(client: redis.Redis, stream: str) -> list[dict]:
    try:
        rows = client.xinfo_groups(stream)
    except redis.ResponseError:  # the stream does not exist yet
        return []
    return [{text(k): text(v) if isinstance(v, bytes) else v for k, v in row.items()} for row in rows]


def overdue_now(client: redis.Redis, settings: SlaSettings, now: float | None = None) -> list[tuple[str, float]]:
    """(event_id, accepted_ts) of accepted signups older than the SLA without a decision.

    Signups whose decision is out (publish marker set) but was not observed yet are
    dropped from the awaiting set here, so a lagging observer never shows them as overdue.
    """
    cutoff = (now or time.time()) - settings.overdue_after_s
    candidates = awaiting_before(client, settings.streams, cutoff)
    if not candidates:
        return []
    with client.pipeline(transaction=False) as pipe:
        for item in candidates:
            pipe.exists(marker_key(settings.streams.decisions_stream, item.event_id))
        decided = pipe.execute()
    done = [item.event_id for item, was in zip(candidates, decided, strict=True) if was]
    clear_awaiting(client, settings.streams, *done)
    return [(item.event_id, item.accepted_ts) for item, was in zip(candidates, decided, strict=True) if not was]


class SchedulerCollector(Collector):
    """Seconds since each Airflow instance's scheduler last heartbeat (its public health API).

    `poll()` asks the APIs (a background thread calls it); a scrape only reads the last
    answers, so a slow api-server never makes the scrape time out.
    """

    def __init__(self, instances: tuple[tuple[str, str], ...], timeout_s: float = 5.0) -> None:
        self.instances = instances
        self.timeout_s = timeout_s
        self._latest: dict[str, tuple[float | None, bool]] = {}
        self._lock = threading.Lock()

    def poll(self) -> None:
        for name, url in self.instances:
            beat_ts, healthy = None, False
            try:
                body = httpx.get(f"{url}/api/v2/monitor/health", timeout=self.timeout_s).json()
                scheduler = body.get("scheduler") or {}
                healthy = scheduler.get("status") == "healthy"
                beat = scheduler.get("latest_scheduler_heartbeat")
                beat_ts = datetime.fromisoformat(beat).timestamp() if beat else None
            except (httpx.HTTPError, ValueError, AttributeError) as err:
                logger.warning("sla: health API of %s (%s) failed: %s", name, url, err)
                beat_ts = self._latest.get(name, (None, False))[0]  # the age keeps growing meanwhile
            with self._lock:
                self._latest[name] = (beat_ts, healthy)

    def run_polling(self, stop: threading.Event, interval_s: float = 5.0) -> threading.Thread:
        def loop() -> None:
            while not stop.is_set():
                self.poll()
                stop.wait(interval_s)

        thread = threading.Thread(target=loop, name="scheduler-health", daemon=True)
        thread.start()
        return thread

    def collect(self) -> Iterator[GaugeMetricFamily]:
        age = GaugeMetricFamily(
            "onboarding_airflow_scheduler_heartbeat_age_seconds",
            "Seconds since the scheduler's latest heartbeat, per Airflow instance (label airflow).",
            labels=["airflow"],
        )
        healthy = GaugeMetricFamily(
            "onboarding_airflow_scheduler_healthy",
            "1 if the instance's health API reports its scheduler healthy, 0 if not or unreachable.",
            labels=["airflow"],
        )
        with self._lock:
            latest = dict(self._latest)
        now = time.time()
        for name, (beat_ts, ok) in latest.items():
            healthy.add_metric([name], 1.0 if ok else 0.0)
            if beat_ts is not None:
                age.add_metric([name], max(0.0, now - beat_ts))
        yield age
        yield healthy
