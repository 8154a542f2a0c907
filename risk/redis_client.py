"""One Redis client per URL per process, so repeated task calls reuse warm connections."""

from __future__ import annotations

from functools import cache

import redis


@cache
def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
