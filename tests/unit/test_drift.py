"""Drift: PSI per feature of recent applications vs the training data, exposed as a metric."""

from __future__ import annotations

import json
import random

import redis
from prometheus_client import CollectorRegistry, generate_latest

from onboarding.publisher import publish_signup
from risk import drift
from risk.model import load_training_data
from risk.samples import new_signup


def test_the_training_population_is_stable_against_itself() -> None:
    training = load_training_data().applications
    sample = random.Random(0).sample(training, 500)
    values = drift.feature_psi(training, sample)
    assert len(values) == 18
    assert max(values.values()) < 0.1


def test_a_shifted_population_shows_on_the_shifted_features() -> None:
    training = load_training_data().applications
    shifted = [a | {"credit_amount": a["credit_amount"] * 4, "purpose": "business"} for a in training[:400]]
    values = drift.feature_psi(training, shifted)
    assert values["credit_amount"] > 0.25
    assert values["purpose"] > 0.25
    assert values["age_years"] < 0.1


def test_recent_signups_feed_the_metric(redis_client: redis.Redis) -> None:
    rng = random.Random(1)
    for _ in range(50):
        publish_signup(redis_client, "signups", new_signup(rng=rng))
    redis_client.xadd("signups", {"payload": "not json"})
    recent = drift.recent_applications(redis_client, "signups", since_s=3600)
    assert len(recent) == 50
    drift.store(redis_client, drift.feature_psi(load_training_data().applications, recent), len(recent))
    registry = CollectorRegistry()
    registry.register(drift.DriftCollector(redis_client))
    text = generate_latest(registry).decode()
    assert 'onboarding_risk_feature_psi{feature="credit_amount"}' in text
    assert "onboarding_risk_drift_computed_timestamp_seconds" in text
    assert json.loads(redis_client.hget(drift.DRIFT_KEY, "_sample_size")) == 50
