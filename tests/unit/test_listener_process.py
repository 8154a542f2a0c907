"""The listener as a real process: SIGTERM while Airflow is down exits 0 and loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import redis

from onboarding.publisher import publish_signup
from risk.samples import new_signup
from testkit.services import free_port
from tests.conftest import TEST_REDIS_URL


def test_sigterm_exits_cleanly_and_leaves_unsettled_work_pending(redis_client: redis.Redis) -> None:
    metrics_port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": TEST_REDIS_URL,
        "AIRFLOW_API_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: Airflow is down
        "AIRFLOW_PASSWORD": "unused",
        "LISTENER_METRICS_PORT": str(metrics_port),
        "LISTENER_CONSUMER": "sigterm-test",
        "LISTENER_SHUTDOWN_TIMEOUT_S": "10",
        "LISTENER_RETRY_MAX_S": "0.2",
    }
    event = new_signup()
    publish_signup(redis_client, "signups", event)
    proc = subprocess.Popen([sys.executable, "-m", "listener"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1).text
                if 'onboarding_listener_airflow_errors_total{kind="connection"}' in metrics:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("the listener never tried Airflow")
        health = httpx.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=2)
        assert health.status_code == 200  # retrying is healthy: it is Airflow that is down
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stderr.read()
    assert "leaving" in log and "pending at shutdown" in log
    pending = redis_client.xpending_range("signups", "onboarding-listener", min="-", max="+", count=10)
    assert [p["consumer"].decode() for p in pending] == ["sigterm-test"]
    assert redis_client.xlen("signups:dead") == 0
