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

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Errors of reaching Redis, as opposed to errors of a command (wrong type, ACL denial).
REDIS_OUTAGE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
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
    (exponential backoff, `tick` after each wait so liveness stays green) and run it again.
    When the stream or its consumer group has gone (deleted by hand, or a Redis that came
    back without its data), run it again at once: the loop creates the group first.
    Returns the loop's result, or None if `stop` was set during an outage."""
    delay = retry_initial_s
    down_since: float | None = None
    last_log = 0.0
    while True:
        try:
            return loop()
        except redis.ResponseError as err:
            # NOGROUP: read after the group went; UNBLOCKED: it went while the read was blocked.
            if not str(err).startswith(("NOGROUP", "UNBLOCKED")):
                raise
            logger.warning("%s: the stream or its consumer group is gone (%s); creating it again", who, err)
            if stop.wait(0.1):
                return None
            tick()
        except REDIS_OUTAGE as err:
            now = time.monotonic()
            if down_since is None:
                down_since = now
            if now - last_log >= LOG_EVERY_S:
                last_log = now
                logger.warning(
                    "%s: redis unreachable for %.0f s (%s); retrying until it answers", who, now - down_since, err
                )
            if stop.wait(delay):
                return None
            tick()
            delay = min(delay * 2, retry_max_s)


def redis_client(url: str, block_s: float = 0.0) -> redis.Redis:
    """A client that notices a partitioned Redis: without timeouts, a command sent to a host
    that silently drops packets waits forever (and the loop, and liveness, with it).
    `block_s` is the longest blocking read the caller issues (XREADGROUP BLOCK)."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=5,
        socket_timeout=block_s + 10,
        socket_keepalive=True,
        health_check_interval=30,
    )


def probe_client(url: str) -> redis.Redis:
    """The client a readiness probe pings Redis with: it answers within a second or two,
    before the prober (Kubernetes: 1 s by default) gives up waiting."""
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
