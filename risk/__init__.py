"""The risk domain: the model, its features and policy, the onboarding pipeline's steps
(`risk.steps`, passing the typed records of `risk.records`), publishing a decision
(`risk.publishing`) and model maintenance. No Airflow: the task bodies that run these are
`airflow_adapter`'s.

Exports load lazily: a DAG file that imports `airflow_adapter.tasks` (and through it this
package) is parsed every few seconds by the dag-processor, and must not pay for scikit-learn
until a task scores.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from risk.artifacts import LoadedModel, ModelStore, load_model, model_store, save_model, set_current
    from risk.errors import MissingParams, ModelError, RiskError, StageFailed
    from risk.features import FEATURES, Feature
    from risk.policy import CostMatrix, Decision, Policy
    from risk.settings import RiskSettings

_EXPORTS = {
    "FEATURES": "risk.features",
    "CostMatrix": "risk.policy",
    "Decision": "risk.policy",
    "Feature": "risk.features",
    "LoadedModel": "risk.artifacts",
    "MissingParams": "risk.errors",
    "ModelError": "risk.errors",
    "ModelStore": "risk.artifacts",
    "Policy": "risk.policy",
    "RiskError": "risk.errors",
    "RiskSettings": "risk.settings",
    "StageFailed": "risk.errors",
    "load_model": "risk.artifacts",
    "model_store": "risk.artifacts",
    "save_model": "risk.artifacts",
    "set_current": "risk.artifacts",
}
__all__ = [
    "FEATURES",
    "CostMatrix",
    "Decision",
    "Feature",
    "LoadedModel",
    "MissingParams",
    "ModelError",
    "ModelStore",
    "Policy",
    "RiskError",
    "RiskSettings",
    "StageFailed",
    "load_model",
    "model_store",
    "save_model",
    "set_current",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'risk' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
