"""A full Redis (issue 28, item 4): production sets `maxmemory` with policy noeviction
(deploy/k8s/redis.yaml), so once Redis is full every write is refused with OOM. Against a
real, throwaway redis-server with a 2 MB limit: the producer gets a clear error, not a crash
or a silent loss; the listener changes nothing it cannot finish (no ack, no dead letter, no
run), keeps running and decides everything once memory is freed."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from onboarding_client import AsyncOnboardingClient, OnboardingClient, OnboardingClientError, ServiceFull

from listener.consumer import Listener
from listener.settings import ListenerSettings
from onboarding.airflow import TriggerOutcome
from onboarding.errors import OnboardingError, RedisFull
from onboarding.functions import ensure_loaded
from onboarding.keys import run_id_for
from onboarding.publisher import FULL_MESSAGE, publish_raw, publish_signup
from onboarding.settings import StreamSettings
from risk.samples import new_signup
from testkit.services import free_port
from tests.unit.test_listener import FakeAirflow

FILLER = "filler:"
MAXMEMORY = "2mb"
FULL_MARGIN_BYTES = 128 * 1024


@pytest.fixture
def full_redis() -> Iterator[redis.Redis]:
    """A redis-server of its own with `--maxmemory 2mb --maxmemory-policy noeviction`."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    port = free_port()
    server = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--maxmemory", MAXMEMORY, "--maxmemory-policy", "noeviction"),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        ensure_loaded(client)
        yield client
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


def settings_for(client: redis.Redis) -> ListenerSettings:
    port = client.connection_pool.connection_kwargs["port"]
    return ListenerSettings(
        streams=StreamSettings(redis_url=f"redis://127.0.0.1:{port}/0"),
        consumer="full-test",
        block_ms=50,
        retry_initial_s=0.01,
        retry_max_s=0.02,
    )


def fill(client: redis.Redis) -> None:
    """Keys until Redis refuses even a one-byte one: the data itself is then over the limit
    (a refused large value may only have overshot through its own query buffer)."""
    i = 0
    for size in (1024, 64, 1):
        while True:
            i += 1
            if i > 100_000:
                raise AssertionError("Redis never reported OOM: is maxmemory set?")
            try:
                client.set(f"{FILLER}{i}", "x" * size)
            except redis.exceptions.OutOfMemoryError:
                break
    # Just over the limit is not full for long: Redis shrinks client buffers in the background,
    # and a write that comes then is accepted. Lower the limit a margin below what is used.
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used - FULL_MARGIN_BYTES)


def free(client: redis.Redis) -> None:
    keys = list(client.scan_iter(f"{FILLER}*", count=1000))
    client.delete(*keys)
    client.config_set("maxmemory", MAXMEMORY)


def pending(client: redis.Redis, settings: ListenerSettings) -> int:
    return int(client.xpending(settings.streams.signups_stream, settings.group)["pending"])


def unsettled(client: redis.Redis, settings: ListenerSettings) -> int:
    """Entries the group has not acknowledged: pending (read) plus lag (not yet read)."""
    group = next(
        g for g in client.xinfo_groups(settings.streams.signups_stream) if g["name"] == settings.group.encode()
    )
    return int(group["pending"]) + int(group["lag"])


def test_the_producer_gets_a_clear_error_when_redis_is_full(full_redis: redis.Redis) -> None:
    stream = settings_for(full_redis).streams.signups_stream
    publish_signup(full_redis, stream, new_signup())  # room: accepted
    fill(full_redis)
    with pytest.raises(RedisFull) as raised:
        publish_signup(full_redis, stream, new_signup())
    assert isinstance(raised.value, OnboardingError)
    assert str(raised.value).startswith(FULL_MESSAGE) and "maxmemory" in str(raised.value)
    with pytest.raises(RedisFull):
        publish_raw(full_redis, stream, "anything")
    assert full_redis.xlen(stream) == 1  # nothing half-written, the accepted one still there
    free(full_redis)
    publish_signup(full_redis, stream, new_signup())  # memory freed: accepted again
    assert full_redis.xlen(stream) == 2


def test_the_python_client_raises_service_full(full_redis: redis.Redis) -> None:
    port = full_redis.connection_pool.connection_kwargs["port"]
    client = OnboardingClient.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        event = new_signup()
        fill(full_redis)
        with pytest.raises(ServiceFull) as raised:
            client.submit(event["application"], user_id=event["user_id"], event_id=event["event_id"])
        assert isinstance(raised.value, OnboardingClientError)
        assert "Redis is full: maxmemory reached; the signup was not accepted, retry later" in str(raised.value)
        free(full_redis)
        assert client.submit(event["application"], user_id=event["user_id"], event_id=event["event_id"])
        assert full_redis.xlen("signups") == 1
    finally:
        client.close()


