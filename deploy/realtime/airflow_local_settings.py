"""Realtime instance: warm the risk model in the process that forks the task processes.

LocalExecutor forks its workers from the scheduler; on CeleryExecutor the `airflow celery
worker` process forks its pool, and each task process is forked from those. Importing
scikit-learn and loading the model here, once, means every onboarding task starts with
both already in memory instead of paying ~1.5 s of imports per task (far more when many
tasks start at once). Airflow imports this module in every process; only the scheduler
and the Celery workers warm up.
"""

import logging
import sys

# Every process: validate DAG params without re-checking their schema each time (the
# largest single cost of a trigger in the API server; onboarding/schema_checks.py).
try:
    from onboarding.schema_checks import memoize_schema_checks

    memoize_schema_checks()
except Exception:  # slower, not broken
    logging.getLogger("onboarding").exception("could not install the schema-check cache")

_ARGS = sys.argv[1:]
if _ARGS[:1] == ["scheduler"] or sys.argv[-1:] == ["scheduler"] or _ARGS[:2] == ["celery", "worker"]:
    try:
        from onboarding.schema import signup_schema
        from risk import steps  # noqa: F401
        from risk.artifacts import model_store
        from risk.redis_client import redis_client
        from risk.settings import RiskSettings

        signup_schema(1)  # the DAG file builds its params from it: parsed once, here
        _settings = RiskSettings.from_env()
        _model = model_store(_settings.model_dir).current()
        redis_client(_settings.streams.redis_url)
        # Score one application: scikit-learn's input checks import their dataframe
        # support on first use (a profile showed it as two thirds of a task's scoring).
        from onboarding.publisher import sample_application
        from risk.model import probability_bad, reason_codes

        _application = sample_application()
        probability_bad(_model.pipeline, _application)
        reason_codes(_model.pipeline, _application)
    except Exception:  # the DAG loads the model itself; a cold start is slower, not broken
        logging.getLogger("onboarding").exception("could not warm the risk model")
    try:
        # The DAG file's own imports: `airflow.sdk` resolves them lazily, and a profile
        # showed them as nearly half of each task process's DAG parse.
        from airflow.sdk import Param, TriggerRule, dag, task  # noqa: F401
        from airflow.sdk.exceptions import AirflowFailException  # noqa: F401
    except Exception:
        logging.getLogger("onboarding").exception("could not pre-import the DAG's modules")
    else:
        print("onboarding: warmed the risk model and the DAG's imports before forking task processes", file=sys.stderr)
