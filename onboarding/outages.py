"""Riding out a Redis outage inside a long-running loop, instead of exiting.

A process that exits when Redis is unreachable gets restarted by whatever supervises it;
in Kubernetes every listener and SLA pod would restart at once and go into
CrashLoopBackOff for as long as Redis is down. So the loops keep turning through an
outage: the liveness probe (/livez) stays green because the loop turns, the readiness
probe (/readyz, /healthz) turns red because Redis does not answer, and the loop picks up
where it stopped (entries in hand stay pending in Redis and are read again) once Redis
answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from onboarding.backoff import Backoff

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Errors of reaching Redis, as opposed to errors of a command (wrong type, ACL denial). A
# full Redis (`maxmemory` reached, policy noeviction: OOM on every write) is ridden out the
# same way: the write that failed changed nothing, the entry in hand stays pending and is
# handled again once the listeners' trimming or an operator freed memory
# (tests/unit/test_redis_maxmemory.py).
REDIS_OUTAGE: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.exceptions.OutOfMemoryError,
)
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 5.0
LOG_EVERY_S = 30.0


def through_redis_outages(
    loop: Callable[[], T],
    stop: threading.Event,
    tick: Callable[[], None],
    who: str,
    retry_initial_s: float = RETRY_INITIAL_S,
    retry_max_s: float = RETRY_MAX_S,
) -> T | None:
    """Run `loop` until it returns; when it fails because Redis cannot be reached, wait
    (exponential backoff, `tick` on each retry so liveness stays green) and run it again.
    When the stream or its consumer group has gone (deleted by hand, or a Redis that came
    back without its data), run it again at once: the loop creates the group first.
    Returns the loop's result, or None if `stop` was set during an outage."""
    backoff = Backoff(min(retry_initial_s, retry_max_s), retry_max_s)
    attempt = _recreating_the_group(loop, stop, tick, who)
    try:
        return backoff.retry(attempt, REDIS_OUTAGE, stop=stop, on_retry=_outage_log(who, tick))
    except _Stopped:
        return None
    except REDIS_OUTAGE:
        if stop.is_set():
            return None
        raise


def _recreating_the_group(
    loop: Callable[[], T], stop: threading.Event, tick: Callable[[], None], who: str
) -> Callable[[], T]:
    """`loop`, run again at once (after `tick`) whenever its stream or consumer group has gone;
    raises _Stopped if `stop` is set meanwhile."""

    def until_outage() -> T:
        while True:
            try:
                return loop()
            except redis.ResponseError as err:
                # NOGROUP: read after the group went; UNBLOCKED: it went while the read was blocked.
                if not str(err).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                logger.warning("%s: the stream or its consumer group is gone (%s); creating it again", who, err)
                if stop.wait(0.1):
                    raise _Stopped from err
                tick()

    return until_outage


def _outage_log(who: str, tick: Callable[[], None]) -> Callable[[BaseException, float], None]:
    """What each retry during an outage does: a warning with how long Redis has been down, at
    most every LOG_EVERY_S, and a `tick` so liveness stays green."""
    down_since: float | None = None
    last_log = 0.0

    def on_retry(err: BaseException, _delay_s: float) -> None:
        nonlocal down_since, last_log
        now = time.monotonic()
        if down_since is None:
            down_since = now
        if now - last_log >= LOG_EVERY_S:
            last_log = now
            logger.warning(
                "%s: redis unreachable or full for %.0f s (%s); retrying until it answers", who, now - down_since, err
            )
        tick()

    return on_retry


class _Stopped(Exception):
    """Internal: `stop` was set while waiting for a consumer group to come back."""
