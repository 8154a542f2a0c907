"""The local stack's supervisor, as a real process with real children: ordered start on
health, restart after a crash, a failed start stops what had started, SIGTERM stops all
(SIGKILL for a child that ignores SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stack.settings import StackSettings
from stack.supervisor import Plan, Service, read_state
from testkit.services import free_port

PY = sys.executable
SLEEPER = [PY, "-c", "import time\nwhile True: time.sleep(0.1)"]
STUBBORN = [PY, "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(0.1)"]


def http_server(port: int, delay_s: float = 0.0) -> list[str]:
    code = (
        f"import time, http.server\ntime.sleep({delay_s})\n"
        f"http.server.test(http.server.SimpleHTTPRequestHandler, port={port}, bind='127.0.0.1')"
    )
    return [PY, "-c", code]


def start(tmp_path: Path, services: list[Service]) -> subprocess.Popen[bytes]:
    plan = Plan(services, tmp_path / "run", tmp_path / "logs")
    plan.write(tmp_path / "plan.json")
    return subprocess.Popen(
        [PY, "-m", "stack.supervisor", str(tmp_path / "plan.json")],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "supervisor.log").open("wb"),
    )


def wait_state(tmp_path: Path, predicate, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    state: dict | None = None
    while time.monotonic() < deadline:
        state = read_state(tmp_path / "run")
        if state and predicate(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"state not reached: {state}\n{(tmp_path / 'supervisor.log').read_text()}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def stop_after():
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def test_starts_in_order_restarts_a_crashed_service_and_stops_everything(tmp_path: Path, stop_after) -> None:
    port = free_port()
    env = dict(os.environ)
    supervisor = start(
        tmp_path,
        [
            Service("slow-http", http_server(port, delay_s=1.0), env, health=f"http:http://127.0.0.1:{port}/"),
            Service("worker", SLEEPER, env, alive_s=0.5),
            Service("stubborn", STUBBORN, env, alive_s=0.5, stop_timeout_s=1.0),
        ],
    )
    stop_after.append(supervisor)
    # While the first service is not healthy yet, the next one is not started.
    early = wait_state(tmp_path, lambda s: s["services"]["slow-http"]["state"] == "starting")
    assert early["services"]["worker"]["state"] == "pending"
    state = wait_state(tmp_path, lambda s: s["phase"] == "running")
    assert {name: s["state"] for name, s in state["services"].items()} == {
        "slow-http": "up",
        "worker": "up",
        "stubborn": "up",
    }
    assert (tmp_path / "logs" / "slow-http.log").is_file()

    crashed = state["services"]["worker"]["pid"]
    os.kill(crashed, signal.SIGKILL)
    again = wait_state(
        tmp_path, lambda s: s["services"]["worker"]["state"] == "up" and s["services"]["worker"]["restarts"] == 1
    )
    assert again["services"]["worker"]["pid"] not in (None, crashed)
    assert again["services"]["worker"]["last_exit"] == -signal.SIGKILL

    pids = [s["pid"] for s in again["services"].values()]
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0
    assert [pid for pid in pids if alive(pid)] == []  # the stubborn one was SIGKILLed
    final = read_state(tmp_path / "run")
    assert final["phase"] == "stopped"
    assert list((tmp_path / "run").glob("*.pid")) == []


def test_a_service_that_never_gets_healthy_fails_the_start_and_stops_the_others(tmp_path: Path, stop_after) -> None:
    env = dict(os.environ)
    supervisor = start(
        tmp_path,
        [
            Service("first", SLEEPER, env, alive_s=0.3),
            Service("broken", [PY, "-c", "raise SystemExit(3)"], env, health="http:http://127.0.0.1:9/"),
            Service("never", SLEEPER, env),
        ],
    )
    stop_after.append(supervisor)
    assert supervisor.wait(30) == 1
    state = read_state(tmp_path / "run")
    assert state["phase"] == "failed"
    assert state["services"]["broken"] == {**state["services"]["broken"], "state": "failed", "last_exit": 3}
    assert state["services"]["never"]["state"] in ("pending", "stopped")
    assert state["services"]["first"]["pid"] is None


def test_batch_database_is_never_the_realtime_one() -> None:
    assert StackSettings.from_env({}).batch_database_url is None  # SQLite in its own home
    pg = StackSettings.from_env({"ONBOARDING_METADATA_DB": "postgres"})
    assert pg.database_url.endswith("/onboarding_realtime")
    assert pg.batch_database_url.endswith("/onboarding_batch")
    url = StackSettings.from_env({"ONBOARDING_METADATA_DB": "postgresql+psycopg2://u:pw@db:5432/rt"})
    assert url.batch_database_url == "postgresql+psycopg2://u:pw@db:5432/rt_batch"
