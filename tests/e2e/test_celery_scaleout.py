"""Scale-out on one machine: the realtime instance on CeleryExecutor (Redis broker,
PostgreSQL metadata and result backend), two Celery workers, three listener processes in
one consumer group. Every signup of a burst is decided exactly once."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from onboarding.publisher import publish_signup
from risk.samples import new_signup
from testkit.celery_stack import E2E_REDIS_URL, celery_call, celery_realtime, wait_decisions

pytestmark = pytest.mark.e2e

SIGNUPS = 40


def test_two_celery_workers_and_three_listeners_decide_each_signup_once(
    request: pytest.FixtureRequest, tmp_path: Path, trained_model_dir: Path
) -> None:
    broker = os.environ.get("CELERY_TEST_BROKER_URL", E2E_REDIS_URL)
    with celery_realtime(tmp_path, trained_model_dir, request.session, "celery", broker, 2, 3) as (stack, workers):
        assert all(worker.running() for worker in workers)
        rng = random.Random(7)
        events = [new_signup(rng=rng) for _ in range(SIGNUPS)]
        for event in events:
            publish_signup(stack.redis, stack.streams.signups_stream, event)

        found = wait_decisions(stack, SIGNUPS, timeout_s=600)

        counts = Counter(d.event_id for d in found)
        assert set(counts) == {e["event_id"] for e in events}
        assert [eid for eid, n in counts.items() if n != 1] == []
        assert all(d.decision in ("approve", "review", "decline") and d.error is None for d in found)
        # One run per signup, all on CeleryExecutor: the tasks ran on both workers.
        runs = stack.dag_runs()
        assert len(runs) == SIGNUPS
        done = tasks_per_worker(stack)
        assert sorted(name.split("@")[0] for name, n in done.items() if n > 0) == ["worker1", "worker2"], done
        # The three listeners are consumers of the one group.
        consumers = stack.redis.xinfo_consumers(stack.streams.signups_stream, "onboarding-listener")
        assert len(consumers) == 3


def tasks_per_worker(stack) -> dict[str, int]:
    """Celery's own count of the Airflow workloads each worker has executed."""
    stats = celery_call(stack, "app.control.inspect(timeout=5.0).stats() or {}")
    return {name: sum(info.get("total", {}).values()) for name, info in stats.items()}
