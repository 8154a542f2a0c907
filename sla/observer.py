"""The decision observer: its own consumer group on the decisions stream sees every decision
once, feeds the latency metrics, clears the signup from the awaiting set and adds it to the
per-minute series of the SLA page (sla/series.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time

import redis

from onboarding.awaiting import clear_awaiting, expire_awaiting
from onboarding.decision import MODEL_INTEGRITY_ERROR_PREFIX, DecisionEvent
from onboarding.outages import through_redis_outages
from onboarding.streams import Entry, Fields, ensure_group, live_entries, payload, xread_entries
from sla.metrics import STAGES, SlaMetrics
from sla.series import Series, entry_time
from sla.settings import SlaSettings

logger = logging.getLogger(__name__)


class DecisionObserver:
    def __init__(self, client: redis.Redis, settings: SlaSettings, metrics: SlaMetrics) -> None:
        self.redis = client
        self.settings = settings
        self.metrics = metrics
        self.series = Series(settings.overdue_after_s)
        self._stop = threading.Event()
        self._last_loop = time.monotonic()
        self._last_sample = 0.0
        self._last_expiry = 0.0
        self._seen = 0

    @property
    def stream(self) -> str:
        return self.settings.streams.decisions_stream

    def stop(self) -> None:
        self._stop.set()

    def seconds_since_loop(self) -> float:
        return time.monotonic() - self._last_loop

    def ensure_group(self) -> None:
        # From now on: replaying a week of history would show as a burst of fresh decisions.
        ensure_group(self.redis, self.stream, self.settings.group, start="$")

    def run(self, burst: bool = False, max_messages: int | None = None) -> int:
        """Observe decisions until stopped; burst: only what is there now. Returns how many.
        Outside burst mode a Redis outage does not end it (onboarding.outages)."""
        self._seen = 0
        if burst:
            self._loop(burst, max_messages)
        else:
            through_redis_outages(lambda: self._loop(burst, max_messages), self._stop, self._tick, "sla")
        return self._seen

    def _loop(self, burst: bool, max_messages: int | None) -> None:
        self.ensure_group()
        if self.series.rebuilt_through is None:  # once per process: a restart keeps its charts
            rebuilt = self.series.rebuild(
                self.redis, self.stream, self.settings.group, time.time(), progress=self._tick
            )
            logger.info("sla: %d decisions of the last day re-read for the page's charts", rebuilt)
        start = "0"  # first our own pending entries (a previous incarnation's), then new ones
        while not self._stop.is_set():
            self._tick()
            self._sample()
            budget = 100 if max_messages is None else min(100, max_messages - self._seen)
            entries = self._read(start, budget, block=not burst and start == ">")
            if not entries:
                if start == "0":
                    start = ">"
                    continue
                if burst:
                    break
                continue
            for entry_id, fields in entries:
                self.observe_fields(fields, entry_id)
                self.redis.xack(self.stream, self.settings.group, entry_id)
                self._seen += 1
            if max_messages is not None and self._seen >= max_messages:
                break

    def _tick(self) -> None:
        self._last_loop = time.monotonic()
        self.metrics.last_loop.set(time.time())

    def _sample(self, every_s: float = 10.0) -> None:
        now = time.time()
        if now - self._last_sample >= every_s:
            self._last_sample = now
            self.series.sample_dead_letters(now, int(self.redis.xlen(self.settings.streams.dead_letter_stream)))
        if now - self._last_expiry >= 60 * every_s:
            self._last_expiry = now
            self.expire_awaiting(now)

    def expire_awaiting(self, now: float) -> list[str]:
        """Bound `signups:awaiting` and its conf hash: signups accepted longer ago than the
        decisions' retention go (their decision can no longer be observed)."""
        stale = expire_awaiting(self.redis, self.settings.streams, now - self.settings.awaiting_retention_s)
        if stale:
            logger.warning("sla: %d awaiting signups older than the decisions' retention forgotten", len(stale))
        return stale

    def _read(self, start: str, count: int, block: bool) -> list[Entry]:
        reply = self.redis.xreadgroup(
            self.settings.group,
            self.settings.consumer,
            {self.stream: start},
            count=count,
            block=self.settings.block_ms if block else None,
        )
        return [(entry_id, fields) for entry_id, fields in live_entries(xread_entries(reply)) if fields]

    def observe_fields(self, fields: Fields, entry_id: str | None = None) -> None:
        try:
            event = DecisionEvent.from_dict(json.loads(payload(fields)))
        except (TypeError, ValueError, KeyError) as err:
            logger.warning("sla: unreadable decision entry skipped: %s", err)
            return
        self.observe(event, entry_id)

    def observe(self, event: DecisionEvent, entry_id: str | None = None) -> None:
        """Count one decision; `entry_id` (its stream entry) dates it, else now."""
        self.metrics.decisions.labels(event.decision, event.model_version or "none").inc()
        if event.error:
            self.metrics.pipeline_failures.inc()
            if event.error.startswith(MODEL_INTEGRITY_ERROR_PREFIX):
                self.metrics.model_integrity_failures.inc()
        latency = event.latency_s("accepted_at", "published_at")
        if latency is None:
            self.metrics.unmeasured.inc()
        else:
            self.metrics.latency.observe(max(0.0, latency))
        for stage, start, end in STAGES:
            seconds = event.latency_s(start, end)
            if seconds is not None:
                self.metrics.stage.labels(stage).observe(max(0.0, seconds))
        clear_awaiting(self.redis, self.settings.streams, event.event_id)
        self.series.add(time.time() if entry_id is None else entry_time(entry_id), event, entry_id)
