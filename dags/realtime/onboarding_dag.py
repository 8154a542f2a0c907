"""Onboarding: decide one applicant, end to end, within seconds.

Triggered by the signup listener through the REST API, one run per signup event, with the
validated event as typed params and a run id derived from the event id. The steps live in
`risk.steps`; this file only wires them, in one of two shapes (ONBOARDING_DAG_SHAPE, read
when the file is parsed):

    single (default)  decide                                  one task runs every step
    stepwise          enrich -> score -> decide -> publish    one task per step

Each task costs a scheduling round, a process and several API calls, while each step takes
milliseconds: one task per run is what lets the realtime instance answer in about a
second and take a burst at several decisions per second (docs/benchmarks.md measures
both shapes). The single task keeps the steps visible: each step's duration is in the task
log, its timestamp in the decision event, and its output in the task's XCom (the decided
record holds the enriched application, the score, reason codes, model version and policy).
`stepwise` is for debugging a step in the UI, at about a quarter of the throughput.

Either way the applicant is always answered: a step that still fails after the retries
publishes `review` with the reason (and the run is marked failed for the operators), and
a run that fails otherwise gets `review` from the DAG's failure callback. Publishing is
idempotent per event id, so a retried task cannot decide twice.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, TriggerRule, dag, task
from airflow.sdk.exceptions import AirflowFailException

from onboarding.schema import signup_schema

_EVENT = signup_schema(1)["properties"]
STAGES = ("enrich", "score", "decide")
SHAPE = os.environ.get("ONBOARDING_DAG_SHAPE", "single")
if SHAPE not in ("single", "stepwise"):
    raise ValueError(f"ONBOARDING_DAG_SHAPE={SHAPE!r} must be single or stepwise")
# How long the task keeps trying to publish while Redis is unavailable (e.g. a failover)
# before the attempt fails; Airflow's retries then try again.
PUBLISH_RETRY_S = 150.0
log = logging.getLogger("onboarding")


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


def _publish(event: Any) -> str:
    from risk import steps
    from risk.redis_client import redis_client

    settings = _settings()
    return steps.publish(
        redis_client(settings.streams.redis_url),
        settings.streams.decisions_stream,
        event,
        settings.decision_marker_ttl_s,
    )


def _publish_retrying(event: Any, budget_s: float = PUBLISH_RETRY_S) -> str:
    """Publish; while Redis is unavailable, keep trying (0.5, 1, 2 ... 15 s apart)."""
    import redis

    deadline = time.monotonic() + budget_s
    delay = 0.5
    while True:
        try:
            return _publish(event)
        except redis.RedisError as err:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("onboarding: publishing %s failed (%s); again in %.1f s", event.event_id, err, delay)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


def _answer_failed_task(context: Any) -> None:
    """The single task failed for good (no retry left): answer the applicant with `review`
    and the reason. The run still shows failed to the operators."""
    from risk import steps

    dag_run = context.get("dag_run")
    conf = dict(getattr(dag_run, "conf", None) or context.get("params") or {})
    if "event_id" not in conf or "user_id" not in conf:
        return
    error = context.get("exception")
    reason = str(error) if isinstance(error, steps.StageFailed) else f"{type(error).__name__}: {error}"
    event = steps.decision_event(conf, None, getattr(dag_run, "run_id", None), reason[:500], conf.get("accepted_at"))
    _publish(event)


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
    "show_return_value_in_logs": False,
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
    if SHAPE == "single":
        _single_task()
    else:
        _stepwise()


def _single_task() -> None:
    @task(
        retries=2,
        retry_delay=timedelta(seconds=1),
        # Steps take milliseconds; the rest of the budget is for publishing through a Redis
        # failover (PUBLISH_RETRY_S).
        execution_timeout=timedelta(seconds=PUBLISH_RETRY_S + 30),
        on_failure_callback=_answer_failed_task,
        # The decided record holds the applicant's values: it goes to the XCom (the audit
        # trail), not into the task log.
        show_return_value_in_logs=False,
    )
    def decide(params: dict[str, Any] | None = None, ti: Any = None, run_id: str | None = None) -> dict[str, Any]:
        from onboarding.decision import utc_now
        from risk import steps

        assert params is not None
        started = ti.start_date.isoformat() if getattr(ti, "start_date", None) else utc_now()
        decided = steps.run_stages(params, params.get("accepted_at"), started, _model)
        _publish_retrying(steps.decision_event(params, decided, run_id, None, params.get("accepted_at")))
        return decided

    decide()


def _stepwise() -> None:

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
