"""The onboarding DAG's task bodies and callbacks, as plain functions.

The DAG files only wire these: `dags/realtime/onboarding_dag.py` runs every step in one task
(`decide_and_publish`); `benchmarks/dags/onboarding_stepwise.py`, used only by the latency
benchmark's `stepwise` variant, runs one task per step (`enrich`, `score`, `decide`,
`publish_decided`). Either way the applicant is always answered:

    a step fails for good        the task's `answer_failed_task` publishes `review` and why
                                 (stepwise: `remember_failure` keeps the step's error and
                                 `publish_decided` answers with it)
    the run fails otherwise      the DAG's `answer_failed_run` publishes `review`
    Redis is unavailable         `publish_retrying` keeps trying for PUBLISH_RETRY_S, then the
                                 attempt fails and Airflow retries the task

Every path goes through `publish`, which is idempotent per event id: a retried task or a
second callback never answers twice.

The model stack (scikit-learn, skops) is imported on first use, not with this module: the
dag-processor imports it each time it parses a DAG file, and the task processes already
have it (the realtime instance loads it before forking them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

import redis
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from onboarding import keys
from onboarding.decision import DecisionEvent, utc_now
from onboarding.logs import log_event
from onboarding.schema import signup_schema
from risk.errors import MissingParams, StageFailed
from risk.redis_client import redis_client
from risk.settings import RiskSettings

if TYPE_CHECKING:
    from risk.artifacts import LoadedModel

__all__ = [
    "DAG_ID",
    "PUBLISH_RETRY_S",
    "STAGES",
    "TASK_TIMEOUT_S",
    "MissingParams",
    "answer_failed_run",
    "answer_failed_task",
    "decide",
    "decide_and_publish",
    "enrich",
    "first_failure",
    "model",
    "publish",
    "publish_decided",
    "publish_retrying",
    "remember_failure",
    "score",
    "settings",
    "signup_params",
]

DAG_ID = keys.ONBOARDING_DAG_ID
# The stepwise DAG's step task ids, in order (its last task, `publish`, answers).
STAGES = keys.STEPWISE_TASKS[:-1]
# How long a task keeps trying to publish while Redis is unavailable (e.g. a failover)
# before the attempt fails; Airflow's retries then try again.
PUBLISH_RETRY_S = 150.0
# The single task's timeout: the steps take milliseconds; the rest of the budget is for
# publishing through a Redis failover.
TASK_TIMEOUT_S = PUBLISH_RETRY_S + 30.0
# Error texts are cut to this length before they go into an XCom or a decision event.
_MAX_ERROR_CHARS = 500

logger = logging.getLogger(__name__)


class TaskInstance(Protocol):
    """What the task bodies use of Airflow's task instance."""

    @property
    def start_date(self) -> datetime | None: ...

    def xcom_pull(self, task_ids: str, key: str = ...) -> Any: ...


def signup_params() -> dict[str, Param]:
    """The DAG's typed params, built from the signup event's JSON Schema (v1), plus
    `accepted_at`: Airflow rejects a trigger whose conf does not fit them."""
    fields = signup_schema(1)["properties"]

    def param(name: str) -> Param:
        spec = {k: v for k, v in fields[name].items() if k not in ("description", "format")}
        return Param(description=fields[name].get("description"), **spec)

    return {
        **{name: param(name) for name in ("schema_version", "event_id", "user_id", "occurred_at", "application")},
        "accepted_at": Param(None, type=["null", "string"], description="When the listener accepted the signup."),
    }


@cache
def settings() -> RiskSettings:
    """The pipeline's settings, read from the environment once per process."""
    return RiskSettings.from_env()


def model() -> LoadedModel:
    """The current risk model. The store is per process; it reloads only when `CURRENT`
    names another version, so a promotion takes effect without a restart."""
    from risk.artifacts import model_store

    return model_store(settings().model_dir).current()


def publish(event: DecisionEvent) -> str:
    """Append the decision to the decisions stream, once per event id; return its entry id
    (the first one's, when the event was published already)."""
    from risk import steps

    config = settings()
    return steps.publish(
        redis_client(config.streams.redis_url),
        config.streams.decisions_stream,
        event,
        config.decision_marker_ttl_s,
        config.decision_key_ttl_s,
    )


def publish_retrying(event: DecisionEvent, budget_s: float = PUBLISH_RETRY_S) -> str:
    """`publish`; while Redis is unavailable, keep trying (0.5, 1, 2 ... 15 s apart) for up to
    `budget_s`, then raise the last Redis error."""
    deadline = time.monotonic() + budget_s
    delay_s = 0.5
    while True:
        try:
            return publish(event)
        except redis.RedisError as err:
            if time.monotonic() + delay_s > deadline:
                raise
            log_event(
                logger,
                logging.WARNING,
                "onboarding: publishing failed (%s); again in %.1f s",
                err,
                delay_s,
                event_id=event.event_id,
                run_id=event.run_id,
            )
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 15.0)


