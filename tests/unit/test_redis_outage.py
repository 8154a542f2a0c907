"""A Redis outage must not restart every pod: the listener and the SLA service keep their
loop turning through one (liveness /livez stays 200, readiness /readyz and /healthz turn
503), and carry on, losing nothing, once Redis answers again. Against a private
redis-server (AOF on) that the test kills and restarts on the same port."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from listener.consumer import Listener
from listener.settings import ListenerSettings
from onboarding.decision import DecisionEvent, publish_decision
from onboarding.functions import ensure_loaded
from onboarding.http import loop_health, loop_liveness, serve_http
from onboarding.publisher import publish_signup
from onboarding.redis_clients import Role, connect
from onboarding.settings import StreamSettings
from risk.samples import new_signup
from testkit.services import free_port
from tests.unit.test_listener import FakeAirflow

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


@dataclass
class PrivateRedis:
    port: int
    data: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "yes"],
            cwd=self.data,
            stdout=subprocess.DEVNULL,
        )
        wait(lambda: _pings(self.url), "redis to answer")
        ensure_loaded(redis.Redis.from_url(self.url))  # kept in the AOF across the restarts

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def wait(predicate, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status(url: str) -> int:
    return httpx.get(url, timeout=5).status_code


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


def test_the_listener_rides_out_a_redis_outage(private_redis: PrivateRedis) -> None:
    settings = ListenerSettings(
        streams=StreamSettings(redis_url=private_redis.url), consumer="outage", block_ms=200, claim_interval_s=0.5
    )
    client = connect(private_redis.url, Role.LISTENER, block_s=0.2)
    airflow = FakeAirflow()
    listener = Listener(client, airflow, settings)
    stale_after_s = 3.0
    server = serve_http(
        "127.0.0.1",
        0,
        listener.metrics.registry,
        loop_health("consumer loop", listener.seconds_since_loop, stale_after_s, client),
        live=loop_liveness("consumer loop", listener.seconds_since_loop, stale_after_s),
    )
    base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    try:
        before = new_signup(rng=random.Random(1))
        publish_signup(client, settings.streams.signups_stream, before)
        wait(lambda: len(airflow.runs) == 1, "the first run")

        private_redis.kill()
        time.sleep(2 * stale_after_s)  # longer than the loop may stall before liveness fails
        assert thread.is_alive()
        assert status(f"{base}/livez") == 200
        assert status(f"{base}/readyz") == 503 and status(f"{base}/healthz") == 503

        private_redis.start()
        after = new_signup(rng=random.Random(2))
        publish_signup(client, settings.streams.signups_stream, after)
        wait(lambda: len(airflow.runs) == 2, "the run of the signup sent after the outage")
        assert set(airflow.runs) == {f"signup__{e['event_id']}" for e in (before, after)}
        wait(lambda: status(f"{base}/readyz") == 200, "readiness to return")
        assert client.xpending(settings.streams.signups_stream, settings.group)["pending"] == 0
    finally:
        listener.stop()
        thread.join(10)
        server.shutdown()
    assert not thread.is_alive()


def test_the_sla_service_process_rides_out_a_redis_outage(private_redis: PrivateRedis) -> None:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": private_redis.url,
        "AIRFLOW_API_URL": f"http://127.0.0.1:{free_port()}",
        "SLA_PORT": str(port),
        "SLA_BLOCK_MS": "200",
    }
    proc = subprocess.Popen([sys.executable, "-m", "sla", "serve"], env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: _answers(f"{base}/readyz"), "the SLA service to be ready")
        private_redis.kill()
        time.sleep(12)  # beyond the loop's staleness limit (10 s at the least)
        assert proc.poll() is None, "the SLA service exited during the Redis outage"
        assert status(f"{base}/livez") == 200
        assert status(f"{base}/readyz") == 503

        private_redis.start()
        decision = DecisionEvent("e-1", "u-1", "approve", 0.1, [], "v9", "signup__e-1", {})
        publish_decision(redis.Redis.from_url(private_redis.url), "decisions", decision)
        counted = 'onboarding_decisions_total{decision="approve",model_version="v9"} 1.0'
        wait(lambda: counted in httpx.get(f"{base}/metrics", timeout=5).text, "the decision after the outage")
        assert status(f"{base}/readyz") == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _answers(url: str) -> bool:
    try:
        return status(url) == 200
    except httpx.HTTPError:
        return False


def test_listener_and_sla_observer_carry_on_when_their_stream_is_deleted(redis_client: redis.Redis) -> None:
    """A stream deleted by hand, or a Redis that came back without its data: the consumer
    group is gone (NOGROUP). Both loops create it again and go on, no restart needed."""
    from onboarding.decision import DecisionEvent, publish_decision
    from sla.metrics import SlaMetrics
    from sla.observer import DecisionObserver
    from sla.settings import SlaSettings
    from tests.conftest import TEST_REDIS_URL

    streams = StreamSettings(redis_url=TEST_REDIS_URL)
    airflow = FakeAirflow()
    listener = Listener(redis_client, airflow, ListenerSettings(streams=streams, consumer="nogroup", block_ms=100))
    sla_settings = SlaSettings(streams=streams, consumer="nogroup", block_ms=100)
    observer = DecisionObserver(redis_client, sla_settings, SlaMetrics(sla_settings))
    threads = [threading.Thread(target=loop.run, daemon=True) for loop in (listener, observer)]
    for thread in threads:
        thread.start()
    try:
        first = new_signup(rng=random.Random(3))
        publish_signup(redis_client, streams.signups_stream, first)
        wait(lambda: len(airflow.runs) == 1, "the first run")
        redis_client.delete(streams.signups_stream, streams.decisions_stream)
        time.sleep(0.5)
        assert all(thread.is_alive() for thread in threads)
        second = new_signup(rng=random.Random(4))
        publish_signup(redis_client, streams.signups_stream, second)
        wait(lambda: len(airflow.runs) == 2, "the run of a signup sent after the stream was deleted")
        stamps = {"occurred_at": "2026-11-30T10:00:00+00:00"}
        publish_decision(
            redis_client, streams.decisions_stream, DecisionEvent("e-9", "u", "approve", 0.1, [], "v", "r", stamps)
        )
        wait(
            lambda: (
                redis_client.xpending(streams.decisions_stream, sla_settings.group)["pending"] == 0
                and redis_client.xinfo_groups(streams.decisions_stream)[0]["entries-read"] == 1
            ),
            "the observer read it",
        )
    finally:
        listener.stop()
        observer.stop()
        for thread in threads:
            thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
