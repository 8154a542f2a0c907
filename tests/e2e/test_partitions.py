"""Network partitions between real hosts, under a steady flow of signups.

Redis (AOF), a throwaway PostgreSQL cluster, the realtime Airflow's api-server, its
scheduler and dag-processor (the tasks run there) and a listener each run on a host of
their own, a Linux network namespace (`testkit.netns`); the app publishes from another.
Two links are cut in turn, each for a short while, then healed:

- listener <-> Redis: the listener can neither read signups nor acknowledge them;
- task <-> Redis: the tasks decide but cannot publish the decision.

What a user would notice is asserted: every signup is decided exactly once, none is lost,
none is dead-lettered, one DAG run per signup, and no signup published during a cut is
answered before the heal (the cut was real). How long recovery took is reported, never
asserted: `benchmarks/partitions.py` measures it, docs/partitions.md has the figures.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.partitions import (
    CUTS,
    Flow,
    drain,
    measure,
    missing_tools,
    partitioned_stack,
    run_cut,
    runs_by_event,
    wait_until,
    warmed_up,
)
from testkit.netns import list_namespaces, unavailable_reason
from testkit.services import require
from tests.e2e.conftest import REPORT

REASON = unavailable_reason()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(REASON is not None, reason=f"network namespaces unavailable: {REASON}"),
]

CUT_S = 12.0
SETTLE_S = 3.0
RATE = 1.5
RECOVERY_S = 120.0  # the longest wait after a heal before the next cut (the figures say how long it took)
WAIT_S = 240.0  # the longest wait for the first or the last decisions; generous for a loaded CI machine


def test_partitions_lose_nothing_and_decide_nothing_twice(tmp_path: Path, trained_model_dir: Path) -> None:
    missing = missing_tools()
    require(not missing, ", ".join(missing))
    began = time.monotonic()
    with partitioned_stack(tmp_path, trained_model_dir) as stack:
        namespaces = stack.net.namespaces()
        flow = Flow(stack, RATE)
        flow.start()
        try:
            wait_until(lambda: warmed_up(flow), WAIT_S, "the first decisions")
            windows = [
                run_cut(stack, flow, CUTS[key], CUT_S, SETTLE_S, RECOVERY_S) for key in ("listener-redis", "task-redis")
            ]
            flow.stop_publishing()
            drain(flow, WAIT_S)
            dead = flow.dead_letters()
            runs = runs_by_event(stack.dag_runs())
        finally:
            flow.stop()
        tails = stack.tails(40)

    signups = flow.snapshot()
    for window in windows:
        published = [s for s in signups if window.begin <= s.published < window.end]
        assert len(published) >= 10, f"{window.key}: too few signups to tell anything ({len(published)})"
        # Neither cut lets a signup published during it be answered before the heal.
        during = [s for s in published if window.cut <= s.published < window.healed]
        answered = [s.event_id for s in during if s.decided and s.decided[0] < window.healed]
        assert during and not answered, f"{window.key}: decided during the cut: {answered}; the cut was not real"

    lost = [s.event_id for s in signups if not s.decided]
    assert not lost, f"{len(lost)} of {len(signups)} signups never decided, e.g. {lost[:3]}\n{tails}"
    twice = {s.event_id: len(s.decided) for s in signups if len(s.decided) > 1}
    assert not twice, f"signups decided more than once: {twice}"
    assert not dead, f"valid signups dead-lettered: {dead}"
    assert not flow.unknown_decisions, f"decisions for signups nobody published: {flow.unknown_decisions[:3]}"
    published_ids = {s.event_id for s in signups}
    not_one_run = {e: runs.get(e, 0) for e in published_ids if runs.get(e, 0) != 1}
    assert not not_one_run, f"signups without exactly one DAG run: {not_one_run}"
    assert not set(namespaces) & set(list_namespaces()), "the test's hosts outlived it"

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    for window in windows:
        r = measure(window, CUTS[window.key], flow, runs, dead)
        REPORT.append(
            f"partition {r.what}, cut {r.seconds:.0f} s: {r.signups} signups, {r.lost} lost, "
            f"{r.duplicate_decisions} decided twice; after the heal recovered in {seconds(r.recovered_after_s)}, "
            f"caught up in {seconds(r.caught_up_after_s)}; worst latency {seconds(r.worst_latency_s)}"
        )
    REPORT.append(f"partitions test: {time.monotonic() - began:.0f} s in all, {len(signups)} signups")
