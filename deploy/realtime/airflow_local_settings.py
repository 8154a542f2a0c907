"""Realtime instance: faster Param checks, a warm execution API, the audit log off the event loop, warm task forks.

Airflow imports this module once in every process of the instance (`airflow.settings`
finds it in `$AIRFLOW_HOME/config/`, where stack/instance.py copies it). It does five things:

1. Every process: Param validation checks each distinct schema against the JSON Schema
   metaschema once instead of on every call (onboarding/schema_checks.py), unless
   ONBOARDING_MEMOIZE_PARAM_SCHEMAS is false. The check was a third of the API server's
   trigger call (docs/benchmarks.md).
2. Every process: an api-server worker builds the execution API's versioned routes when it
   starts instead of on its first request (onboarding/execution_api_warmup.py), unless
   ONBOARDING_WARM_EXECUTION_API is false: the first task start after a start or restart
   took 9 s and stalled every other request of that worker meanwhile.
3. Every process: the REST API's audit-log dependency commits in a worker thread instead of
   blocking the api-server's event loop (onboarding/action_log_thread.py), unless
   ONBOARDING_ACTION_LOG_IN_THREAD is false: on SQLite it held every request of a worker
   for SQLite's 5 s busy timeout whenever it met another request's write.
4. Every process: `now()` in SQL on SQLite is rendered to the millisecond
   (onboarding/sqlite_now.py), unless ONBOARDING_SQLITE_NOW_MS is false: SQLite's
   `CURRENT_TIMESTAMP` has whole seconds, so the scheduler saw every triggered run as not
   yet due until the next full second. Nothing changes on PostgreSQL.
5. The processes that fork the task processes (`forks_task_processes`): LocalExecutor
   forks its workers from the scheduler; on CeleryExecutor the `airflow celery worker`
   process forks its pool, and each task process is forked from those. Importing
   scikit-learn and loading the model here, once, means every onboarding task starts with
   both already in memory instead of paying ~1.5 s of imports per task (far more when
   many tasks start at once).

Airflow copies every name of this module not starting with `__` into `airflow.settings` (and
treats cluster-policy names as policies); `__all__` is empty so that none of ours can shadow its own.
"""

import logging
import sys
from collections.abc import Sequence

__all__: list[str] = []

_log = logging.getLogger("onboarding")


def forks_task_processes(argv: Sequence[str]) -> bool:
    """Whether this process is `airflow scheduler` or `airflow celery worker`, judged by its argv.

    Airflow 3.3 has no hook that runs in exactly these processes before they fork: the
    listener lifecycle hook `on_starting` fires when the scheduler's Job is created (before
    its executor forks) but needs a plugin registered in each instance, and a Celery worker
    is not a Job. So the command line decides. The forms Airflow 3.3 produces here
    (tests/unit/test_schema_checks.py checks each):
      `airflow scheduler ...`            ['/path/bin/airflow', 'scheduler', ...]
      `python -m airflow scheduler ...`  ['-m', 'scheduler', ...]: this module is imported
                                         while `-m` still locates the package (how
                                         stack/instance.py starts it)
      `airflow celery worker ...`        ['/path/bin/airflow', 'celery', 'worker', ...]
    A `--help` is not a start. Spawned children of these processes would inherit their
    argv, but on Linux the executors fork (the children never import this module again).
    """
    args = list(argv[1:])
    if "-h" in args or "--help" in args:
        return False
    return args[:1] == ["scheduler"] or args[:2] == ["celery", "worker"]


# Adjustments of Airflow itself (points 1-4 above), each an `onboarding` module with an
# ENV_VAR that switches it off and an `install()`. One that cannot be imported leaves Airflow
# as it is (slower, not broken); a switch that is not a boolean stops the process with a
# message naming it.
ADJUSTMENTS = (
    ("onboarding.schema_checks", "the Param schema-check cache"),
    ("onboarding.execution_api_warmup", "the execution API warm-up"),
    ("onboarding.action_log_thread", "the audit-log commit fix"),
    ("onboarding.sqlite_now", "the SQLite now() fix"),
)


def _adjust_airflow() -> None:
    import importlib

    from onboarding.env import switch

    for name, what in ADJUSTMENTS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            _log.exception("onboarding: could not import %s", what)
            continue
        if switch(module.ENV_VAR):  # read once, here
            module.install()


def _warm_up() -> None:
    warmed = []
    try:
        from onboarding.schema import signup_schema
        from risk import pipeline, steps  # noqa: F401  (what the DAG's task runs)
        from risk.artifacts import model_store
        from risk.redis_client import redis_client
        from risk.settings import RiskSettings

        signup_schema(1)  # the DAG file builds its params from it: parsed once, here
        settings = RiskSettings.from_env()
        model = model_store(settings.model_dir).current()
        redis_client(settings.streams.redis_url)
        # Score one application: scikit-learn's input checks import their dataframe
        # support on first use (a profile showed it as two thirds of a task's scoring).
        from risk.model import load_training_data, probability_bad, reason_codes

        application = dict(load_training_data().applications[0])
        probability_bad(model.pipeline, application)
        reason_codes(model.pipeline, application)
        warmed.append("the risk model")
    except Exception:  # the DAG loads the model itself; a cold start is slower, not broken
        _log.exception("could not warm the risk model")
    try:
        # The DAG file's own imports: `airflow.sdk` resolves them lazily, and a profile
        # showed them as nearly half of each task process's DAG parse.
        from airflow.sdk import Param, TriggerRule, dag, task  # noqa: F401
        from airflow.sdk.exceptions import AirflowFailException  # noqa: F401

        warmed.append("the DAG's imports")
    except Exception:
        _log.exception("could not pre-import the DAG's modules")
    if warmed:
        print(f"onboarding: warmed {' and '.join(warmed)} before forking task processes", file=sys.stderr)


_adjust_airflow()
if forks_task_processes(sys.argv):
    _warm_up()
