"""The risk model and decision pipeline steps that the onboarding DAG runs."""

from risk.artifacts import LoadedModel, ModelStore, load_model, model_store, save_model, set_current
from risk.errors import ModelError, PublishError, RiskError
from risk.features import FEATURES, Feature
from risk.policy import CostMatrix, Decision, Policy
from risk.settings import RiskSettings

__all__ = [
    "FEATURES",
    "CostMatrix",
    "Decision",
    "Feature",
    "LoadedModel",
    "ModelError",
    "ModelStore",
    "Policy",
    "PublishError",
    "RiskError",
    "RiskSettings",
    "load_model",
    "model_store",
    "save_model",
    "set_current",
]
