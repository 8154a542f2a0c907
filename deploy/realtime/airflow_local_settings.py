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
        print(f"onboarding: warmed risk model {_model.version} before forking task processes", file=sys.stderr)
    except Exception:  # the DAG loads the model itself; a cold start is slower, not broken
        logging.getLogger("onboarding").exception("could not warm the risk model")
