"""Shared fixtures: real Redis (and PostgreSQL) or a loud failure in CI.

Like dramatiq's suite: a service that is down skips its tests on a laptop but fails them
when CI is set, so a green CI run always means the real thing was exercised.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

IN_CI = bool(os.environ.get("CI"))
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def require(available: bool, what: str) -> None:
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} is not available")


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """A real Redis on a dedicated database, flushed before and after each test."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        require(False, f"Redis at {TEST_REDIS_URL}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_baseline(model_dir: Path) -> Path:
    """Train and save the service's model with the default policy as the current version."""
    from risk.artifacts import save_model
    from risk.model import fit, load_training_data
    from risk.policy import CostMatrix, Policy

    data = load_training_data()
    policy = Policy.from_costs(CostMatrix(review_cost=0.7))
    save_model(model_dir, fit(data), policy, data.sha256, {"cv_auc": 0.0})
    return model_dir


class NoSession:
    """Stands in for pytest's session where the e2e helpers run outside pytest (benchmarks)."""

    testsfailed = 0


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory with a freshly trained current model (trained once per session)."""
    return train_baseline(tmp_path_factory.mktemp("models"))
