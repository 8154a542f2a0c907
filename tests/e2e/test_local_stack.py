"""The README's stack, for real: `onboarding-stack up` brings up both Airflow instances, the
listeners, rq worker, rq cron, the metrics endpoints and the SLA and review pages under the
supervisor; the demo reviewer logs in to the review page with the password `up` generated
and `onboarding-review` run by hand finds the stack's queue; a signup is decided on realtime
while a batch DAG runs on batch; a killed listener comes back; `down` stops everything."""

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

from onboarding.decision import DecisionEvent, publish_decision, utc_now, wait_for_decision
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
    "review",
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
        "REVIEW_PORT": str(free_port()),
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
    home = Path(env["ONBOARDING_HOME"])
    check_review_page(env, client, home)

    # A batch DAG running on the batch instance ...
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

    check_restart_and_status_json(env, client, home)

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


def status_json(env: dict[str, str]) -> dict[str, dict]:
    result = stack_cmd(env, "status", "--json")
    return {service["name"]: service for service in json.loads(result.stdout)}


def check_restart_and_status_json(env: dict[str, str], client: redis.Redis, home: Path) -> None:
    """`onboarding-stack restart listener-1` with a signup just published: the listener is
    stopped with SIGTERM (it finishes what it holds, no SIGKILL), started again and healthy;
    the signup is decided exactly once; the other services keep their processes."""
    before = status_json(env)
    assert before["listener-1"]["healthy"] and before["listener-1"]["port"] == int(env["LISTENER_METRICS_PORT"])
    assert before["sla"]["port"] == int(env["SLA_PORT"]) and before["sla"]["uptime_s"] > 0
    in_flight = new_signup()
    publish_signup(client, env["SIGNUPS_STREAM"], in_flight)
    restarted = stack_cmd(env, "restart", "listener-1", timeout_s=240)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    after = status_json(env)
    listener = after["listener-1"]
    assert listener["running"] and listener["healthy"] and listener["pid"] != before["listener-1"]["pid"]
    assert listener["restarts"] == before["listener-1"]["restarts"] + 1
    assert listener["uptime_s"] < before["sla"]["uptime_s"]
    # Nobody else was touched.
    assert {n: s["pid"] for n, s in after.items() if n != "listener-1"} == {
        n: s["pid"] for n, s in before.items() if n != "listener-1"
    }
    assert all(after[name]["healthy"] for name in SERVICES), after
    assert wait_for_decision(client, env["DECISIONS_STREAM"], in_flight["event_id"], 120) is not None
    time.sleep(2)  # a second decision for it would have come by now
    decided = [
        fields for _id, fields in client.xrange(env["DECISIONS_STREAM"])
        if in_flight["event_id"].encode() in b"".join(fields.values())
    ]  # fmt: skip
    assert len(decided) == 1, decided
    supervisor_log = (home / "logs" / "supervisor.log").read_text()
    assert "listener-1: restarting on request" in supervisor_log
    assert "listener-1 did not stop" not in supervisor_log  # SIGTERM sufficed: no SIGKILL
    after_restart = new_signup()
    publish_signup(client, env["SIGNUPS_STREAM"], after_restart)
    assert wait_for_decision(client, env["DECISIONS_STREAM"], after_restart["event_id"], 120) is not None
    unknown = stack_cmd(env, "restart", "no-such-service")
    assert unknown.returncode == 1 and "listener-1" in unknown.stderr, unknown.stderr


def check_review_page(env: dict[str, str], client: redis.Redis, home: Path) -> None:
    """The review page answers, the demo reviewer logs in with the password `up` wrote (0600)
    and sees the queue; `onboarding-review list` and `decide`, run by hand with nothing but
    ONBOARDING_HOME set, work on the stack's queue."""
    page = f"http://127.0.0.1:{env['REVIEW_PORT']}"
    assert httpx.get(f"{page}/readyz", timeout=10).status_code == 200
    password_file = home / "review" / "reviewer.password"
    assert password_file.stat().st_mode & 0o077 == 0
    assert (home / "review" / "session.secret").stat().st_mode & 0o077 == 0
    event_id = f"stack-review-{os.getpid()}"
    publish_decision(  # a `review` decision opens its case
        client,
        env["DECISIONS_STREAM"],
        DecisionEvent(
            event_id=event_id,
            user_id="user-stack-review",
            decision="review",
            score=0.5,
            reason_codes=[],
            model_version="v1",
            run_id=f"signup__{event_id}",
            timestamps={"accepted_at": utc_now()},
        ),
    )
    with httpx.Client(base_url=page, timeout=10) as browser:
        wrong = browser.post("/login", data={"name": "reviewer", "password": "not-the-password"})
        assert wrong.status_code == 401
        login = browser.post("/login", data={"name": "reviewer", "password": password_file.read_text().strip()})
        assert login.status_code in (302, 303) and login.headers["location"] == "/", login.text
        assert "review_session" in browser.cookies
        queue = browser.get("/")
        assert queue.status_code == 200 and event_id in queue.text, queue.text

    by_hand = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "REVIEW_"))}
    by_hand = {k: v for k, v in by_hand.items() if not k.endswith("_STREAM")}
    by_hand["ONBOARDING_HOME"] = str(home)

    def review(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "review", *args], env=by_hand, capture_output=True, text=True, timeout=60
        )

    listed = review("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "the local stack's settings" in listed.stderr and "REVIEW_USERS_FILE" in listed.stderr
    cases = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [case["case_id"] for case in cases] == [event_id], cases
    decided = review("decide", event_id, "--reviewer", "reviewer", "--outcome", "approve", "--reason", "e2e")
    assert decided.returncode == 0, decided.stderr
    assert review("list", "--json").stdout.strip() == ""  # decided: off the queue


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
