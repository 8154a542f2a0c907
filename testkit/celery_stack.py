"""The realtime instance scaled out on this machine: CeleryExecutor with a Redis broker and
the PostgreSQL metadata database as result backend, N `airflow celery worker` processes,
and M listener processes in one consumer group. Used by tests/e2e/test_celery_scaleout.py
and benchmarks/celery_scaleout.py."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from sqlalchemy.engine import make_url

from onboarding.decision import DecisionEvent
from stack.processes import ManagedProcess
from testkit.realtime import E2E_REDIS_URL, RealtimeStack, SessionLike, running_realtime

__all__ = [
    "E2E_REDIS_URL",
    "WORKER_CONCURRENCY",
    "celery_call",
    "celery_realtime",
    "decisions",
    "start_workers",
    "wait_decisions",
]

# Each worker runs this many task processes at once; two workers double the slots.
WORKER_CONCURRENCY = 4


def celery_env(database_url: str, broker_url: str, prefix: str) -> dict[str, str]:
    backend = make_url(database_url).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        # The broker's keys carry a prefix, so a shared Redis database stays usable.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": prefix,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{backend}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        # One task at a time per free slot: a burst spreads over the workers instead of
        # piling up in the first worker's prefetch buffer.
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
    }


def start_workers(stack: RealtimeStack, count: int, first: int = 1) -> list[ManagedProcess]:
    """Start workers number `first` .. `first + count - 1` and wait until all answer."""
    workers = []
    for i in range(first, first + count):
        worker = ManagedProcess(
            name=f"celery-worker-{i}",
            argv=[
                sys.executable,
                "-m",
                "airflow",
                "celery",
                "worker",
                "--celery-hostname",
                f"worker{i}@%h",
                "--concurrency",
                str(WORKER_CONCURRENCY),
                "--skip-serve-logs",  # two workers on one host would fight over the log port
            ],
            env=stack.instance.env(),
            run_dir=stack.home / "run",
            log_dir=stack.home / "logs",
        )
        worker.start()
        workers.append(worker)
    wait_workers(stack, first + count - 1)
    return workers


def wait_workers(stack: RealtimeStack, count: int, timeout_s: float = 120) -> None:
    """Wait until `count` workers answer a Celery ping on the broker."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        last = celery_call(stack, "app.control.ping(timeout=2.0)")
        if len(last) >= count:
            return
        time.sleep(1)
    raise AssertionError(f"{count} Celery workers did not answer within {timeout_s:.0f} s: {last}")


def celery_call(stack: RealtimeStack, expression: str) -> Any:
    """A Celery control expression evaluated on the instance's Celery app (`app`)."""
    code = (
        "import json\n"
        "from airflow.providers.celery.executors.celery_executor_utils import app\n"
        f"print('RESULT ' + json.dumps({expression}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=stack.instance.env(), capture_output=True, text=True, timeout=60
    )
    for line in reversed(result.stdout.splitlines()):  # Airflow may log to stdout first
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise AssertionError(f"Celery call failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def decisions(stack: RealtimeStack) -> list[DecisionEvent]:
    entries = stack.redis.xrange(stack.streams.decisions_stream)
    return [DecisionEvent.from_dict(json.loads(fields[b"payload"])) for _id, fields in entries]


def wait_decisions(stack: RealtimeStack, want: int, timeout_s: float) -> list[DecisionEvent]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = decisions(stack)
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@contextlib.contextmanager
def celery_realtime(
    home: Path, model_dir: Path, session: SessionLike, name: str, broker_url: str, workers: int, listeners: int
) -> Iterator[tuple[RealtimeStack, list[ManagedProcess]]]:
    """A realtime instance on CeleryExecutor (PostgreSQL metadata), its workers and listeners."""
    prefix = f"{name}-{os.getpid()}:"
    started: list[ManagedProcess] = []
    env = lambda database_url: celery_env(database_url, broker_url, prefix)  # noqa: E731
    with running_realtime("postgres", home, model_dir, session, name, extra_env=env) as stack:
        try:
            started = start_workers(stack, workers)
            for _ in range(listeners):
                stack.start_listener()
            yield stack, started
        finally:
            for worker in started:
                worker.stop(timeout_s=30)
            client = redis.Redis.from_url(broker_url)
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)
