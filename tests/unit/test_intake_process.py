"""The intake process (`onboarding-intake`) as a real process, as its own Redis ACL user:
it forwards an app's signup as soon as it arrives, serves /metrics and its probes, trims the
streams, and exits 0 on SIGTERM within its block time, with nothing lost or duplicated."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from intake.settings import IntakeSettings
from onboarding import keys
from onboarding.errors import ConfigError
from onboarding.settings import StreamSettings
from ops.redis_acl import apply
from testkit.services import free_port
from tests.conftest import TEST_REDIS_URL

STREAMS = StreamSettings(redis_url=TEST_REDIS_URL, apps=("web",))
PREFIX = f"intake-test-{os.getpid()}-"
WEB = keys.intake_stream("signups", "web")


@pytest.fixture
def intake_url(redis_client: redis.Redis) -> Iterator[str]:
    """A REDIS_URL with the shipped `intake` user's credentials (the user deleted afterwards)."""
    password = secrets.token_urlsafe(16)
    created = apply(redis_client, STREAMS, {"REDIS_ACL_PASSWORD_INTAKE": password}, user_prefix=PREFIX)
    url = redis.connection.parse_url(TEST_REDIS_URL)
    try:
        yield f"redis://{PREFIX}intake:{password}@{url['host']}:{url['port']}/{url.get('db', 0)}"
    finally:
        redis_client.execute_command("ACL", "DELUSER", *created)


def _wait(check: object, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_intake_process_forwards_at_once_serves_metrics_and_stops_on_sigterm(
    redis_client: redis.Redis, intake_url: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": intake_url,
        "ONBOARDING_APPS": "web",
        "INTAKE_METRICS_PORT": str(port),
        "INTAKE_BLOCK_MS": "2000",
        "SIGNUPS_RETENTION_S": "0",
        "DECISIONS_RETENTION_S": "0",
        "INTAKE_TRIM_INTERVAL_S": "0.2",
        "LOG_FORMAT": "text",
    }
    redis_client.xadd("decisions", {"event_id": "old", "payload": "{}"}, id="1-0")  # past retention
    proc = subprocess.Popen([sys.executable, "-m", "intake"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: _healthy(port), 30, "/healthz")
        _wait(lambda: redis_client.xlen("decisions") == 0, 10, "the decision past retention to be trimmed")
        delays = []
        for n in range(5):
            time.sleep(0.3)  # inside the process's 2 s wait on the intake
            redis_client.xadd(WEB, {"payload": json.dumps({"event_id": f"e-{n}"})})
            delays.append(_wait(lambda n=n: redis_client.xlen("signups") == n + 1, 10, f"signup {n} forwarded"))
        assert max(delays) < 1.0, delays  # woken by the entry, not by the end of the 2 s wait
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert 'onboarding_intake_forwarded_total{app="web"} 5.0' in metrics
        assert 'onboarding_intake_trimmed_total{stream="decisions"} 1.0' in metrics
        # Retention keeps the forwarded signups: the listeners' group has not read them.
        assert redis_client.xlen("signups") == 5
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 4  # within INTAKE_BLOCK_MS of the signal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stderr.read() if proc.stderr else ""
    assert "stopped after forwarding 5 entries" in log, log[-2000:]
    forwarded = [json.loads(f[b"payload"])["event_id"] for _id, f in redis_client.xrange("signups")]
    assert forwarded == [f"e-{n}" for n in range(5)]  # each once, in order
    assert redis_client.xpending(WEB, keys.INTAKE_GROUP)["pending"] == 0


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_help_lists_every_variable_the_settings_read_and_version_answers() -> None:
    done = subprocess.run([sys.executable, "-m", "intake", "--help"], capture_output=True, text=True, check=True)
    for name in ("INTAKE_BLOCK_MS", "INTAKE_BATCH_SIZE", "INTAKE_TRIM_INTERVAL_S", "INTAKE_METRICS_PORT"):
        assert name in done.stdout
    for name in ("SIGNUPS_RETENTION_S", "DECISIONS_RETENTION_S", "ONBOARDING_APPS", "LISTENER_GROUP", "REDIS_URL"):
        assert name in done.stdout
    version = subprocess.run([sys.executable, "-m", "intake", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("onboarding-intake ")


def test_settings_are_read_once_and_bad_values_are_named() -> None:
    settings = IntakeSettings.from_env(
        {"ONBOARDING_APPS": "web,mobile", "INTAKE_BLOCK_MS": "250", "SIGNUPS_RETENTION_S": "60"}
    )
    assert settings.streams.apps == ("web", "mobile") and settings.block_ms == 250 and settings.retention_s == 60
    assert IntakeSettings.from_env({}).decisions_retention_s == 7 * 24 * 3600
    with pytest.raises(ConfigError, match="INTAKE_BLOCK_MS"):
        IntakeSettings.from_env({"INTAKE_BLOCK_MS": "soon"})
    bad = subprocess.run(
        [sys.executable, "-m", "intake"], env={**os.environ, "INTAKE_BATCH_SIZE": "0"}, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "INTAKE_BATCH_SIZE" in bad.stderr