def _signup(params: Mapping[str, Any] | None, run_id: str | None) -> dict[str, Any]:
    if params is None:
        raise MissingParams(run_id)
    return dict(params)


def _started_at(ti: TaskInstance | None) -> str:
    start_date = getattr(ti, "start_date", None)
    return start_date.isoformat() if start_date else utc_now()


def decide_and_publish(params: Mapping[str, Any] | None, ti: TaskInstance | None, run_id: str | None) -> dict[str, Any]:
    """The single task: enrich, score with the current model, apply the policy, publish the
    decision; return the decided record (the task's XCom, the audit trail).

    A failing step raises `StageFailed` naming it; Airflow retries the task, and once no retry
    is left `answer_failed_task` answers the applicant."""
    from risk import steps

    signup = _signup(params, run_id)
    accepted_at = signup.get("accepted_at")
    decided = steps.run_stages(signup, accepted_at, _started_at(ti), model)
    publish_retrying(steps.decision_event(signup, decided, run_id, None, accepted_at))
    return decided


def enrich(params: Mapping[str, Any] | None, ti: TaskInstance | None, run_id: str | None) -> dict[str, Any]:
    """Stepwise shape, first task: the enriched application."""
    from risk import steps

    signup = _signup(params, run_id)
    return steps.enrich(signup, signup.get("accepted_at"), _started_at(ti))


def score(enriched: dict[str, Any]) -> dict[str, Any]:
    """Stepwise shape: score the enriched application with the current model."""
    from risk import steps

    return steps.score(enriched, model())


def decide(scored: dict[str, Any]) -> dict[str, Any]:
    """Stepwise shape: apply the scoring model version's policy."""
    from risk import steps

    return steps.decide(scored)


def first_failure(ti: TaskInstance) -> str:
    """Stepwise shape: why no decision was made, from the first step without a result and the
    error `remember_failure` kept for it."""
    for stage in STAGES:
        if ti.xcom_pull(task_ids=stage) is None:
            error = ti.xcom_pull(task_ids=stage, key="error")
            return f"stage {stage!r} failed" + (f": {error}" if error else " (upstream failure)")
    return "the pipeline did not produce a decision"


def publish_decided(params: Mapping[str, Any] | None, ti: TaskInstance, run_id: str | None) -> str:
    """Stepwise shape, last task (runs whatever the steps did): publish the decision, or
    `review` with the first failure; return the stream entry id.

    Raises `AirflowFailException` after answering `review`: the applicant has their answer,
    and the run still shows failed to the operators."""
    from risk import steps

    signup = _signup(params, run_id)
    decided = ti.xcom_pull(task_ids=keys.DECIDE_TASK)
    failure = None if decided is not None else first_failure(ti)
    entry_id = publish(steps.decision_event(signup, decided, run_id, failure, signup.get("accepted_at")))
    if failure is not None:
        raise AirflowFailException(f"answered with review because {failure}")
    return entry_id


def remember_failure(context: Mapping[str, Any]) -> None:
    """Stepwise steps' failure callback: keep the step's error as XCom "error", so
    `publish_decided` can say why the pipeline failed."""
    error = context.get("exception")
    context["ti"].xcom_push(key="error", value=f"{type(error).__name__}: {error}"[:_MAX_ERROR_CHARS])


def answer_failed_task(context: Mapping[str, Any]) -> None:
    """The single task's failure callback (no retry left): answer the applicant with `review`
    and the reason. The run still shows failed to the operators."""
    from risk import steps

    dag_run = context.get("dag_run")
    conf = dict(getattr(dag_run, "conf", None) or context.get("params") or {})
    if "event_id" not in conf or "user_id" not in conf:
        return
    error = context.get("exception")
    reason = str(error) if isinstance(error, StageFailed) else f"{type(error).__name__}: {error}"
    event = steps.decision_event(
        conf, None, getattr(dag_run, "run_id", None), reason[:_MAX_ERROR_CHARS], conf.get("accepted_at")
    )
    publish(event)


def answer_failed_run(context: Mapping[str, Any]) -> None:
    """The DAG's failure callback, a backstop when the run fails without having answered (e.g.
    Redis was down for all of the retries, or the run was failed by hand): publish `review`
    now. Publishing is idempotent, so this adds nothing when the run did answer."""
    from risk import steps

    dag_run = context.get("dag_run")
    conf = dict(getattr(dag_run, "conf", None) or {})
    if "event_id" not in conf or "user_id" not in conf:
        return
    reason = context.get("reason") or "the onboarding run failed"
    event = steps.decision_event(conf, None, getattr(dag_run, "run_id", None), str(reason), conf.get("accepted_at"))
    publish(event)
