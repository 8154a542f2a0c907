"""The one retry policy: delays grow to a cap, jitter stays within them, a stop event ends a
wait at once and the last error is raised, a budget bounds the whole retry."""

from __future__ import annotations

import random
import threading
import time
from itertools import islice

import pytest

from onboarding.backoff import Backoff, wait


class Flaky:
    """Fails `failures` times with ConnectionError, then returns "ok"."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"down (call {self.calls})")
        return "ok"


def test_delays_double_up_to_the_cap_and_stay_there() -> None:
    assert list(islice(Backoff(0.5, 5.0).delays(), 7)) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert list(islice(Backoff(1.0, 30.0, multiplier=3).delays(), 5)) == [1.0, 3.0, 9.0, 27.0, 30.0]


def test_full_jitter_draws_each_delay_between_zero_and_its_ceiling() -> None:
    ceilings = list(islice(Backoff(0.5, 5.0).delays(), 200))
    drawn = list(islice(Backoff(0.5, 5.0, jitter=True, rng=random.Random(7)).delays(), 200))
    assert all(0 <= d <= c for d, c in zip(drawn, ceilings, strict=True))
    assert len(set(drawn)) == len(drawn), "jitter spreads the delays"
    late = drawn[10:]  # at the cap: spread over the whole [0, max_s] range, not bunched
    assert min(late) < 1.0 and max(late) > 4.0


def test_impossible_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="initial_s <= max_s"):
        Backoff(5.0, 1.0)
    with pytest.raises(ValueError, match="multiplier"):
        Backoff(1.0, 5.0, multiplier=0.5)


def test_retry_returns_once_the_attempt_succeeds_and_reports_each_retry() -> None:
    attempt = Flaky(3)
    retries: list[tuple[str, float]] = []
    result = Backoff(0.001, 0.004).retry(
        attempt, (ConnectionError,), on_retry=lambda err, delay: retries.append((str(err), delay))
    )
    assert result == "ok" and attempt.calls == 4
    assert retries == [("down (call 1)", 0.001), ("down (call 2)", 0.002), ("down (call 3)", 0.004)]


def test_an_error_not_retried_on_is_raised_at_once() -> None:
    def attempt() -> str:
        raise KeyError("bad input")

    with pytest.raises(KeyError):
        Backoff(0.001, 0.01).retry(attempt, (ConnectionError,))


def test_a_stop_event_ends_the_wait_at_once_and_raises_the_last_error() -> None:
    stop = threading.Event()
    attempt = Flaky(1000)
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="call 1"):
        Backoff(30.0, 60.0).retry(attempt, (ConnectionError,), stop=stop)
    assert time.monotonic() - started < 5, "a 30 s wait ended when stop was set"
    assert attempt.calls == 1


def test_a_stop_already_set_means_no_wait_and_no_retry() -> None:
    stop = threading.Event()
    stop.set()
    attempt = Flaky(1000)
    retried: list[float] = []
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        Backoff(30.0, 60.0).retry(attempt, (ConnectionError,), stop=stop, on_retry=lambda _e, d: retried.append(d))
    assert time.monotonic() - started < 1
    assert attempt.calls == 1 and retried == []


def test_a_budget_raises_the_last_error_instead_of_waiting_past_it() -> None:
    attempt = Flaky(1000)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        Backoff(0.05, 0.05).retry(attempt, (ConnectionError,), budget_s=0.3)
    elapsed = time.monotonic() - started
    assert elapsed <= 0.3 + 0.2, "no wait runs past the budget"
    assert 4 <= attempt.calls <= 7, "it kept retrying within the budget (0.3 s / 0.05 s)"


def test_wait_says_whether_it_was_stopped() -> None:
    stop = threading.Event()
    assert wait(0.01, stop) is False
    assert wait(0.01) is False
    stop.set()
    started = time.monotonic()
    assert wait(30, stop) is True
    assert time.monotonic() - started < 1
