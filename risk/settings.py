"""Settings of the decision pipeline (the onboarding DAG's tasks and the training CLI)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from onboarding.env import Env
from onboarding.errors import ConfigError
from onboarding.settings import StreamSettings, default_home

if TYPE_CHECKING:
    from risk.integrity import Signer, Verifier
    from risk.registry import Gate


@dataclass(frozen=True)
class RiskSettings:
    """RISK_MODEL_DIR (default: models/ in the service's home, `default_home`), RISK_REVIEW_COST,
    RISK_REVIEW_CAPACITY, RISK_GATE_*, DECISION_MARKER_TTL_S, REVIEW_DEADLINE_S, the model signing keys
    (MODEL_SIGNING_KEY[_FILE], MODEL_VERIFY_KEY[_FILE], MODEL_SIGNING_REQUIRE_KEY), ONBOARDING_GIT_SHA,
    SHADOW_MODEL_VERSION, and the stream settings.

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
    review_deadline_s: float = 24 * 3600.0  # a `review` opens a case due this long after publishing
    # Model integrity (risk.integrity): the Ed25519 seed that signs versions (batch side) and
    # the public key that verifies them (realtime side), both hex; without them the
    # development key, unless `model_signing_require_key` (production) refuses that.
    model_signing_key: str | None = field(default=None, repr=False)
    model_verify_key: str | None = None
    model_signing_require_key: bool = False
    # The code version in each decision record (risk/evidence.py): an image build sets it;
    # a source checkout's HEAD is read when it is not set.
    git_sha: str | None = None
    # Shadow scoring (airflow_adapter/tasks.py): a challenger version scored beside the champion
    # on live traffic, recorded in the decision record, never published.
    shadow_model_version: str | None = None

    def signer(self) -> Signer:
        """The key that signs new model versions (MODEL_SIGNING_KEY, else the development key)."""
        from risk.integrity import DEV_SEED, Signer

        if self.model_signing_key is None and self.model_signing_require_key:
            raise ConfigError(
                "MODEL_SIGNING_KEY (or MODEL_SIGNING_KEY_FILE) is required: MODEL_SIGNING_REQUIRE_KEY=true "
                "refuses the development key"
            )
        return Signer(self.model_signing_key or DEV_SEED)

    def verifier(self) -> Verifier:
        """The public key model versions must be signed with: MODEL_VERIFY_KEY, else the one of
        MODEL_SIGNING_KEY, else the development key (refused under MODEL_SIGNING_REQUIRE_KEY)."""
        from risk.integrity import DEV_SEED, Signer, Verifier

        if self.model_verify_key is not None:
            verifier = Verifier(self.model_verify_key)
        elif self.model_signing_key is not None:
            verifier = Signer(self.model_signing_key).verifier()
        else:
            verifier = Signer(DEV_SEED).verifier()
        if self.model_signing_require_key and verifier.is_dev:
            raise ConfigError(
                "MODEL_VERIFY_KEY (or MODEL_VERIFY_KEY_FILE) is required: MODEL_SIGNING_REQUIRE_KEY=true "
                "refuses the development key"
            )
        return verifier

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
            review_deadline_s=env.float("REVIEW_DEADLINE_S", cls.review_deadline_s, minimum=60),
            model_signing_key=_hex_key(env, "MODEL_SIGNING_KEY"),
            model_verify_key=_hex_key(env, "MODEL_VERIFY_KEY"),
            model_signing_require_key=env.bool("MODEL_SIGNING_REQUIRE_KEY", False),
            git_sha=env.optional_str("ONBOARDING_GIT_SHA"),
            shadow_model_version=env.optional_str("SHADOW_MODEL_VERSION"),
        )


def _hex_key(env: Env, name: str) -> str | None:
    value = env.secret(name)
    if value is None:
        return None
    try:
        ok = len(bytes.fromhex(value)) == 32
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{name} is not 64 hex digits (a 32-byte Ed25519 key); the value is not shown")
    return value
