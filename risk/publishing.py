"""Publishing a decision: once per event id, and through a Redis outage with retries.

The one owner of both. Every path that answers an applicant (the onboarding task, its
failure callbacks, the benchmarks' shapes) publishes through a `Publisher`:

    publish(event)            one attempt; idempotent per event id (a retried task or a
                              second callback finds the marker and appends nothing)
    publish_retrying(event)   while Redis is unavailable (e.g. a failover) keep trying with
                              backoff (0.5, 1, 2 ... 15 s) for `budget_s`, then raise the last
                              Redis error, so the task's attempt fails and Airflow retries it
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from onboarding.backoff import Backoff
from onboarding.decision import DecisionEvent, publish_decision
from onboarding.keys import APP_FEED_MAXLEN, DECISION_KEY_TTL_S, MARKER_TTL_S, REVIEW_DEADLINE_S
from onboarding.logs import log_event
from onboarding.redis_clients import Role, shared
from risk.settings import RiskSettings

__all__ = ["PUBLISH_RETRY_S", "RETRY", "Publisher"]

# How long a task keeps trying to publish while Redis is unavailable before the attempt fails.
PUBLISH_RETRY_S = 150.0
RETRY = Backoff(initial_s=0.5, max_s=15.0)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Publisher:
    """Publishes decision events to one decisions stream."""

    client: redis.Redis
    stream: str
    marker_ttl_s: int = MARKER_TTL_S
    decision_ttl_s: int = DECISION_KEY_TTL_S
    budget_s: float = PUBLISH_RETRY_S
    backoff: Backoff = RETRY
    # A `review` opens its review case, due this long after publishing (REVIEW_DEADLINE_S).
    review_deadline_s: float = REVIEW_DEADLINE_S
    # An app's decision feed keeps about this many entries (APP_FEED_MAXLEN).
    app_feed_maxlen: int = APP_FEED_MAXLEN

    @classmethod
    def from_settings(cls, settings: RiskSettings) -> Publisher:
        """The task's publisher: the process's shared task client (warm connections across
        task calls, timeouts set) and the settings' stream and TTLs."""
        return cls(
            client=shared(settings.streams.redis_url, Role.TASK),
            stream=settings.streams.decisions_stream,
            marker_ttl_s=settings.decision_marker_ttl_s,
            decision_ttl_s=settings.decision_key_ttl_s,
            review_deadline_s=settings.review_deadline_s,
            app_feed_maxlen=settings.streams.app_feed_maxlen,
        )

    def publish(self, event: DecisionEvent, record: dict[str, Any] | None = None, app: str | None = None) -> str:
        """Append the decision to the stream, once per event id, with its decision record
        (risk/evidence.py) and, for an app's signup (`app`, the run's param), the app's feed
        copy in the same atomic step; return its entry id (the first one's, when the event was
        published already: then nothing is appended again)."""
        published, entry_id = publish_decision(
            self.client,
            self.stream,
            event,
            self.marker_ttl_s,
            self.decision_ttl_s,
            self.review_deadline_s,
            record,
            app=app,
            app_feed_maxlen=self.app_feed_maxlen,
        )
        log_event(
            logger,
            logging.INFO,
            "onboarding: published the decision" if published else "onboarding: the decision was published already",
            event_id=event.event_id,
            run_id=event.run_id,
            entry_id=entry_id,
            **({"decision": event.decision} if published else {}),
        )
        return entry_id

    def publish_retrying(
        self, event: DecisionEvent, record: dict[str, Any] | None = None, app: str | None = None
    ) -> str:
        """`publish`; while Redis is unavailable, keep trying with backoff for up to `budget_s`,
        then raise the last Redis error."""

        def again(err: BaseException, delay_s: float) -> None:
            log_event(
                logger,
                logging.WARNING,
                "onboarding: publishing failed (%s); again in %.1f s",
                err,
                delay_s,
                event_id=event.event_id,
                run_id=event.run_id,
            )

        return self.backoff.retry(
            lambda: self.publish(event, record, app), (redis.RedisError,), budget_s=self.budget_s, on_retry=again
        )
