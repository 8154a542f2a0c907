"""The drift gauges: the PSI values the drift DAG stored in Redis, read at scrape time.

Kept apart from `risk.drift` (which computes PSI with numpy) so that a process that only
exposes the values, such as the listener, loads neither numpy nor the training data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import cast

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from onboarding import keys

DRIFT_KEY = keys.DRIFT_KEY


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
