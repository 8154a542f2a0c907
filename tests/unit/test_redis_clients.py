"""The one Redis client factory: every role's client has both timeouts, so a Redis that
never answers (a partition, a host that drops packets) costs a preset number of seconds,
never a hung loop, probe or CLI."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from onboarding.redis_clients import PRESETS, Role, connect, shared

SLACK_S = 1.5  # scheduling and the client's own bookkeeping, on a busy CI machine


def test_every_role_has_a_preset_with_both_timeouts() -> None:
    assert set(PRESETS) == set(Role)
    for role in Role:
        kwargs = connect("redis://127.0.0.1:6379/0", role).connection_pool.connection_kwargs
        preset = PRESETS[role]
        assert 0 < kwargs["socket_connect_timeout"] == preset.connect_timeout_s, role
        assert 0 < kwargs["socket_timeout"] == preset.socket_timeout_s, role


def test_a_blocking_read_gets_its_block_time_on_top_of_the_timeout() -> None:
    client = connect("redis://127.0.0.1:6379/0", Role.LISTENER, block_s=2.5)
    assert client.connection_pool.connection_kwargs["socket_timeout"] == PRESETS[Role.LISTENER].socket_timeout_s + 2.5


def test_shared_gives_one_client_per_url_and_role() -> None:
    url = "redis://127.0.0.1:6379/11"
    assert shared(url, Role.TASK) is shared(url, Role.TASK)
    assert shared(url, Role.TASK) is not shared(url, Role.PROBE)
    assert shared(url, Role.TASK).connection_pool.connection_kwargs["socket_timeout"] == 5


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers a command."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


@pytest.fixture
def full_server() -> Iterator[int]:
    """A port whose accept queue is full: a new connection is never established (as with a
    host that drops packets)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        time.sleep(0.2)
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


def _ping_time(url: str, role: Role) -> tuple[type[BaseException] | None, float]:
    client = connect(url, role)
    started = time.monotonic()
    try:
        client.ping()
    except redis.RedisError as err:
        return type(err), time.monotonic() - started
    finally:
        client.close()
    return None, time.monotonic() - started


def _all_roles(url: str) -> dict[Role, tuple[type[BaseException] | None, float]]:
    with ThreadPoolExecutor(len(Role)) as pool:  # in parallel: the slowest role bounds the test
        futures = {role: pool.submit(_ping_time, url, role) for role in Role}
        return {role: future.result() for role, future in futures.items()}


def test_a_redis_that_never_answers_times_out_within_each_roles_socket_timeout(silent_server: int) -> None:
    for role, (error, took_s) in _all_roles(f"redis://127.0.0.1:{silent_server}/0").items():
        preset = PRESETS[role]
        assert error is redis.TimeoutError, role
        assert preset.socket_timeout_s * 0.9 <= took_s <= preset.socket_timeout_s + SLACK_S, (role, took_s)


def test_a_connection_that_is_never_established_times_out_within_each_roles_connect_timeout(full_server: int) -> None:
    for role, (error, took_s) in _all_roles(f"redis://127.0.0.1:{full_server}/0").items():
        preset = PRESETS[role]
        assert error is redis.TimeoutError, role
        assert preset.connect_timeout_s * 0.9 <= took_s <= preset.connect_timeout_s + SLACK_S, (role, took_s)
