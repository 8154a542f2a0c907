"""A pytest plugin: SIGTERM ends the session the way Ctrl-C does.

A CI time-out, `timeout`, or an operator stopping a run sends SIGTERM; pytest's default is
to die on it at once, so no fixture's teardown runs and the real services the tests started
(Airflow api-servers with their uvicorn workers, schedulers, listeners) are left running.
Raised as KeyboardInterrupt instead, pytest unwinds: every fixture stops what it started,
whole process groups (stack.processes.ManagedProcess).
"""

from __future__ import annotations

import signal
from types import FrameType

import pytest


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}: tearing down the services the tests started")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
