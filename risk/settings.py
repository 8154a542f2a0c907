"""Settings of the decision pipeline (the onboarding DAG's tasks and the training CLI)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from onboarding.env import Env
from onboarding.settings import StreamSettings, default_home

if TYPE_CHECKING:
    from risk.registry import Gate


@dataclass(frozen=True)
class RiskSettings:
    """RISK_MODEL_DIR (default: models/ in the service's home, `default_home`), RISK_REVIEW_COST,
    RISK_REVIEW_CAPACITY, RISK_GATE_*, DECISION_MARKER_TTL_S, and the stream settings.

    Constructed directly, the defaults are those of an empty environment."""

    streams: StreamSettings = field(default_factory=StreamSettings)
    model_dir: Path = field(default_factory=lambda: default_home({}) / "models")
    review_cost: float = 0.7
    review_capacity: float = 0.15
    gate_max_cost_increase: float = 0.0
    gate_max_auc_drop: float = 0.005
    gate_max_fairness_worsening: float = 0.05
    decision_marker_ttl_s: int = 30 * 24 * 3600
    decision_key_ttl_s: int = 7 * 24 * 3600  # as long as the decisions stream keeps it

    def gate(self) -> Gate:
        """The promotion gate with these tolerances."""
        from risk.registry import Gate

        return Gate(self.gate_max_cost_increase, self.gate_max_auc_drop, self.gate_max_fairness_worsening)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RiskSettings:
        source = os.environ if environ is None else environ
        env = Env(source)
        return cls(
            streams=StreamSettings.from_env(source),
            model_dir=env.path("RISK_MODEL_DIR", default_home(source) / "models"),
            review_cost=env.float("RISK_REVIEW_COST", cls.review_cost, minimum=0.0),
            review_capacity=env.float("RISK_REVIEW_CAPACITY", cls.review_capacity, minimum=0.0),
            gate_max_cost_increase=env.float("RISK_GATE_MAX_COST_INCREASE", cls.gate_max_cost_increase, minimum=0.0),
            gate_max_auc_drop=env.float("RISK_GATE_MAX_AUC_DROP", cls.gate_max_auc_drop, minimum=0.0),
            gate_max_fairness_worsening=env.float(
                "RISK_GATE_MAX_FAIRNESS_WORSENING", cls.gate_max_fairness_worsening, minimum=0.0
            ),
            decision_marker_ttl_s=env.int("DECISION_MARKER_TTL_S", cls.decision_marker_ttl_s, minimum=60),
            decision_key_ttl_s=env.int("DECISION_KEY_TTL_S", cls.decision_key_ttl_s, minimum=60),
        )
