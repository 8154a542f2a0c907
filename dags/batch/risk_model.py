"""Risk model maintenance on the batch instance: weekly retraining, daily drift.

Both DAGs wire `airflow_adapter.maintenance`; they never run on the realtime instance, so a training
job cannot delay a decision.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from airflow_adapter import maintenance


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
        return maintenance.train_challenger(params)

    @task
    def gate_and_promote(version: str) -> dict[str, Any]:
        return maintenance.gate_and_promote(version)

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
        return maintenance.compute_psi(params)

    compute_psi()


risk_model_retrain()
risk_drift()
