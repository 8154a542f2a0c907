"""What the batch instance's risk DAGs run (dags/batch/risk_model.py wires these): weekly
retraining through the promotion gate, and the daily drift measurement."""

from __future__ import annotations

from typing import Any

from risk import drift
from risk.card import write_card
from risk.errors import ModelError
from risk.model import load_training_data
from risk.policy import CostMatrix
from risk.redis_client import redis_client
from risk.registry import metadata, promote, train_version
from risk.settings import RiskSettings


def train_challenger(repeats: int, settings: RiskSettings | None = None) -> str:
    """Train a challenger version (repeated cross-validation, fixed seed); returns its version."""
    settings = settings or RiskSettings.from_env()
    return train_version(
        settings.model_dir,
        load_training_data(),
        CostMatrix(review_cost=settings.review_cost),
        settings.review_capacity,
        repeats=repeats,
        seed=0,
        progress=print,
    )


def gate_and_promote(version: str, settings: RiskSettings | None = None) -> dict[str, Any]:
    """Write the challenger's model card and promote it only through the gate. A refusal is not
    a failure of the job: the champion stays, and the report says why."""
    settings = settings or RiskSettings.from_env()
    write_card(settings.model_dir / version, metadata(settings.model_dir, version))
    try:
        reasons = promote(settings.model_dir, version, settings.gate(), data=load_training_data(), progress=print)
    except ModelError as err:
        return {"version": version, "promoted": False, "reason": str(err)}
    return {"version": version, "promoted": True, "gate": reasons}


def compute_psi(window_days: int, settings: RiskSettings | None = None) -> dict[str, float]:
    """Population stability index per feature of the last `window_days` of signups against the
    training data, stored for the listener's /metrics (`onboarding_risk_feature_psi`)."""
    settings = settings or RiskSettings.from_env()
    client = redis_client(settings.streams.redis_url)
    recent = drift.recent_applications(client, settings.streams.signups_stream, window_days * 86400)
    values = drift.feature_psi(load_training_data().applications, recent) if recent else {}
    drift.store(client, values, len(recent))
    return values
