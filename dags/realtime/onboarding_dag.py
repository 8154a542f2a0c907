"""Onboarding: decide one applicant, end to end, within seconds.

Triggered by the signup listener through the REST API, one run per signup event, with the
validated event as typed params and a run id derived from the event id. One task, `decide`,
runs every step (`risk.pipeline.decide_and_publish`): enrich, score with the current risk
model, apply the policy, publish the decision.

Each task costs a scheduling round, a process and several API calls, while each step takes
milliseconds: one task per run is what lets the realtime instance answer in about a
second and take a burst at several decisions per second (docs/benchmarks.md compares it
with one task per step, `benchmarks/dags/onboarding_stepwise.py`). The steps stay visible:
each step's duration is in the task log, its timestamp in the decision event, and its
output in the task's XCom (the decided record holds the enriched application, the score,
reason codes, model version and policy).

The applicant is always answered: a step that still fails after the retries publishes
`review` with the reason (and the run is marked failed for the operators), and a run that
fails otherwise gets `review` from the DAG's failure callback. Publishing is idempotent per
event id, so a retried task cannot decide twice. This file only wires; the logic is in
`risk.pipeline`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import dag, task

from risk import pipeline


@dag(
    dag_id=pipeline.DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    # Runs beyond this wait queued, first come first served. Letting every run of a burst
    # start at once interleaves all of them, so nobody is answered until the burst is
    # through; a bounded set of active runs keeps the executor busy and answers in order.
    max_active_runs=16,
    tags=["realtime", "onboarding"],
    on_failure_callback=pipeline.answer_failed_run,
    params=pipeline.signup_params(),
    render_template_as_native_obj=False,
)
def onboarding() -> None:
    """Decide one applicant: enrich, score with the current risk model, apply the policy, publish."""

    @task(
        retries=2,
        retry_delay=timedelta(seconds=1),
        execution_timeout=timedelta(seconds=pipeline.TASK_TIMEOUT_S),
        on_failure_callback=pipeline.answer_failed_task,
        # The decided record holds the applicant's values: it goes to the XCom (the audit
        # trail), not into the task log.
        show_return_value_in_logs=False,
        # One XCom, the record: the `dict` return type would otherwise push each of its keys
        # too (10 more execution-API writes per decision, 10 more rows for the archive).
        multiple_outputs=False,
    )
    def decide(params: dict[str, Any] | None = None, ti: Any = None, run_id: str | None = None) -> dict[str, Any]:
        return pipeline.decide_and_publish(params, ti, run_id)

    decide()


onboarding()
