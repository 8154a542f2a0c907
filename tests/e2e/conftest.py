"""A real realtime Airflow (api-server, scheduler, dag-processor) and real listener processes,
started by the test session, on SQLite and on PostgreSQL metadata (`testkit.realtime`)."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.realtime import RealtimeStack, running_realtime

LATENCIES: dict[str, list[float]] = {}
REPORT: list[str] = []
# tests/e2e/test_containers.py: image sizes, build and start times, the decision.
CONTAINERS: list[str] = []


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def realtime_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path
) -> Iterator[RealtimeStack]:
    """One realtime instance and one listener, per metadata database."""
    db = request.param
    home = tmp_path_factory.mktemp(f"realtime-{db}")
    with running_realtime(db, home, trained_model_dir, request.session, "e2e") as stack:
        stack.start_listener()
        yield stack


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if LATENCIES:
        terminalreporter.section("signup -> decision latency (listener accepted -> decision published)")
        for db, values in LATENCIES.items():
            terminalreporter.write_line(
                f"{db:9} n={len(values)}  median {statistics.median(values):.2f} s  max {max(values):.2f} s"
            )
    if REPORT:
        terminalreporter.section("delivery guarantees under failure")
        for line in REPORT:
            terminalreporter.write_line(line)
    if CONTAINERS:
        terminalreporter.section("container e2e (both images built here, run with podman)")
        for line in CONTAINERS:
            terminalreporter.write_line(line)
