"""The intake loop: forward the apps' intakes into `signups`, and trim the streams.

Forwarding is the `forward_intake` Redis Function (onboarding/intake.py): one atomic call
per app reads a bounded batch through the intake's consumer group, appends each entry to
the signups stream with `app=<name>` and acknowledges it; no payload is parsed here or in
Redis. Between calls the loop blocks on all the intakes at once (XREADGROUP BLOCK as the
function's own consumer, one entry per intake): a new entry wakes it at once, and the entry
it returned is pending for that consumer, so the next call forwards it first. Nothing read
here is used: the bytes stay in Redis' hands until the function copies them.

Retention (onboarding/retention.py) runs every `trim_interval_s`: `signups`, `decisions`
and each intake, below the oldest entry any consumer group still needs and older than the
retention period; a pending or undelivered entry is never trimmed. Each app's decision feed
(`<decisions>:app:<app>`) and refusals feed (`<decisions>:app:<app>:refusals`) are trimmed
by age alone (`DECISIONS_RETENTION_S`): the app's own group cannot keep its answers longer.
The listeners' group is created on `signups` at start (if no listener made it yet), so a
forwarded signup is kept for the listeners however late they start.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from redis.typing import KeyT, StreamIdT

from intake.metrics import IntakeMetrics
from intake.settings import IntakeSettings
from onboarding import intake, keys
from onboarding.outages import through_redis_outages
from onboarding.retention import trim_by_age, trim_stream
from onboarding.streams import ensure_group

logger = logging.getLogger(__name__)


class IntakeForwarder:
    """Forwards every configured app's intake and keeps the streams' retention."""

    def __init__(self, client: redis.Redis, settings: IntakeSettings, metrics: IntakeMetrics | None = None) -> None:
        self.redis = client
        self.settings = settings
        self.metrics = metrics or IntakeMetrics()
        self._stopping = threading.Event()
        self._last_trim = float("-inf")
        self.last_loop_at = time.monotonic()
        self._forwarded = 0

    @property
    def apps(self) -> tuple[str, ...]:
        return self.settings.streams.apps

    @property
    def signups(self) -> str:
        return self.settings.streams.signups_stream

    def stop(self) -> None:
        """Finish the call in hand (an FCALL is atomic), then return from run(). Signal-safe."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def seconds_since_loop(self) -> float:
        return time.monotonic() - self.last_loop_at

    def run(self, burst: bool = False) -> int:
        """Forward and trim until stopped; in burst mode, forward what is waiting, trim once
        and return. Returns how many entries were forwarded. Outside burst mode a Redis
        outage does not end it (onboarding.outages): the forwarding resumes where it was."""
        self._forwarded = 0
        if burst:
            self._last_trim = float("-inf")
            self._loop(burst=True)
        else:
            through_redis_outages(lambda: self._loop(burst=False), self._stopping, self._tick, "intake")
        return self._forwarded

    def _loop(self, burst: bool) -> None:
        ensure_group(self.redis, self.signups, self.settings.listener_group, start="0")
        for app in self.apps:
            intake.ensure_intake_group(self.redis, self.signups, app)
        while not self.stopping:
            self._tick()
            forwarded = self.forward_all()
            self._maybe_trim()
            if burst and not forwarded:
                return
            if not forwarded and not self.stopping:
                self._wait()

    def _tick(self) -> None:
        self.last_loop_at = time.monotonic()
        self.metrics.loop_tick()

    def forward_all(self) -> int:
        """One FCALL per app, again while an app's batch came back full. A broken intake (an app
        wrecked its own stream) is logged and skipped: it never stops another app's forwarding."""
        total = 0
        for app in self.apps:
            while not self.stopping:
                try:
                    count = intake.forward(
                        self.redis, self.signups, app, self.settings.batch_size, self.settings.max_payload_bytes
                    )
                except redis.ResponseError as err:
                    self.metrics.errors.labels(app).inc()
                    logger.error("intake: forwarding app %s's intake failed: %s", app, str(err)[:200])
                    break
                if count:
                    self.metrics.forwarded.labels(app).inc(count)
                    total += count
                if count < self.settings.batch_size:
                    break
        self._forwarded += total
        return total

    def _wait(self) -> None:
        """Block until an intake has a new entry (or block_ms passed, or a stop)."""
        if not self.apps:
            self._stopping.wait(min(self.settings.block_ms / 1000, max(self.settings.trim_interval_s, 0.01)))
            return
        streams: dict[KeyT, StreamIdT] = {keys.intake_stream(self.signups, app): ">" for app in self.apps}
        self.redis.xreadgroup(
            keys.INTAKE_GROUP, intake.FORWARDER_CONSUMER, streams, count=1, block=self.settings.block_ms
        )

    def _maybe_trim(self) -> None:
        if time.monotonic() - self._last_trim < self.settings.trim_interval_s:
            return
        self._last_trim = time.monotonic()
        s = self.settings
        targets = [
            ("signups", self.signups, s.retention_s, trim_stream),
            ("decisions", s.streams.decisions_stream, s.decisions_retention_s, trim_stream),
            *(("intake", keys.intake_stream(self.signups, app), s.retention_s, trim_stream) for app in self.apps),
            *(
                ("feed", feed, s.decisions_retention_s, trim_by_age)
                for app in self.apps
                for feed in (
                    keys.app_feed_stream(s.streams.decisions_stream, app),
                    keys.app_refusals_stream(s.streams.decisions_stream, app),
                )
            ),
        ]
        removed = 0
        for kind, stream, retention_s, trim in targets:
            try:
                count = trim(self.redis, stream, retention_s)
            except redis.ResponseError as err:
                logger.warning("intake: trimming %s failed: %s", kind, err)
                continue
            self.metrics.trimmed.labels(kind).inc(count)
            removed += count
        if removed:
            logger.info("intake: trimmed %d stream entries past retention", removed)
