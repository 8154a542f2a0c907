"""`onboarding-sla serve` as a real process: it counts a decision, serves its page, and
exits 0 on SIGTERM with every observed decision acknowledged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from onboarding.decision import DecisionEvent, publish_decision
from testkit.services import free_port
from tests.conftest import TEST_REDIS_URL


def test_serve_observes_serves_and_stops_on_sigterm(redis_client: redis.Redis, tmp_path: Path) -> None:
    port = free_port()
    token_file = tmp_path / "sla-page.token"
    token_file.write_text("process-test-page-token\n")
    env = {
        **os.environ,
        "REDIS_URL": TEST_REDIS_URL,
        "AIRFLOW_API_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: Airflow is down
        "SLA_PORT": str(port),
        "SLA_CONSUMER": "process-test",
        "SLA_BLOCK_MS": "200",
        "SLA_PAGE_TOKEN_FILE": str(token_file),
    }
    proc = subprocess.Popen([sys.executable, "-m", "sla", "serve"], env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        else:
            raise AssertionError("the SLA service never became healthy")
        event = DecisionEvent(
            event_id="e-1",
            user_id="u-1",
            decision="decline",
            score=0.9,
            reason_codes=[],
            model_version="v7",
            run_id="signup__e-1",
            timestamps={"accepted_at": "2026-01-01T00:00:00+00:00", "published_at": "2026-01-01T00:00:04+00:00"},
        )
        publish_decision(redis_client, "decisions", event)
        while time.monotonic() < deadline:
            if (
                'onboarding_decisions_total{decision="decline",model_version="v7"} 1.0'
                in httpx.get(f"{base}/metrics", timeout=2).text
            ):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the decision was not counted")
        assert httpx.get(f"{base}/sla", timeout=5).status_code == 401  # the page asks for its token
        auth = {"Authorization": "Bearer process-test-page-token"}
        page = httpx.get(f"{base}/sla", headers=auth, timeout=5).text
        assert 'id="latency-p50">4.00 s<' in page
        assert httpx.get(f"{base}/api/sla", headers=auth, timeout=5).json()["by_decision"] == {"decline": 1}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert redis_client.xpending("decisions", "onboarding-sla")["pending"] == 0
