"""Onboarding: decide one applicant, end to end, within seconds.

Triggered by the signup listener through the REST API, one run per signup event, with the
validated event as typed params and a run id derived from the event id. The steps live in
`risk.steps`; this file only wires them:

    enrich -> score -> decide -> publish

`publish` runs whatever happened upstream (trigger rule `all_done`): it publishes the
decision, or `review` with the reason the pipeline failed, so the app is never left
waiting; the run is then still marked failed for the operators. Publishing is idempotent
per event id, so a retried task cannot decide twice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, TriggerRule, dag, task
from airflow.sdk.exceptions import AirflowFailException

from onboarding.schema import signup_schema

_EVENT = signup_schema(1)["properties"]
STAGES = ("enrich", "score", "decide")


def _param(name: str) -> Param:
    spec = {k: v for k, v in _EVENT[name].items() if k not in ("description", "format")}
    return Param(description=_EVENT[name].get("description"), **spec)


def _remember_failure(context: Any) -> None:
    """Keep the stage's error as an XCom so `publish` can say why the pipeline failed."""
    error = context.get("exception")
    context["ti"].xcom_push(key="error", value=f"{type(error).__name__}: {error}"[:500])


def _settings() -> Any:
    from risk.settings import RiskSettings

    return RiskSettings.from_env()


def _model() -> Any:
    from risk.artifacts import model_store

    return model_store(_settings().model_dir).current()


def _answer_failed_run(context: Any) -> None:
    """Backstop when the run fails without `publish` having answered (e.g. Redis was down for
    all of publish's retries, or the run was failed by hand): publish `review` now. Publishing
    is idempotent, so this adds nothing when `publish` did answer."""
    from risk import steps
    from risk.redis_client import redis_client

    dag_run = context.get("dag_run")
    conf = dict(getattr(dag_run, "conf", None) or {})
    if "event_id" not in conf or "user_id" not in conf:
        return
    settings = _settings()
    reason = context.get("reason") or "the onboarding run failed"
    event = steps.decision_event(conf, None, getattr(dag_run, "run_id", None), str(reason), conf.get("accepted_at"))
    steps.publish(
        redis_client(settings.streams.redis_url),
        settings.streams.decisions_stream,
        event,
        settings.decision_marker_ttl_s,
    )


_STAGE_DEFAULTS: dict[str, Any] = {
    # Later stages outrank earlier ones, so under a burst the scheduler finishes the runs
    # it has started before it starts new ones. Airflow's default ("downstream") does the
    # opposite: every run's enrich first, then every score, and nobody gets an answer
    # until the whole burst is through.
    "weight_rule": "upstream",
    "retries": 2,
    "retry_delay": timedelta(seconds=1),
    "execution_timeout": timedelta(seconds=30),
    "on_failure_callback": _remember_failure,
}


@dag(
    dag_id="onboarding",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    # Runs beyond this wait queued, first come first served. Letting every run of a burst
    # start at once interleaves all of them, so nobody is answered until the burst is
    # through; a bounded set of active runs keeps the executor busy and answers in order.
    max_active_runs=16,
    tags=["realtime", "onboarding"],
    on_failure_callback=_answer_failed_run,
    params={
        "schema_version": _param("schema_version"),
        "event_id": _param("event_id"),
        "user_id": _param("user_id"),
        "occurred_at": _param("occurred_at"),
        "application": _param("application"),
        "accepted_at": Param(None, type=["null", "string"], description="When the listener accepted the signup."),
    },
    render_template_as_native_obj=False,
)
def onboarding() -> None:
    """Decide one applicant: enrich, score with the current risk model, apply the policy, publish."""

    @task(**_STAGE_DEFAULTS)
    def enrich(params: dict[str, Any] | None = None, ti: Any = None) -> dict[str, Any]:
        from onboarding.decision import utc_now
        from risk import steps

        assert params is not None
        started = ti.start_date.isoformat() if getattr(ti, "start_date", None) else utc_now()
        return steps.enrich(params, params.get("accepted_at"), started)

    @task(**_STAGE_DEFAULTS)
    def score(enriched: dict[str, Any]) -> dict[str, Any]:
        from risk import steps

        return steps.score(enriched, _model())

    @task(**_STAGE_DEFAULTS)
    def decide(scored: dict[str, Any]) -> dict[str, Any]:
        from risk import steps

        return steps.decide(scored)

    # Redis may fail over: keep trying for several minutes (1, 2, 4 ... 60 s) before the
    # run gives up and the failure callback tries once more.
    @task(
        trigger_rule=TriggerRule.ALL_DONE,
        retries=10,
        retry_delay=timedelta(seconds=1),
        retry_exponential_backoff=2.0,
        max_retry_delay=timedelta(seconds=60),
        weight_rule="upstream",
    )
    def publish(params: dict[str, Any] | None = None, ti: Any = None, run_id: str | None = None) -> str:
        from risk import steps
        from risk.redis_client import redis_client

        assert params is not None
        decided = ti.xcom_pull(task_ids="decide")
        failure = None
        if decided is None:
            failure = _first_failure(ti)
        settings = _settings()
        event = steps.decision_event(params, decided, run_id, failure, params.get("accepted_at"))
        entry_id = steps.publish(
            redis_client(settings.streams.redis_url),
            settings.streams.decisions_stream,
            event,
            settings.decision_marker_ttl_s,
        )
        if failure is not None:
            # The applicant has their answer; the run still shows red to the operators.
            raise AirflowFailException(f"answered with review because {failure}")
        return entry_id

    def _first_failure(ti: Any) -> str:
        for stage in STAGES:
            if ti.xcom_pull(task_ids=stage) is None:
                error = ti.xcom_pull(task_ids=stage, key="error")
                return f"stage {stage!r} failed" + (f": {error}" if error else " (upstream failure)")
        return "the pipeline did not produce a decision"

    decided = decide(score(enrich()))
    decided >> publish()


onboarding()
