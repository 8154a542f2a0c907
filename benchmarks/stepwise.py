"""The one-task-per-step shape's task bodies (benchmarks/dags/onboarding_stepwise.py wires
them), used only by the latency benchmark's `stepwise` variant.

Each step is its own task: `enrich`, `score`, `decide` pass their records as XComs (JSON:
`risk.records`' `to_dict`/`from_dict`); the last task, `publish` (trigger rule `all_done`),
runs whatever the steps did and publishes the decision, or `review` with the first failed
step's error that `remember_failure` kept. The steps are the production ones (`risk.steps`),
and so is publishing (`risk.publishing`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_adapter.tasks import MAX_ERROR_CHARS, TaskInstance, app_of, model, publisher, signup_of, started_at
from risk.records import Decided, Enriched, Scored

# The step task ids, in order; the last task, `publish`, answers.
STAGES = ("enrich", "score", "decide")
PUBLISH_TASK = "publish"


def enrich(params: Mapping[str, Any] | None, ti: TaskInstance | None, run_id: str | None) -> dict[str, Any]:
    """First task: the enriched application."""
    from risk import steps

    signup = signup_of(params, run_id)
    return steps.enrich(signup, signup.get("accepted_at"), started_at(ti)).to_dict()


def score(enriched: dict[str, Any]) -> dict[str, Any]:
    """Score the enriched application with the current model."""
    from risk import steps

    return steps.score(Enriched.from_dict(enriched), model()).to_dict()


def decide(scored: dict[str, Any]) -> dict[str, Any]:
    """Apply the scoring model version's policy."""
    from risk import steps

    return steps.decide(Scored.from_dict(scored)).to_dict()


def first_failure(ti: TaskInstance) -> str:
    """Why no decision was made, from the first step without a result and the error
    `remember_failure` kept for it."""
    for stage in STAGES:
        if ti.xcom_pull(task_ids=stage) is None:
            error = ti.xcom_pull(task_ids=stage, key="error")
            return f"stage {stage!r} failed" + (f": {error}" if error else " (upstream failure)")
    return "the pipeline did not produce a decision"


def publish_decided(params: Mapping[str, Any] | None, ti: TaskInstance, run_id: str | None) -> str:
    """Last task (runs whatever the steps did): publish the decision, or `review` with the
    first failure; return the stream entry id.

    Raises `AirflowFailException` after answering `review`: the applicant has their answer,
    and the run still shows failed to the operators."""
    from risk import steps

    signup = signup_of(params, run_id)
    record = ti.xcom_pull(task_ids=STAGES[-1])
    decided = None if record is None else Decided.from_dict(record)
    failure = None if decided is not None else first_failure(ti)
    event = steps.decision_event(signup, decided, run_id, failure, signup.get("accepted_at"))
    entry_id = publisher().publish(event, app=app_of(signup))
    if failure is not None:
        raise AirflowFailException(f"answered with review because {failure}")
    return entry_id


def remember_failure(context: Mapping[str, Any]) -> None:
    """The steps' failure callback: keep the step's error as XCom "error", so
    `publish_decided` can say why the pipeline failed."""
    error = context.get("exception")
    context["ti"].xcom_push(key="error", value=f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS])
