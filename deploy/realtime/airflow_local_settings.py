"""Realtime instance: warm the risk model in the scheduler before it forks task workers.

LocalExecutor forks its workers from the scheduler, and each task process is forked from
a worker. Importing scikit-learn and loading the model here, once, means every onboarding
task starts with both already in memory instead of paying ~1.5 s of imports per task.
Airflow imports this module in every process; only the scheduler warms up.
"""

import logging
import sys

if sys.argv[1:2] == ["scheduler"] or sys.argv[-1:] == ["scheduler"]:
    try:
        from risk.artifacts import model_store
        from risk.redis_client import redis_client
        from risk.settings import RiskSettings

        _settings = RiskSettings.from_env()
        _model = model_store(_settings.model_dir).current()
        redis_client(_settings.streams.redis_url)
        print(f"onboarding: warmed risk model {_model.version} before forking workers", file=sys.stderr)
    except Exception:  # the DAG loads the model itself; a cold start is slower, not broken
        logging.getLogger("onboarding").exception("could not warm the risk model")
