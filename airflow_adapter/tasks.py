"""The onboarding DAG's task body and callbacks (dags/realtime/onboarding_dag.py wires them).

One task, `keys.DECISION_TASK_ID`, runs every step (`risk.steps.run_stages`) and publishes
the decision (`risk.publishing`); its return value, the decided record as JSON, is the XCom
the archive keeps as the audit trail. The applicant is always answered:

    a step fails for good        the task's `answer_failed_task` publishes `review` and why
    the model version in service at once `review` with the integrity error (no retry: the
    fails its integrity check     files will not heal), and the task fails for the operators
    the run fails otherwise      the DAG's `answer_failed_run` publishes `review`
    Redis is unavailable         the task keeps trying for `PUBLISH_RETRY_S`, then the
                                 attempt fails and Airflow retries the task

Publishing is idempotent per event id: a retried task or a second callback never answers twice.

The model stack (scikit-learn, skops) is imported on first use, not with this module: the
dag-processor imports it each time it parses a DAG file, and the task processes already
have it (the realtime instance loads it before forking them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from airflow.sdk import Param

from onboarding import keys
from onboarding.decision import utc_now
from onboarding.schema import signup_schema
from onboarding.settings import APP_NAME
from risk.errors import MissingParams, StageFailed
from risk.publishing import PUBLISH_RETRY_S, Publisher
from risk.settings import RiskSettings

if TYPE_CHECKING:
    from risk.artifacts import LoadedModel
    from risk.records import Decided

__all__ = [
    "DAG_ID",
    "PUBLISH_RETRY_S",
    "TASK_ID",
    "TASK_TIMEOUT_S",
    "MissingParams",
    "TaskInstance",
    "answer_failed_run",
    "answer_failed_task",
    "app_of",
    "decide_and_publish",
    "model",
    "publisher",
    "record",
    "settings",
    "shadow",
    "signup_of",
    "signup_params",
    "started_at",
]

DAG_ID = keys.ONBOARDING_DAG_ID
TASK_ID = keys.DECISION_TASK_ID
# The single task's timeout: the steps take milliseconds; the rest of the budget is for
# publishing through a Redis failover.
TASK_TIMEOUT_S = PUBLISH_RETRY_S + 30.0
# Error texts are cut to this length before they go into an XCom or a decision event.
MAX_ERROR_CHARS = 500

logger = logging.getLogger(__name__)


class TaskInstance(Protocol):
    """What the task bodies use of Airflow's task instance."""

    @property
    def start_date(self) -> datetime | None: ...

    def xcom_pull(self, task_ids: str, key: str = ...) -> Any: ...


def signup_params() -> dict[str, Param]:
    """The DAG's typed params, built from the signup event's JSON Schema (v1), plus
    `accepted_at` and `app`: Airflow rejects a trigger whose conf does not fit them."""
    fields = signup_schema(1, settings().streams.dataset)["properties"]

    def param(name: str) -> Param:
        spec = {k: v for k, v in fields[name].items() if k not in ("description", "format")}
        return Param(description=fields[name].get("description"), **spec)

    return {
        **{name: param(name) for name in ("schema_version", "event_id", "user_id", "occurred_at", "application")},
        "accepted_at": Param(None, type=["null", "string"], description="When the listener accepted the signup."),
        # Set by the listener only for a signup an app's intake forwarded (the entry's `app`,
        # written by the forwarding function, never read from the event id); absent (None) for
        # one from the shared stream. The publish step also appends the decision to that app's feed.
        "app": Param(
            None,
            type=["null", "string"],
            pattern=f"^{APP_NAME.pattern}$",
            description="The app whose intake the signup came from; its decision feed gets a copy.",
        ),
    }


def app_of(conf: Mapping[str, Any]) -> str | None:
    """The app a run's signup came from (its `app` param), or None: a run from the shared
    stream, or one triggered before the param existed."""
    app = conf.get("app")
    return app if isinstance(app, str) and APP_NAME.fullmatch(app) else None


@cache
def settings() -> RiskSettings:
    """The pipeline's settings, read from the environment once per process."""
    return RiskSettings.from_env()


def publisher() -> Publisher:
    """The task's publisher (its Redis client is shared per process)."""
    return Publisher.from_settings(settings())


