"""Onboarding in one task per step: enrich -> score -> decide -> publish.

Used only by the latency benchmark's `stepwise` variant (benchmarks/latency.py), which
points the realtime instance's DAG folder here instead of dags/realtime: the same dag id,
params and answers as dags/realtime/onboarding_dag.py, i.e. the DAG as it was before its
steps were folded into one task. It shows what a task per step costs (docs/benchmarks.md):
about a quarter of the throughput. A step is retried on its own; `publish` runs whatever the
steps did and answers `review` with the first step's error when there is no decision.
This file only wires; the task bodies are `benchmarks.stepwise`, the DAG's params and
failure callback `airflow_adapter.tasks`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import TriggerRule, dag, task

from airflow_adapter import tasks
from benchmarks import stepwise

STEP: dict[str, Any] = {
    "show_return_value_in_logs": False,
    # Later stages outrank earlier ones, so under a burst the scheduler finishes the runs
    # it has started before it starts new ones. Airflow's default ("downstream") does the
    # opposite: every run's enrich first, then every score, and nobody gets an answer
    # until the whole burst is through.
    "weight_rule": "upstream",
    "retries": 2,
    "retry_delay": timedelta(seconds=1),
    "execution_timeout": timedelta(seconds=30),
    "on_failure_callback": stepwise.remember_failure,
}


@dag(
    dag_id=tasks.DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=16,
    tags=["realtime", "onboarding"],
    on_failure_callback=tasks.answer_failed_run,
    params=tasks.signup_params(),
    render_template_as_native_obj=False,
)
def onboarding() -> None:
    """Decide one applicant, one task per step: enrich, score with the current risk model,
    apply the policy, publish."""

    @task(**STEP)
    def enrich(params: dict[str, Any] | None = None, ti: Any = None, run_id: str | None = None) -> dict[str, Any]:
        return stepwise.enrich(params, ti, run_id)

    @task(**STEP)
    def score(enriched: dict[str, Any]) -> dict[str, Any]:
        return stepwise.score(enriched)

    @task(**STEP)
    def decide(scored: dict[str, Any]) -> dict[str, Any]:
        return stepwise.decide(scored)

    # Redis may fail over: keep trying for several minutes (1, 2, 4 ... 60 s) before the
    # run gives up and the DAG's failure callback tries once more.
    @task(
        trigger_rule=TriggerRule.ALL_DONE,
        retries=10,
        retry_delay=timedelta(seconds=1),
        retry_exponential_backoff=2.0,
        max_retry_delay=timedelta(seconds=60),
        weight_rule="upstream",
    )
    def publish(params: dict[str, Any] | None = None, ti: Any = None, run_id: str | None = None) -> str:
        return stepwise.publish_decided(params, ti, run_id)

    decide(score(enrich())) >> publish()


onboarding()
