"""The CI subset of the fault matrix (benchmarks/faults.py, docs/reliability.md): the whole
local stack (`onboarding-stack up`, SQLite metadata, its own Redis with AOF) under steady
load, and kill -9 of a listener, the realtime scheduler and the realtime api-server in turn.

What a user would notice is asserted, not timings (those are the benchmark's figures):
every part is healthy again without a hand (`onboarding-stack status` exits 0) and the
killed part runs again as a new process; every signup is decided exactly once, by one DAG
run, none lost, none dead-lettered; `down` leaves no process of the stack behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.faults import FaultMatrix, FaultStack, MatrixSettings, select_cells, stack_env, summarize
from testkit.services import require
from tests.e2e.conftest import REPORT

pytestmark = pytest.mark.e2e

CELLS = select_cells("listener-1,realtime-scheduler,realtime-api-server")
# Correctness under load, not capacity: a rate every CI machine sustains on SQLite.
SETTINGS = MatrixSettings(rate=0.5, fault_s=15, pre_s=3, recovery_timeout_s=180, drain_timeout_s=180)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path) -> Iterator[FaultMatrix]:
    require(shutil.which("redis-server") is not None, "redis-server (the stack starts its own)")
    base = tmp_path_factory.mktemp("faults")
    model_dir = base / "models"
    shutil.copytree(trained_model_dir, model_dir)
    stack = FaultStack(stack_env(base / "home", model_dir, "sqlite", listeners=2))
    matrix = None
    try:
        stack.up()
        matrix = FaultMatrix(stack, SETTINGS)
        matrix.warm_up(10)
        yield matrix
    finally:
        if matrix is not None:
            matrix.load.stop()
        stack.down()


@pytest.mark.parametrize("cell", CELLS, ids=[c.name for c in CELLS])
def test_kill_9_heals_without_a_hand(matrix: FaultMatrix, cell) -> None:
    run = matrix.run_cell(cell)
    assert run.killed_pid is not None, f"{cell.service} was not running before the fault"
    assert run.recovery_s is not None, f"not healthy again after kill -9 of {cell.service}: {run.unhealthy_at_end}"
    assert run.status_exit == 0
    assert run.restarted_pid not in (None, run.killed_pid), f"{cell.service} was not restarted"
    REPORT.append(f"fault matrix: kill -9 {cell.service}: every part healthy again after {run.recovery_s:.1f} s")


def test_every_signup_decided_exactly_once(matrix: FaultMatrix) -> None:
    assert len(matrix.runs) == len(CELLS), "a fault cell did not run"
    tally = matrix.finish()
    rows = summarize(matrix, tally)
    for row in rows:
        assert row["published"] > 0, row["cell"]
        assert row["lost"] == 0, f"{row['cell']}: lost {row['lost_ids']}"
        assert row["dead_lettered"] == 0, row["cell"]
        assert row["duplicate_runs"] == 0, row["cell"]
        assert row["duplicate_decisions"] == 0, row["cell"]
        REPORT.append(
            f"fault matrix: {row['cell']}: {row['published']} signups, {row['decided']} decided once, "
            f"worst latency {row['worst_latency_s']} s"
        )


def test_down_leaves_no_process_of_the_stack(matrix: FaultMatrix) -> None:
    left = matrix.stack.down()
    assert left == [], f"still running after onboarding-stack down: {left}"
