"""Shared fixtures: real Redis (and PostgreSQL) or a loud failure in CI.

Like dramatiq's suite: a service that is down skips its tests on a laptop but fails them
when CI is set, so a green CI run always means the real thing was exercised. The helpers
behind these fixtures, which the benchmarks share, are in `testkit`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from onboarding import intake
from onboarding.functions import ensure_loaded
from testkit.model import train_baseline
from testkit.services import require

# SIGTERM (a CI time-out) tears the services down instead of orphaning them.
pytest_plugins = ["testkit.pytest_signals"]

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """A real Redis on a dedicated database, flushed before and after each test."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        require(False, f"Redis at {TEST_REDIS_URL}")
    client.flushdb()
    # FLUSHDB keeps functions (they are server-wide, not per database): load the service's
    # library once per server, as production's deploy step does (identical code, REPLACE).
    ensure_loaded(client)
    intake.ensure_loaded(client)  # the per-app intake forwarder's own library
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory with a freshly trained current model (trained once per session)."""
    return train_baseline(tmp_path_factory.mktemp("models"))
