"""What the realtime instance's local settings do (deploy/realtime/airflow_local_settings.py
calls `configure` once in every process of the instance):

1. Every process: install the adjustments of Airflow listed in `airflow_adapter.versions`,
   each unless its switch is false and only on an Airflow release it was proven on:
   - Param validation checks each distinct schema against the JSON Schema metaschema once
     instead of on every call (`schema_checks`, ONBOARDING_MEMOIZE_PARAM_SCHEMAS): the check
     was a third of the API server's trigger call (docs/benchmarks.md);
   - an api-server worker builds the execution API's versioned routes when it starts instead
     of on its first request (`execution_api_warmup`, ONBOARDING_WARM_EXECUTION_API): the
     first task start after a start or restart took 9 s and stalled every other request of
     that worker meanwhile;
   - the REST API's audit-log dependency commits in a worker thread instead of blocking the
     api-server's event loop (`action_log_thread`, ONBOARDING_ACTION_LOG_IN_THREAD): on
     SQLite it held every request of a worker for SQLite's 5 s busy timeout whenever it met
     another request's write;
   - `now()` in SQL on SQLite is rendered to the millisecond (`sqlite_now`,
     ONBOARDING_SQLITE_NOW_MS): SQLite's `CURRENT_TIMESTAMP` has whole seconds, so the
     scheduler saw every triggered run as not yet due until the next full second.
   An adjustment that cannot be imported leaves Airflow as it is (slower, not broken); a
   switch that is not a boolean stops the process with a message naming it.
2. The processes that fork the task processes (`forks_task_processes`): LocalExecutor forks
   its workers from the scheduler; on CeleryExecutor the `airflow celery worker` process
   forks its pool, and each task process is forked from those. Importing scikit-learn and
   loading the model here, once, means every onboarding task starts with both already in
   memory instead of paying ~1.5 s of imports per task (far more when many tasks start at once).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from airflow_adapter.versions import ADJUSTMENTS
from onboarding.env import switch

__all__ = ["adjust_airflow", "configure", "forks_task_processes", "warm_up"]

logger = logging.getLogger(__name__)


def forks_task_processes(argv: Sequence[str]) -> bool:
    """Whether this process is `airflow scheduler` or `airflow celery worker`, judged by its argv.

    Airflow 3.3 has no hook that runs in exactly these processes before they fork: the
    listener lifecycle hook `on_starting` fires when the scheduler's Job is created (before
    its executor forks) but needs a plugin registered in each instance, and a Celery worker
    is not a Job. So the command line decides. The forms Airflow 3.3 produces here
    (tests/unit/test_schema_checks.py checks each):
      `airflow scheduler ...`            ['/path/bin/airflow', 'scheduler', ...]
      `python -m airflow scheduler ...`  ['-m', 'scheduler', ...]: the local settings are
                                         imported while `-m` still locates the package (how
                                         stack/instance.py starts it)
      `airflow celery worker ...`        ['/path/bin/airflow', 'celery', 'worker', ...]
    A `--help` is not a start. Spawned children of these processes would inherit their
    argv, but on Linux the executors fork (the children never import the settings again).
    """
    args = list(argv[1:])
    if "-h" in args or "--help" in args:
        return False
    return args[:1] == ["scheduler"] or args[:2] == ["celery", "worker"]


def adjust_airflow() -> None:
    """Install each adjustment whose switch is on (read once, here)."""
    for name, adjustment in ADJUSTMENTS.items():
        try:
            module = importlib.import_module(name)
        except ImportError:
            logger.exception("onboarding: could not import %s", adjustment.what)
            continue
        if switch(module.ENV_VAR):
            module.install()


def warm_up() -> None:
    """Load the model stack, the current model and the DAG file's imports before forking."""
    warmed = []
    try:
        from airflow_adapter import tasks  # noqa: F401  (what the DAG's task runs)
        from onboarding.redis_clients import Role, shared
        from onboarding.schema import signup_schema
        from risk import publishing, steps  # noqa: F401
        from risk.artifacts import model_store
        from risk.model import load_dataset, probability_bad, reason_codes
        from risk.settings import RiskSettings

        # Not `tasks.settings()`: each task process reads its own environment.
        settings = RiskSettings.from_env()
        dataset = settings.streams.dataset
        signup_schema(1, dataset)  # the DAG file builds its params from it: parsed once, here
        # The same store the task uses (`tasks.model`): verified with the same key (risk.integrity).
        model = model_store(settings.model_dir, dataset, settings.verifier()).current()
        if settings.shadow_model_version:  # the shadow challenger, scored beside it (tasks.shadow)
            from risk.artifacts import pinned_model

            pinned_model(settings.model_dir, settings.shadow_model_version, dataset, settings.verifier())
        shared(settings.streams.redis_url, Role.TASK)
        # Score one application: scikit-learn's input checks import their dataframe
        # support on first use (a profile showed it as two thirds of a task's scoring).
        application = dict(load_dataset(dataset).applications[0])
        probability_bad(model.scorer, application)
        reason_codes(model.scorer, application)
        warmed.append("the risk model")
    except Exception:  # the DAG loads the model itself; a cold start is slower, not broken
        logger.exception("could not warm the risk model")
    try:
        # The DAG file's own imports: `airflow.sdk` resolves them lazily, and a profile
        # showed them as nearly half of each task process's DAG parse.
        from airflow.sdk import Param, TriggerRule, dag, task  # noqa: F401
        from airflow.sdk.exceptions import AirflowFailException  # noqa: F401

        warmed.append("the DAG's imports")
    except Exception:
        logger.exception("could not pre-import the DAG's modules")
    if warmed:
        print(f"onboarding: warmed {' and '.join(warmed)} before forking task processes", file=sys.stderr)


def configure(argv: Sequence[str]) -> None:
    """Everything the realtime instance's local settings do in a process started with `argv`."""
    adjust_airflow()
    if forks_task_processes(argv):
        warm_up()
