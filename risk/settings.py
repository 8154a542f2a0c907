"""Settings of the decision pipeline (the onboarding DAG's tasks and the training CLI)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from onboarding.env import Env
from onboarding.settings import StreamSettings

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "var" / "models"


@dataclass(frozen=True)
class RiskSettings:
    """RISK_MODEL_DIR (default: var/models in the project checkout), RISK_REVIEW_COST,
    DECISION_MARKER_TTL_S, and the stream settings."""

    streams: StreamSettings = field(default_factory=StreamSettings)
    model_dir: Path = DEFAULT_MODEL_DIR
    review_cost: float = 0.7
    decision_marker_ttl_s: int = 30 * 24 * 3600

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RiskSettings:
        source = os.environ if environ is None else environ
        env = Env(source)
        return cls(
            streams=StreamSettings.from_env(source),
            model_dir=env.path("RISK_MODEL_DIR", DEFAULT_MODEL_DIR),
            review_cost=env.float("RISK_REVIEW_COST", cls.review_cost, minimum=0.0),
            decision_marker_ttl_s=env.int("DECISION_MARKER_TTL_S", cls.decision_marker_ttl_s, minimum=60),
        )
