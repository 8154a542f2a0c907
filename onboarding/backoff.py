"""The one retry policy: exponential backoff with a cap, optional full jitter, a stop event.

Every loop that waits for something to come back (the listener for Airflow, a task for
Redis, the loops riding out a Redis outage, the supervisor restarting a crashed service)
takes its delays from a `Backoff`, so they differ only in their numbers, not their code.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Delays `initial_s`, x`multiplier` each time, at most `max_s`; with `jitter`, each delay
    is drawn uniformly from [0, delay] ("full jitter": retries of many clients spread out)."""

    initial_s: float
    max_s: float
    multiplier: float = 2.0
    jitter: bool = False
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.initial_s <= self.max_s:
            raise ValueError(f"backoff needs 0 <= initial_s <= max_s, got {self.initial_s} and {self.max_s}")
        if self.multiplier < 1:
            raise ValueError(f"backoff multiplier must be >= 1, got {self.multiplier}")

    def delays(self) -> Iterator[float]:
        """The delays to wait, one per retry, for ever."""
        delay = self.initial_s
        while True:
            yield self.rng.uniform(0, delay) if self.jitter else delay
            delay = min(delay * self.multiplier, self.max_s)

    def retry(
        self,
        attempt: Callable[[], T],
        retry_on: tuple[type[BaseException], ...],
        *,
        stop: threading.Event | None = None,
        budget_s: float | None = None,
        on_retry: Callable[[BaseException, float], None] | None = None,
    ) -> T:
        """Call `attempt` until it returns. On an error of `retry_on`: `on_retry(error, delay)`,
        wait, try again. The last error is raised when the next wait would pass `budget_s`
        or when `stop` is set (before or during a wait)."""
        deadline = None if budget_s is None else time.monotonic() + budget_s
        delays = self.delays()
        while True:
            try:
                return attempt()
            except retry_on as err:
                delay = next(delays)
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise
                if stop is not None and stop.is_set():
                    raise
                if on_retry is not None:
                    on_retry(err, delay)
                if wait(delay, stop):
                    raise


def wait(seconds: float, stop: threading.Event | None = None) -> bool:
    """Sleep `seconds`, or until `stop` is set; True if it was set."""
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)
