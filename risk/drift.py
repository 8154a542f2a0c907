"""Population stability index (PSI) of recent applications against the training data.

PSI = sum over bins of (actual% - expected%) * ln(actual% / expected%). Numeric features use
the training data's deciles as bins; categorical ones their codes. Rule of thumb: below 0.1
stable, 0.1-0.25 worth a look, above 0.25 the population has shifted and the model's
figures no longer describe it.

The drift DAG stores the latest values in a Redis hash; `DriftCollector` (in
`risk.drift_metrics`, which needs no numpy) exposes them as Prometheus gauges from any
process that registers it (the listener does).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import redis
from redis.typing import EncodableT, FieldT

from onboarding import keys
from onboarding.streams import live_entries
from onboarding.untrusted import field_of
from risk.drift_metrics import DriftCollector
from risk.features import FEATURES, Feature

DRIFT_KEY = keys.DRIFT_KEY
EPSILON = 1e-4  # an empty bin would make ln() infinite

__all__ = ["DRIFT_KEY", "DriftCollector", "feature_psi", "psi", "recent_applications", "store"]


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    shares = counts / total if total else np.zeros_like(counts, dtype=float)
    return np.clip(shares, EPSILON, None)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e, a = _shares(expected.astype(float)), _shares(actual.astype(float))
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(
    training: list[dict[str, Any]], recent: list[dict[str, Any]], features: tuple[Feature, ...] = FEATURES
) -> dict[str, float]:
    """PSI per application feature (of a data set's contract, default German credit); a
    numeric value not stated (credit_data's nullable fields) is left out of its feature's bins."""
    out: dict[str, float] = {}
    for feature in features:
        numeric = not feature.categorical
        train_values = [a[feature.name] for a in training if not (numeric and a[feature.name] is None)]
        recent_values = [
            a[feature.name] for a in recent if feature.name in a and not (numeric and a[feature.name] is None)
        ]
        if not recent_values:
            continue
        if feature.categorical:
            codes = sorted({str(v) for v in train_values} | {str(v) for v in recent_values})
            expected = np.array([sum(str(v) == c for v in train_values) for c in codes])
            actual = np.array([sum(str(v) == c for v in recent_values) for c in codes])
        else:
            edges = np.unique(np.quantile(np.array(train_values, dtype=float), np.linspace(0, 1, 11)))
            edges[0], edges[-1] = -math.inf, math.inf
            expected = np.histogram(np.array(train_values, dtype=float), bins=edges)[0]
            actual = np.histogram(np.array(recent_values, dtype=float), bins=edges)[0]
        out[feature.name] = round(psi(expected, actual), 5)
    return out


def recent_applications(client: redis.Redis, stream: str, since_s: float, limit: int = 100_000) -> list[dict]:
    """Applications published to the signups stream in the last `since_s` seconds (the
    newest `limit`; events whose `application` is not an object are skipped)."""
    start = f"{int((time.time() - since_s) * 1000)}-0"
    applications = []
    for _id, fields in live_entries(client.xrevrange(stream, max="+", min=start, count=limit)):
        application = field_of(fields.get(b"payload"), "application")
        if isinstance(application, dict):
            applications.append(application)
    return applications


def store(client: redis.Redis, values: dict[str, float], sample_size: int) -> None:
    mapping: dict[FieldT, EncodableT] = {name: str(value) for name, value in values.items()}
    mapping["_computed_at"] = str(time.time())
    mapping["_sample_size"] = str(sample_size)
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(DRIFT_KEY)
        pipe.hset(DRIFT_KEY, mapping=mapping)
        pipe.execute()
