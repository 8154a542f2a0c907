"""The consumer loop: signups stream -> validation -> one Airflow run per event.

An entry is acknowledged only when its fate is settled: Airflow accepted the run (or
already had it), or the entry is on the dead-letter stream. Dead-lettering and the
acknowledgement happen in one MULTI transaction, so an entry is never both lost and acked.
While Airflow is unavailable the entry stays pending and is retried with exponential
backoff and jitter; on restart the consumer first re-reads its own pending entries.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from typing import Any, Protocol

import redis

from listener.airflow import TriggerOutcome, run_id_for
from listener.errors import AirflowRejected, AirflowUnavailable
from listener.metrics import ListenerMetrics
from listener.settings import ListenerSettings
from onboarding.decision import utc_now
from onboarding.errors import InvalidEvent
from onboarding.schema import parse_signup

logger = logging.getLogger(__name__)


class Trigger(Protocol):
    def trigger(self, run_id: str, conf: dict[str, Any]) -> TriggerOutcome: ...


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


class Listener:
    """Consumes the signups stream as one member of the listener consumer group."""

    def __init__(
        self,
        client: redis.Redis,
        airflow: Trigger,
        settings: ListenerSettings,
        metrics: ListenerMetrics | None = None,
    ) -> None:
        self.redis = client
        self.airflow = airflow
        self.settings = settings
        self.metrics = metrics or ListenerMetrics()
        self._stopping = threading.Event()
        self._rng = random.Random()
        self.last_loop_at = time.monotonic()

    @property
    def stream(self) -> str:
        return self.settings.streams.signups_stream

    def stop(self) -> None:
        """Finish the entry in hand, then return from run(). Safe from a signal handler."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def ensure_group(self) -> None:
        """Create the consumer group if needed, from the start of the stream so nothing
        published before the first listener started is missed."""
        try:
            self.redis.xgroup_create(self.stream, self.settings.group, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def run(self, burst: bool = False, max_messages: int | None = None) -> int:
        """Process entries until stopped (or, in burst mode, until none are waiting).

        Returns the number of entries settled (acknowledged).
        """
        self.ensure_group()
        settled = 0
        own_pending = True  # first re-read what this consumer left unacknowledged
        while not self.stopping:
            self._tick()
            count = self.settings.batch_size
            if max_messages is not None:
                count = min(count, max_messages - settled)
                if count <= 0:
                    break
            entries = self._read("0" if own_pending else ">", count, block=not (burst or own_pending))
            if own_pending and not entries:
                own_pending = False
                continue
            if not entries:
                if burst:
                    break
                continue
            for entry_id, fields in entries:
                if self.stopping:
                    break
                if self._handle(_text(entry_id), fields):
                    settled += 1
            if own_pending and len(entries) < count:
                own_pending = False
        return settled

    def _tick(self) -> None:
        self.last_loop_at = time.monotonic()
        self.metrics.loop_tick()

    def seconds_since_loop(self) -> float:
        return time.monotonic() - self.last_loop_at

    def _read(self, start: str, count: int, block: bool) -> list[tuple[Any, dict[Any, Any]]]:
        reply = self.redis.xreadgroup(
            self.settings.group,
            self.settings.consumer,
            {self.stream: start},
            count=count,
            block=self.settings.block_ms if block else None,
        )
        if not reply:
            return []
        entries = reply[0][1]
        # Entries already trimmed from the stream come back as (id, None) from the PEL.
        return [(eid, fields) for eid, fields in entries if fields is not None]

    def _handle(self, entry_id: str, fields: dict[Any, Any]) -> bool:
        """Settle one entry. Returns False if it was left pending (shutdown during retry)."""
        self.metrics.in_flight.inc()
        started = time.monotonic()
        try:
            payload = fields.get(b"payload", fields.get("payload"))
            if payload is None:
                self._dead_letter(entry_id, fields, "missing_payload", "the stream entry has no 'payload' field")
                return True
            try:
                event = parse_signup(payload, self.settings.max_payload_bytes)
            except InvalidEvent as err:
                self._dead_letter(entry_id, fields, err.reason, err.detail)
                return True
            conf = {**event.to_dict(), "accepted_at": utc_now()}
            run_id = run_id_for(event.event_id)
            delay = self.settings.retry_initial_s
            while True:
                try:
                    outcome = self.airflow.trigger(run_id, conf)
                except AirflowRejected as err:
                    self.metrics.airflow_errors.labels(err.kind).inc()
                    self._dead_letter(entry_id, fields, "rejected_by_airflow", err.detail)
                    return True
                except AirflowUnavailable as err:
                    self.metrics.airflow_errors.labels(err.kind).inc()
                    if self.stopping:
                        logger.warning("listener: leaving %s pending at shutdown: %s", entry_id, err)
                        return False
                    wait = self._rng.uniform(0, delay)  # full jitter
                    logger.warning("listener: airflow unavailable (%s); retrying %s in %.2f s", err, entry_id, wait)
                    self._stopping.wait(wait)
                    self._tick()
                    delay = min(delay * 2, self.settings.retry_max_s)
                    continue
                break
            self.redis.xack(self.stream, self.settings.group, entry_id)
            self.metrics.trigger_seconds.observe(time.monotonic() - started)
            outcome_label = "triggered" if outcome is TriggerOutcome.CREATED else "duplicate"
            self.metrics.events.labels(outcome_label).inc()
            logger.info(
                "listener: %s run %s for event_id=%s user_id=%s entry=%s",
                outcome.value,
                run_id,
                event.event_id,
                event.user_id,
                entry_id,
            )
            return True
        finally:
            self.metrics.in_flight.dec()

    def _dead_letter(self, entry_id: str, fields: dict[Any, Any], reason: str, detail: str) -> None:
        record = {
            "original_id": entry_id,
            "reason": reason,
            "detail": detail,
            "consumer": self.settings.consumer,
            "dead_at": utc_now(),
            # The original fields, verbatim (bytes stay bytes), so a replay sends exactly them.
            **{f"original.{_text(k)}": v for k, v in fields.items()},
        }
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.settings.streams.dead_letter_stream, record)
            pipe.xack(self.stream, self.settings.group, entry_id)
            pipe.execute()
        self.metrics.events.labels("dead_lettered").inc()
        self.metrics.dead_letters.labels(reason).inc()
        logger.warning(
            "listener: dead-lettered entry=%s reason=%s detail=%s", entry_id, reason, json.dumps(detail)[:300]
        )
