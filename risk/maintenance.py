"""Risk model maintenance: weekly retraining through the promotion gate, and the daily drift
measurement. The batch instance's DAGs run these through `airflow_adapter.maintenance`."""

from __future__ import annotations

from typing import Any

from onboarding.redis_clients import Role, shared
from risk import drift
from risk.card import write_card
from risk.datasets import dataset
from risk.errors import ModelError
from risk.integrity import ModelIntegrityError
from risk.model import load_dataset
from risk.policy import CostMatrix
from risk.registry import metadata, promote, train_version
from risk.settings import RiskSettings


def train_challenger(repeats: int, settings: RiskSettings | None = None) -> str:
    """Train a challenger version (repeated cross-validation, fixed seed); returns its version."""
    settings = settings or RiskSettings.from_env()
    return train_version(
        settings.model_dir,
        load_dataset(settings.streams.dataset),
        CostMatrix(review_cost=settings.review_cost),
        settings.review_capacity,
        repeats=repeats,
        seed=0,
        progress=print,
        signer=settings.signer(),  # the batch workers' MODEL_SIGNING_KEY (risk.integrity)
        kind=dataset(settings.streams.dataset).service_kind,
    )


def gate_and_promote(version: str, settings: RiskSettings | None = None) -> dict[str, Any]:
    """Write the challenger's model card and promote it only through the gate. A refusal by the
    gate is not a failure of the job: the champion stays, and the report says why. A challenger
    that does not verify with the service's key (`RiskSettings.verifier()`) is: the champion
    stays, the refusal is in HISTORY, and `ModelIntegrityError` fails the job."""
    settings = settings or RiskSettings.from_env()
    write_card(settings.model_dir / version, metadata(settings.model_dir, version))
    try:
        reasons = promote(
            settings.model_dir,
            version,
            settings.gate(),
            data=load_dataset(settings.streams.dataset),
            progress=print,
            verifier=settings.verifier(),
            signer=settings.signer(),  # CURRENT is signed with the batch workers' key too
        )
    except ModelIntegrityError:
        raise  # not the gate's verdict: the signing and verifying keys disagree, or a file changed
    except ModelError as err:
        return {"version": version, "promoted": False, "reason": str(err)}
    return {"version": version, "promoted": True, "gate": reasons}


def compute_psi(window_days: int, settings: RiskSettings | None = None) -> dict[str, float]:
    """Population stability index per feature of the last `window_days` of signups against the
    training data, stored for the listener's /metrics (`onboarding_risk_feature_psi`)."""
    settings = settings or RiskSettings.from_env()
    client = shared(settings.streams.redis_url, Role.TASK)
    recent = drift.recent_applications(client, settings.streams.signups_stream, window_days * 86400)
    contract = dataset(settings.streams.dataset)
    training = load_dataset(contract.name).applications
    values = drift.feature_psi(training, recent, contract.features) if recent else {}
    drift.store(client, values, len(recent))
    return values
