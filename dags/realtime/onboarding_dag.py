"""Onboarding: decide one applicant, end to end, within seconds.

Triggered by the signup listener through the REST API, one run per signup event, with the
validated event as typed params and a run id derived from the event id. One task, `decide`
(`onboarding.keys.DECISION_TASK_ID`), runs every step (`airflow_adapter.tasks.decide_and_publish`):
enrich, score with the current risk model, apply the policy, publish the decision.

Each task costs a scheduling round, a process and several API calls, while each step takes
milliseconds: one task per run is what lets the realtime instance answer in well under a
second and take a burst at several decisions per second (docs/benchmarks.md has the
figures, side by side with one task per step, `benchmarks/dags/onboarding_stepwise.py`). The steps stay visible:
each step's duration is in the task log, its timestamp in the decision event, and its
output in the task's XCom (the decided record holds the enriched application, the score,
reason codes, model version and policy).

The applicant is always answered: a step that still fails after the retries publishes
`review` with the reason (and the run is marked failed for the operators), and a run that
fails otherwise gets `review` from the DAG's failure callback. Publishing is idempotent per
event id, so a retried task cannot decide twice. This file only wires; the task body and
callbacks are `airflow_adapter.tasks`, the steps `risk.steps`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_adapter import tasks


@dag(
    dag_id=tasks.DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    # Runs beyond this wait queued, first come first served. Letting every run of a burst
    # start at once interleaves all of them, so nobody is answered until the burst is
    # through; a bounded set of active runs keeps the executor busy and answers in order.
    max_active_runs=16,
    tags=["realtime", "onboarding"],
    on_failure_callback=tasks.answer_failed_run,
    params=tasks.signup_params(),
    render_template_as_native_obj=False,
)
def onboarding() -> None:
    """Decide one applicant: enrich, score with the current risk model, apply the policy, publish."""

    @task(
        task_id=tasks.TASK_ID,
        retries=2,
        retry_delay=timedelta(seconds=1),
        execution_timeout=timedelta(seconds=tasks.TASK_TIMEOUT_S),
        on_failure_callback=tasks.answer_failed_task,
        # The decided record holds the applicant's values: it goes to the XCom (the audit
        # trail), not into the task log.
        show_return_value_in_logs=False,
        # One XCom, the record: the `dict` return type would otherwise push each of its keys
        # too (10 more execution-API writes per decision, 10 more rows for the archive).
        multiple_outputs=False,
    )
    def decide(params: dict[str, Any] | None = None, ti: Any = None, run_id: str | None = None) -> dict[str, Any]:
        return tasks.decide_and_publish(params, ti, run_id)

    decide()


onboarding()
