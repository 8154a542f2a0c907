"""Population stability index (PSI) of recent applications against the training data.

PSI = sum over bins of (actual% - expected%) * ln(actual% / expected%). Numeric features use
the training data's deciles as bins; categorical ones their codes. Rule of thumb: below 0.1
stable, 0.1-0.25 worth a look, above 0.25 the population has shifted and the model's
figures no longer describe it.

The drift DAG stores the latest values in a Redis hash; `DriftCollector` exposes them as
Prometheus gauges from any process that registers it (the listener does).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from typing import Any, cast

import numpy as np
import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.typing import EncodableT, FieldT

from onboarding import keys
from onboarding.streams import live_entries
from risk.features import FEATURES

DRIFT_KEY = keys.DRIFT_KEY
EPSILON = 1e-4  # an empty bin would make ln() infinite


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    shares = counts / total if total else np.zeros_like(counts, dtype=float)
    return np.clip(shares, EPSILON, None)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e, a = _shares(expected.astype(float)), _shares(actual.astype(float))
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(training: list[dict[str, Any]], recent: list[dict[str, Any]]) -> dict[str, float]:
    """PSI per application feature."""
    out: dict[str, float] = {}
    for feature in FEATURES:
        train_values = [a[feature.name] for a in training]
        recent_values = [a[feature.name] for a in recent if feature.name in a]
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
        try:
            event = json.loads(fields.get(b"payload", b""))
            application = event["application"]
        except (ValueError, KeyError, TypeError, RecursionError):
            continue
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


class DriftCollector(Collector):
    """Prometheus gauges read from the drift hash at scrape time."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "onboarding_risk_feature_psi",
            "Population stability index of recent applications vs the training data, per feature.",
            labels=["feature"],
        )
        computed = GaugeMetricFamily(
            "onboarding_risk_drift_computed_timestamp_seconds", "When the drift DAG last computed the PSI."
        )
        try:
            # A bytes client (no decode_responses): redis-py's type covers both.
            stored = cast("dict[bytes, bytes]", self.client.hgetall(DRIFT_KEY))
            values = {k.decode(): v.decode() for k, v in stored.items()}
        except redis.RedisError:
            values = {}
        for name, value in _features(values.items()):
            gauge.add_metric([name], float(value))
        if "_computed_at" in values:
            computed.add_metric([], float(values["_computed_at"]))
        yield gauge
        yield computed


def _features(items: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    return ((k, v) for k, v in items if not k.startswith("_"))
