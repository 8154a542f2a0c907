"""A rehearsal of the production topology: the realtime Airflow's control plane, two Celery
worker hosts, a listeners host, and Redis and PostgreSQL on a data host, each a Linux network
namespace on one switch (`testkit.multihost`), every component reaching the others by the
hosts' addresses.

Signups flow at 2 per second; once worker-a holds a running onboarding task, worker-a's link
goes down (every packet to and from it dropped) for 60 s while the flow goes on, then comes
back. What a user would notice is asserted: every signup is decided exactly once, with one DAG
run each, none dead-lettered; the task caught on the cut worker is decided anyway (elsewhere);
worker-a answers again after the heal and runs tasks again. How long the decision took after
the cut, and how long the worker took to rejoin, go to the end of the pytest output;
docs/rehearsal.md has the figures and `python benchmarks/multihost.py` the full form.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testkit.multihost import missing_tools, multihost_stack, rehearse_worker_cut
from testkit.netns import list_namespaces, unavailable_reason
from testkit.services import require
from tests.e2e.conftest import REPORT

REASON = unavailable_reason()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(REASON is not None, reason=f"network namespaces unavailable: {REASON}"),
]

SIGNUPS = 30
RATE = 2.0
CUT_S = 60.0


def test_a_worker_host_cut_mid_task_loses_nothing_and_decides_nothing_twice(
    tmp_path: Path, trained_model_dir: Path
) -> None:
    missing = missing_tools()
    require(not missing, ", ".join(missing))
    began = time.monotonic()
    with multihost_stack(tmp_path, trained_model_dir) as stack:
        namespaces = stack.net.namespaces()
        try:
            outcome = rehearse_worker_cut(stack, SIGNUPS, RATE, CUT_S)
        except BaseException:
            print(stack.tails(40))
            raise
        tails = stack.tails(30)
    assert not set(namespaces) & set(list_namespaces()), "the test's hosts outlived it"

    published = set(outcome.signups)
    decided = outcome.decided.count
    lost = sorted(published - set(decided))
    assert not lost, f"{len(lost)} of {len(published)} signups never decided, e.g. {lost[:3]}\n{tails}"
    twice = {e: n for e, n in decided.items() if n != 1}
    assert not twice, f"signups decided more than once: {twice}"
    assert set(decided) == published, f"decisions for signups nobody published: {set(decided) - published}"
    not_one_run = {e: outcome.runs.get(e, 0) for e in published if outcome.runs.get(e, 0) != 1}
    assert not not_one_run, f"signups without exactly one DAG run: {not_one_run}"
    assert outcome.dead_letters == 0
    # The caught task was really on the cut worker, and its signup got its one decision anyway.
    assert outcome.victim is not None and outcome.victim.hostname == outcome.worker
    assert outcome.victim_decided_at is not None
    # Both workers ran tasks, and the cut one came back and ran tasks again.
    per_host = outcome.tasks_per_host()
    assert per_host["worker-a"] > 0 and per_host["worker-b"] > 0, per_host
    assert outcome.rejoined_after_s is not None, f"{outcome.worker} never answered again after the heal\n{tails}"
    assert outcome.ran_after_heal > 0, f"{outcome.worker} answers but ran nothing after the heal\n{tails}"

    victim = outcome.victim
    tries = ", ".join(f"try {t.try_number} {t.state} on {t.hostname}" for t in outcome.victim_tries)
    after = outcome.decision_after_cut_s
    REPORT.append(
        f"multihost: {len(published)} signups, {sum(decided.values())} decisions, {len(lost)} lost, "
        f"{len(twice)} decided twice, {len(not_one_run)} without exactly one run; "
        f"tasks per worker {dict(per_host)}"
    )
    REPORT.append(
        f"multihost: {outcome.worker}'s link down {CUT_S:.0f} s while running {victim.event_id}: decided "
        f"{after:.1f} s after the cut ({tries}); {outcome.worker} answered again "
        f"{outcome.rejoined_after_s:.1f} s after the heal and ran {outcome.ran_after_heal} tasks after it"
    )
    REPORT.append(f"multihost test: {time.monotonic() - began:.0f} s in all")
