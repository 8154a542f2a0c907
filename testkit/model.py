"""A baseline model for the processes a test or a benchmark starts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from risk.model import TrainingData


def train_baseline(model_dir: Path) -> Path:
    """Train and save the service's model with the default policy as the current version."""
    from risk.artifacts import save_model
    from risk.model import fit, load_training_data
    from risk.policy import CostMatrix, Policy

    data = load_training_data()
    policy = Policy.from_costs(CostMatrix(review_cost=0.7))
    save_model(model_dir, fit(data), policy, data.sha256, {"cv_auc": 0.0})
    return model_dir


def model_dir_or_train(given: Path | None, scratch: Path) -> Path:
    """The trained model directory a benchmark was given, or a baseline trained in `scratch`."""
    if given is not None:
        return given
    from testkit.faults import log

    log("training the baseline model")
    return train_baseline(scratch)


def credit_data_sample(size: int = 1200, seed: int = 0) -> TrainingData:
    """`size` of credit_data's 4,454 applicants, drawn without replacement: the service's
    procedure trains on them in seconds, not minutes (tests)."""
    import numpy as np

    from risk.model import TrainingData, load_dataset

    full = load_dataset("credit_data")
    keep = sorted(np.random.default_rng(seed).choice(len(full.bad), size, replace=False).tolist())
    return TrainingData(
        applications=[full.applications[i] for i in keep],
        bad=[full.bad[i] for i in keep],
        sha256=full.sha256,
        protected=[full.protected[i] for i in keep],
        dataset="credit_data",
    )
