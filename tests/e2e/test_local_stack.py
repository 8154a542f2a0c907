"""The README's stack, for real: `onboarding-stack up` brings up both Airflow instances, the
listeners, rq worker, rq cron and the metrics endpoints under the supervisor; a signup is
decided on realtime while a batch DAG runs on batch; a killed listener comes back; `down`
stops everything."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from onboarding.decision import wait_for_decision
from onboarding.publisher import publish_signup
from risk.samples import new_signup
from stack.processes import ProcessRecord
from testkit.realtime import E2E_REDIS_URL
from testkit.services import free_port

pytestmark = pytest.mark.e2e

SERVICES = [
    "realtime-api-server",
    "realtime-scheduler",
    "realtime-dag-processor",
    "batch-api-server",
    "batch-scheduler",
    "batch-dag-processor",
    "listener-1",
    "rq-worker",
    "rq-cron",
    "archive-metrics",
    "sla",
]


def stack_cmd(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack.cli", *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


def status(env: dict[str, str]) -> dict[str, str]:
    out = stack_cmd(env, "status").stdout
    return {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines() if line.strip()}


def wait_until(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


@pytest.fixture
def stack_env(tmp_path: Path, trained_model_dir: Path):
    client = redis.Redis.from_url(E2E_REDIS_URL)
    model_dir = tmp_path / "models"
    shutil.copytree(trained_model_dir, model_dir)
    env = {
        **os.environ,
        "ONBOARDING_HOME": str(tmp_path / "home"),
        "REDIS_URL": E2E_REDIS_URL,
        "SIGNUPS_STREAM": "stack-e2e:signups",
        "DECISIONS_STREAM": "stack-e2e:decisions",
        "DEAD_LETTER_STREAM": "stack-e2e:signups:dead",
        "RISK_MODEL_DIR": str(model_dir),
        "REALTIME_API_PORT": str(free_port()),
        "REALTIME_SCHEDULER_HEALTH_PORT": str(free_port()),
        "BATCH_API_PORT": str(free_port()),
        "BATCH_SCHEDULER_HEALTH_PORT": str(free_port()),
        "LISTENER_METRICS_PORT": str(free_port()),
        "ONBOARDING_LISTENERS": "1",
        "ARCHIVE_METRICS_PORT": str(free_port()),
        "SLA_PORT": str(free_port()),
        "REALTIME_LOG_SERVER_PORT": str(free_port()),
        "BATCH_LOG_SERVER_PORT": str(free_port()),
        "ARCHIVE_QUEUE": f"stack-e2e-maintenance-{os.getpid()}",
    }
    for key in client.scan_iter("stack-e2e:*"):
        client.delete(key)
    yield env, client
    result = stack_cmd(env, "down", timeout_s=400)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
    for key in client.scan_iter("stack-e2e:*"):
        client.delete(key)


def test_up_decides_on_realtime_while_batch_runs_and_down_stops_everything(stack_env) -> None:
    env, client = stack_env
    up = stack_cmd(env, "up", timeout_s=900)
    assert up.returncode == 0, up.stdout + up.stderr
    before = status(env)
    assert [name for name in SERVICES if not before.get(name, "").startswith("up")] == [], before
    assert stack_cmd(env, "status").returncode == 0

    # A batch DAG running on the batch instance ...
    home = Path(env["ONBOARDING_HOME"])
    batch = f"http://127.0.0.1:{env['BATCH_API_PORT']}"
    password = json.loads((home / "batch" / "passwords.json").read_text())["admin"]
    token = httpx.post(f"{batch}/auth/token", json={"username": "admin", "password": password}, timeout=30).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    api = httpx.Client(base_url=batch, headers=headers, timeout=30)  # SQLite under load is slow
    api.patch("/api/v2/dags/risk_drift", json={"is_paused": False}).raise_for_status()
    api.post("/api/v2/dags/risk_drift/dagRuns", json={"logical_date": None}).raise_for_status()

    def drift_states() -> list[str]:
        return [run["state"] for run in api.get("/api/v2/dags/risk_drift/dagRuns").json()["dag_runs"]]

    wait_until(lambda: "running" in drift_states(), 180, "a drift run is running")
    # ... while a signup is decided on the realtime instance.
    event = new_signup()
    publish_signup(client, env["SIGNUPS_STREAM"], event)
    decision = wait_for_decision(client, env["DECISIONS_STREAM"], event["event_id"], 120)
    assert decision is not None and decision.error is None
    finished = wait_until(
        lambda: (states := drift_states()) and all(s in ("success", "failed") for s in states) and states,
        400,
        "the drift runs end",
    )
    assert set(finished) == {"success"}
    api.close()

    # A crashed listener is restarted by the supervisor and decides again.
    listener = ProcessRecord.read(home / "run" / "listener-1.pid")
    assert listener is not None
    old_pid = listener.pid
    os.kill(old_pid, signal.SIGKILL)
    wait_until(
        lambda: status(env)["listener-1"].startswith("up") and f"pid {old_pid}" not in status(env)["listener-1"],
        60,
        "listener-1 restarted",
    )
    assert "1 restart" in status(env)["listener-1"]
    again = new_signup()
    publish_signup(client, env["SIGNUPS_STREAM"], again)
    assert wait_for_decision(client, env["DECISIONS_STREAM"], again["event_id"], 120) is not None

    # `down` stops every process it started, children included (the api-servers' workers).
    records = [record for p in (home / "run").glob("*.pid") if (record := ProcessRecord.read(p))]
    pids = sorted({pid for record in records for pid in record.members()})
    assert len(records) >= len(SERVICES) and len(pids) > len(records)
    down = stack_cmd(env, "down", timeout_s=400)
    assert down.returncode == 0, down.stdout + down.stderr
    alive = {pid: _cmdline(pid) for pid in pids if _alive(pid)}
    assert alive == {}
    after = status(env)
    assert all(after[name] == "down" for name in SERVICES), after
    assert stack_cmd(env, "status").returncode == 3


def _alive(pid: int) -> bool:
    """Running (a zombie has ended: only its parent, or an init that does not reap, holds it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"
