"""What the crash-point searches share (tests/unit/test_*_crash_points.py): hypothesis'
settings for a stateful walk against real Redis, and the skip when Redis does not answer."""

from __future__ import annotations

import redis
from hypothesis import HealthCheck, Phase, settings

from testkit.services import require


def machine_settings(examples: int, phases: tuple[Phase, ...] = tuple(Phase)) -> settings:
    """Walks of up to 30 steps, no deadline (each step talks to Redis), no example database
    (every run searches afresh)."""
    return settings(
        max_examples=examples,
        stateful_step_count=30,
        deadline=None,
        phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
    )


def require_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError:
        require(False, f"Redis at {url}")