def test_a_full_redis_makes_the_listener_settle_nothing_and_it_finishes_once_freed(full_redis: redis.Redis) -> None:
    """Burst mode: the refused write ends the burst (the long-running loop rides it out:
    next test); nothing was acknowledged, dead-lettered or triggered half-way."""
    settings = settings_for(full_redis)
    stream = settings.streams.signups_stream
    honest = [new_signup(rng=random.Random(i)) for i in range(3)]
    publish_raw(full_redis, stream, "not json")  # a dead letter to write first
    for event in honest:
        publish_signup(full_redis, stream, event)
    airflow = FakeAirflow()
    Listener(full_redis, airflow, settings).ensure_group()  # the group exists before Redis fills up
    fill(full_redis)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        Listener(full_redis, airflow, settings).run(burst=True)
    # XREADGROUP is itself a write refused at OOM: nothing was even read, none acknowledged.
    assert unsettled(full_redis, settings) == 4
    assert full_redis.xlen(settings.streams.dead_letter_stream) == 0
    assert airflow.runs == {}
    free(full_redis)
    assert Listener(full_redis, airflow, settings).run(burst=True) == 4
    assert pending(full_redis, settings) == 0
    assert set(airflow.runs) == {run_id_for(e["event_id"]) for e in honest}
    assert full_redis.xlen(settings.streams.dead_letter_stream) == 1


def test_the_running_listener_rides_out_a_full_redis(full_redis: redis.Redis) -> None:
    settings = settings_for(full_redis)
    stream = settings.streams.signups_stream
    honest = [new_signup(rng=random.Random(10 + i)) for i in range(3)]
    for event in honest[:1]:
        publish_signup(full_redis, stream, event)
    airflow = FakeAirflow()
    listener = Listener(full_redis, airflow, settings)
    listener.ensure_group()
    fill(full_redis)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            listener.run()
        except BaseException as err:  # the test fails on any escape
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        time.sleep(1.5)
        assert thread.is_alive() and not errors  # no crash: the loop waits, its liveness ticks
        assert listener.seconds_since_loop() < 6
        assert unsettled(full_redis, settings) == 1 and airflow.runs == {}
        free(full_redis)
        for event in honest[1:]:
            publish_signup(full_redis, stream, event)
        deadline = time.monotonic() + 20
        while len(airflow.runs) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(airflow.runs) == {run_id_for(e["event_id"]) for e in honest}
        deadline = time.monotonic() + 5
        while pending(full_redis, settings) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pending(full_redis, settings) == 0
    finally:
        listener.stop()
        thread.join(timeout=10)
    assert not thread.is_alive() and not errors


class FillingAirflow(FakeAirflow):
    """Redis fills up while the listener holds an entry: between the read and its writes."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__()
        self.client = client
        self.filled = False

    def trigger(self, run_id: str, conf: dict[str, Any]) -> TriggerOutcome:
        outcome = super().trigger(run_id, conf)
        if not self.filled:
            self.filled = True
            fill(self.client)
        return outcome


def test_writes_refused_after_the_read_leave_the_entries_pending_then_they_settle_once(
    full_redis: redis.Redis,
) -> None:
    settings = settings_for(full_redis)
    stream = settings.streams.signups_stream
    honest = [new_signup(rng=random.Random(20 + i)) for i in range(2)]
    for event in honest:
        publish_signup(full_redis, stream, event)
    publish_raw(full_redis, stream, "not json")  # its dead letter would be written while full
    airflow = FillingAirflow(full_redis)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        Listener(full_redis, airflow, settings).run(burst=True)
    assert len(airflow.runs) == 1  # triggered; recording and acknowledging it were refused
    assert pending(full_redis, settings) == 3  # all read, none acknowledged
    assert full_redis.xlen(settings.streams.dead_letter_stream) == 0
    free(full_redis)
    assert Listener(full_redis, airflow, settings).run(burst=True) == 3
    assert pending(full_redis, settings) == 0
    assert set(airflow.runs) == {run_id_for(e["event_id"]) for e in honest}  # one run each (409 on the retry)
    assert full_redis.xlen(settings.streams.dead_letter_stream) == 1


def test_the_async_python_client_raises_service_full_too(full_redis: redis.Redis) -> None:
    port = full_redis.connection_pool.connection_kwargs["port"]
    event = new_signup()
    fill(full_redis)

    async def submit() -> None:
        client = AsyncOnboardingClient.from_url(f"redis://127.0.0.1:{port}/0")
        try:
            await client.submit(event["application"], user_id=event["user_id"], event_id=event["event_id"])
        finally:
            await client.close()

    with pytest.raises(ServiceFull, match="maxmemory reached"):
        asyncio.run(submit())
    assert full_redis.exists("signups") == 0
