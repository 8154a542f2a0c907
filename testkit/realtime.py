"""A real realtime Airflow (api-server, scheduler, dag-processor), real listener processes and
the intake process (the apps' intakes and the streams' retention), on SQLite or PostgreSQL
metadata, started for a test or a benchmark and stopped after it."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
import redis

from onboarding import intake
from onboarding.functions import ensure_loaded
from onboarding.settings import StreamSettings
from stack.instance import AirflowInstance, InstanceSpec, drop_postgres_database
from stack.processes import ManagedProcess
from testkit.postgres import postgres_available
from testkit.services import free_port, require

E2E_REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/14")


class SessionLike(Protocol):
    """What `running_realtime` reads of pytest's session: how many tests have failed so far."""

    testsfailed: int


class NoSession:
    """Stands in for pytest's session where the e2e helpers run outside pytest (benchmarks)."""

    testsfailed = 0


@dataclass
class RealtimeStack:
    db: str
    instance: AirflowInstance
    streams: StreamSettings
    redis: redis.Redis
    model_dir: Path
    home: Path
    listeners: list[ManagedProcess] = field(default_factory=list)
    intake: ManagedProcess | None = None
    incarnation: int = 0

    @property
    def stream_env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.streams.redis_url,
            "SIGNUPS_STREAM": self.streams.signups_stream,
            "DECISIONS_STREAM": self.streams.decisions_stream,
            "DEAD_LETTER_STREAM": self.streams.dead_letter_stream,
            "RISK_MODEL_DIR": str(self.model_dir),
        }

    def start_listener(self, **extra_env: str) -> tuple[ManagedProcess, int]:
        """A new listener process with a new consumer name (like a new pod)."""
        self.incarnation += 1
        port = free_port()
        process = ManagedProcess(
            name=f"listener-{self.incarnation}",
            argv=[sys.executable, "-m", "listener"],
            env={
                **os.environ,
                **self.stream_env,
                "AIRFLOW_API_URL": self.instance.spec.api_url,
                "AIRFLOW_USERNAME": "listener",
                "AIRFLOW_PASSWORD_FILE": str(self.instance.listener_password_file),
                "LISTENER_METRICS_PORT": str(port),
                "LISTENER_CONSUMER": f"e2e-{self.db}-{self.incarnation}",
                **extra_env,
            },
            run_dir=self.home / "run",
            log_dir=self.home / "logs",
        )
        process.start()
        wait_healthy(process, port)
        self.listeners.append(process)
        return process, port

    def start_intake(self, **extra_env: str) -> tuple[ManagedProcess, int]:
        """The intake process (onboarding-intake), as a deployment runs one beside the listeners;
        a running one is stopped first (e.g. to restart it with ONBOARDING_APPS)."""
        if self.intake is not None:
            self.intake.stop(timeout_s=10)
        port = free_port()
        process = ManagedProcess(
            name="intake",
            argv=[sys.executable, "-m", "intake"],
            env={**os.environ, **self.stream_env, "INTAKE_METRICS_PORT": str(port), **extra_env},
            run_dir=self.home / "run",
            log_dir=self.home / "logs",
        )
        process.start()
        wait_healthy(process, port)
        self.intake = process
        return process, port

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.instance.token()}"}

    def dag_runs(self) -> list[dict]:
        runs: list[dict] = []
        headers = self.admin_headers()
        while True:
            url = f"{self.instance.spec.api_url}/api/v2/dags/onboarding/dagRuns?limit=100&offset={len(runs)}"
            response = httpx.get(url, headers=headers, timeout=30)
            response.raise_for_status()
            page = response.json()["dag_runs"]
            runs.extend(page)
            if len(page) < 100:
                return runs


@contextlib.contextmanager
def running_realtime(
    db: str,
    home: Path,
    model_dir: Path,
    session: SessionLike,
    name: str,
    extra_env: Callable[[str], dict[str, str]] | None = None,
    task_redis_url: str | None = None,
) -> Iterator[RealtimeStack]:
    """Start a realtime instance with its own streams; stop it and clean up afterwards.

    `extra_env(database_url)` adds settings to every component (e.g. another executor).
    `task_redis_url`: the Redis URL the DAG's tasks get (e.g. with an ACL user's credentials);
    by default the test's own. When tests failed while it ran (`session.testsfailed`), the
    processes' last log lines go to stderr."""
    client = redis.Redis.from_url(E2E_REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        require(False, f"Redis at {E2E_REDIS_URL}")
    ensure_loaded(client)  # the service's Redis Functions, as the deploy step loads them
    intake.ensure_loaded(client)
    database_url = None
    if db == "postgres":
        require(postgres_available(), "PostgreSQL on 127.0.0.1:5432")
        database_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/onboarding_{name}_{os.getpid()}"
        drop_postgres_database(database_url)
    streams = StreamSettings(
        redis_url=E2E_REDIS_URL,
        signups_stream=f"{name}-{db}:signups",
        decisions_stream=f"{name}-{db}:decisions",
        dead_letter_stream=f"{name}-{db}:signups:dead",
    )
    for key in client.scan_iter(f"{name}-{db}:*"):
        client.delete(key)
    stack = RealtimeStack(db, None, streams, client, model_dir, home)  # type: ignore[arg-type]
    stack.instance = AirflowInstance(
        InstanceSpec.from_deploy("realtime", home, free_port(), free_port(), database_url),
        {
            **os.environ,
            **stack.stream_env,
            **(extra_env(database_url or "") if extra_env else {}),
            **({"REDIS_URL": task_redis_url} if task_redis_url else {}),
        },
    )
    failed_before = session.testsfailed
    stack.instance.prepare()
    try:
        stack.instance.migrate()
        stack.instance.start()
        stack.instance.wait_ready(("onboarding",), timeout_s=300)
        stack.start_intake()
        yield stack
    finally:
        for process in stack.listeners:
            process.stop(timeout_s=20)
        if stack.intake is not None:
            stack.intake.stop(timeout_s=10)
        stack.instance.stop(timeout_s=20)
        if session.testsfailed > failed_before:
            for process in [*stack.listeners, *([stack.intake] if stack.intake else []), *stack.instance.processes()]:
                sys.stderr.write(f"\n--- {process.name} ({name}, {db}) ---\n{process.tail(60)}\n")
        if database_url:
            drop_postgres_database(database_url)
        for key in client.scan_iter(f"{name}-{db}:*"):
            client.delete(key)


def wait_healthy(process: ManagedProcess, port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.running(), process.tail()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{process.name} not healthy:\n{process.tail()}")