def model() -> LoadedModel:
    """The current risk model. The store is per process; it reloads only when `CURRENT`
    names another version, so a promotion takes effect without a restart."""
    from risk.artifacts import model_store

    return model_store(settings().model_dir, settings().streams.dataset, settings().verifier()).current()


def signup_of(params: Mapping[str, Any] | None, run_id: str | None) -> dict[str, Any]:
    """The run's signup event (its params), or `MissingParams` for a run without them."""
    if params is None:
        raise MissingParams(run_id)
    return dict(params)


def started_at(ti: TaskInstance | None) -> str:
    """When the task started (RFC 3339), or now."""
    start_date = getattr(ti, "start_date", None)
    return start_date.isoformat() if start_date else utc_now()


def decide_and_publish(params: Mapping[str, Any] | None, ti: TaskInstance | None, run_id: str | None) -> dict[str, Any]:
    """The single task: enrich, score with the current model, apply the policy, publish the
    decision; return the decided record as JSON (the task's XCom, the audit trail).

    A failing step raises `StageFailed` naming it; Airflow retries the task, and once no retry
    is left `answer_failed_task` answers the applicant."""
    from risk import steps
    from risk.integrity import ModelIntegrityError

    signup = signup_of(params, run_id)
    accepted_at = signup.get("accepted_at")
    used: list[LoadedModel] = []

    def scoring_model() -> LoadedModel:
        used.append(model())  # the version that scored: its hash goes into the record
        return used[-1]

    try:
        decided = steps.run_stages(signup, accepted_at, started_at(ti), scoring_model)
    except StageFailed as err:
        if not isinstance(err.__cause__, ModelIntegrityError):
            raise
        # A refused model stays refused: answer now, then fail the task without retries.
        from airflow.sdk.exceptions import AirflowFailException

        reason = str(err.__cause__)[:MAX_ERROR_CHARS]
        logger.error("onboarding: %s", reason)
        event = steps.decision_event(signup, None, run_id, reason, accepted_at)
        publisher().publish_retrying(event, record(signup, run_id, None, None, reason), app_of(signup))
        raise AirflowFailException(reason) from err
    event = steps.decision_event(signup, decided, run_id, None, accepted_at)
    publisher().publish_retrying(
        event, record(signup, run_id, decided, used[-1], shadow=shadow(decided)), app_of(signup)
    )
    return decided.to_dict()


def shadow(decided: Decided) -> dict[str, Any] | None:
    """The challenger's score and decision for the same application (SHADOW_MODEL_VERSION;
    None when none is set): recorded beside the champion's, never published. A shadow that
    fails is recorded with its error; the champion's decision goes out regardless."""
    version = settings().shadow_model_version
    if version is None:
        return None
    import time

    from risk.artifacts import pinned_model
    from risk.model import probability_bad

    t0 = time.perf_counter()
    try:
        challenger = pinned_model(settings().model_dir, version, settings().streams.dataset, settings().verifier())
        score = round(probability_bad(challenger.scorer, decided.application), 6)
        decision = challenger.policy.decide(score).value
    except Exception as err:  # never the applicant's problem
        logger.warning("onboarding: shadow model %s failed: %s", version, err)
        return {"version": version, "error": f"{type(err).__name__}: {err}"[:MAX_ERROR_CHARS]}
    return {
        "version": version,
        "content_sha256": challenger.content_hash,
        "score": score,
        "decision": decision,
        "policy": challenger.policy.to_dict(),
        "seconds": round(time.perf_counter() - t0, 6),
    }


def record(
    signup: Mapping[str, Any],
    run_id: str | None,
    decided: Decided | None,
    scored_by: LoadedModel | None,
    error: str | None = None,
    shadow: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The decision record published with the decision (risk/evidence.py)."""
    from risk.evidence import code_version, decision_record

    return decision_record(signup, run_id, decided, scored_by, code_version(settings().git_sha), error, shadow)


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
    run_id = getattr(dag_run, "run_id", None)
    event = steps.decision_event(conf, None, run_id, reason[:MAX_ERROR_CHARS], conf.get("accepted_at"))
    publisher().publish(event, record(conf, run_id, None, None, event.error), app_of(conf))


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
    run_id = getattr(dag_run, "run_id", None)
    event = steps.decision_event(conf, None, run_id, str(reason), conf.get("accepted_at"))
    publisher().publish(event, record(conf, run_id, None, None, event.error), app_of(conf))
