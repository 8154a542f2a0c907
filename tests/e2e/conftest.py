"""A real realtime Airflow (api-server, scheduler, dag-processor) and a real listener process,
started by the test session, once on SQLite and once on PostgreSQL metadata."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from onboarding.settings import StreamSettings
from stack.instance import AirflowInstance, InstanceSpec, drop_postgres_database, ensure_postgres_database
from stack.processes import ManagedProcess
from stack.settings import PROJECT_ROOT
from tests.conftest import free_port, require

E2E_REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/14")
LATENCIES: dict[str, list[float]] = {}


@dataclass
class RealtimeStack:
    db: str
    instance: AirflowInstance
    listener: ManagedProcess
    streams: StreamSettings
    redis: redis.Redis
    model_dir: Path

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.instance.token()}"}

    def dag_runs(self) -> list[dict]:
        url = f"{self.instance.spec.api_url}/api/v2/dags/onboarding/dagRuns?limit=1000"
        response = httpx.get(url, headers=self.admin_headers(), timeout=10)
        response.raise_for_status()
        return response.json()["dag_runs"]


def _postgres_available() -> bool:
    try:
        ensure_postgres_database("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
        return True
    except Exception:
        return False


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def realtime_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path
) -> Iterator[RealtimeStack]:
    db = request.param
    client = redis.Redis.from_url(E2E_REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        require(False, f"Redis at {E2E_REDIS_URL}")
    database_url = None
    if db == "postgres":
        require(_postgres_available(), "PostgreSQL on 127.0.0.1:5432")
        database_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/onboarding_e2e_{os.getpid()}"
        drop_postgres_database(database_url)
    client.flushdb()
    home = tmp_path_factory.mktemp(f"realtime-{db}")
    streams = StreamSettings(
        redis_url=E2E_REDIS_URL,
        signups_stream=f"e2e-{db}:signups",
        decisions_stream=f"e2e-{db}:decisions",
        dead_letter_stream=f"e2e-{db}:signups:dead",
    )
    stream_env = {
        "REDIS_URL": streams.redis_url,
        "SIGNUPS_STREAM": streams.signups_stream,
        "DECISIONS_STREAM": streams.decisions_stream,
        "DEAD_LETTER_STREAM": streams.dead_letter_stream,
        "RISK_MODEL_DIR": str(trained_model_dir),
    }
    instance = AirflowInstance(
        InstanceSpec(
            name="realtime",
            home=home,
            config_file=PROJECT_ROOT / "deploy" / "realtime" / "airflow.cfg",
            dags_folder=PROJECT_ROOT / "dags" / "realtime",
            api_port=free_port(),
            scheduler_health_port=free_port(),
            database_url=database_url,
            local_settings=PROJECT_ROOT / "deploy" / "realtime" / "airflow_local_settings.py",
        ),
        {**os.environ, **stream_env},
    )
    metrics_port = free_port()
    listener = ManagedProcess(
        name="listener",
        argv=[sys.executable, "-m", "listener"],
        env={
            **os.environ,
            **stream_env,
            "AIRFLOW_API_URL": instance.spec.api_url,
            "AIRFLOW_USERNAME": "listener",
            "AIRFLOW_PASSWORD_FILE": str(instance.listener_password_file),
            "LISTENER_METRICS_PORT": str(metrics_port),
            "LISTENER_CONSUMER": f"e2e-{db}",
        },
        run_dir=home / "run",
        log_dir=home / "logs",
    )
    instance.prepare()
    try:
        instance.migrate()
        instance.start()
        instance.wait_ready(("onboarding",), timeout_s=300)
        listener.start()
        _wait_healthy(listener, metrics_port)
        yield RealtimeStack(db, instance, listener, streams, client, trained_model_dir)
    finally:
        listener.stop(timeout_s=20)
        instance.stop(timeout_s=20)
        if request.node.session.testsfailed:
            for process in [listener, *instance.processes()]:
                sys.stderr.write(f"\n--- {process.name} ({db}) ---\n{process.tail(60)}\n")
        if database_url:
            drop_postgres_database(database_url)
        client.flushdb()


def _wait_healthy(listener: ManagedProcess, port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert listener.running(), listener.tail()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"listener not healthy:\n{listener.tail()}")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not LATENCIES:
        return
    terminalreporter.section("signup -> decision latency (listener accepted -> decision published)")
    for db, values in LATENCIES.items():
        terminalreporter.write_line(
            f"{db:9} n={len(values)}  median {statistics.median(values):.2f} s  max {max(values):.2f} s"
        )
