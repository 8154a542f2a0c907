"""Risk model maintenance on the batch instance: weekly retraining, daily drift.

Both DAGs call `risk.registry` / `risk.drift`; they never run on the realtime instance, so
a training job cannot delay a decision.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task


def _settings() -> Any:
    from risk.settings import RiskSettings

    return RiskSettings.from_env()


@dag(
    dag_id="risk_model_retrain",
    schedule="0 2 * * 1",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["batch", "risk"],
    params={"repeats": Param(3, type="integer", minimum=1, maximum=10, description="CV repeats")},
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
)
def risk_model_retrain() -> None:
    """Train a challenger, evaluate it on the champion's folds, promote it only through the gate.

    Promotion is an atomic switch of the model directory's CURRENT pointer; the realtime DAG
    picks the new version up on its next task, without a restart.
    """

    @task(execution_timeout=timedelta(hours=1))
    def train_challenger(params: dict[str, Any] | None = None) -> str:
        from risk.model import load_training_data
        from risk.policy import CostMatrix
        from risk.registry import train_version

        settings = _settings()
        repeats = int((params or {}).get("repeats", 3))
        return train_version(
            settings.model_dir,
            load_training_data(),
            CostMatrix(review_cost=settings.review_cost),
            settings.review_capacity,
            repeats=repeats,
            seed=0,
            progress=print,
        )

    @task
    def gate_and_promote(version: str) -> dict[str, Any]:
        from risk.card import write_card
        from risk.errors import ModelError
        from risk.registry import Gate, metadata, promote

        settings = _settings()
        write_card(settings.model_dir / version, metadata(settings.model_dir, version))
        gate = Gate(settings.gate_max_cost_increase, settings.gate_max_auc_drop)
        try:
            reasons = promote(settings.model_dir, version, gate)
        except ModelError as err:
            # Not a failure of the job: the champion stays, and the report says why.
            return {"version": version, "promoted": False, "reason": str(err)}
        return {"version": version, "promoted": True, "gate": reasons}

    gate_and_promote(train_challenger())


@dag(
    dag_id="risk_drift",
    schedule="30 3 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["batch", "risk"],
    params={"window_days": Param(7, type="integer", minimum=1, maximum=90)},
)
def risk_drift() -> None:
    """Population stability index of the last week's applications against the training data,
    per feature; exposed as `onboarding_risk_feature_psi` on the listener's /metrics."""

    @task
    def compute_psi(params: dict[str, Any] | None = None) -> dict[str, float]:
        from risk import drift
        from risk.model import load_training_data
        from risk.redis_client import redis_client

        settings = _settings()
        client = redis_client(settings.streams.redis_url)
        days = int((params or {}).get("window_days", 7))
        recent = drift.recent_applications(client, settings.streams.signups_stream, days * 86400)
        values = drift.feature_psi(load_training_data().applications, recent) if recent else {}
        drift.store(client, values, len(recent))
        return values

    compute_psi()


risk_model_retrain()
risk_drift()
