"""The batch instance's DAGs run for real (`airflow dags test` against a migrated batch
metadata database): retraining trains a challenger and promotes it through the gate; the
drift DAG publishes PSI values."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
import redis

from onboarding.publisher import publish_signup
from risk import drift
from risk.artifacts import current_version
from risk.integrity import Signer, sign_version
from risk.model import load_training_data
from risk.registry import history
from risk.samples import new_signup
from risk.settings import RiskSettings
from stack.instance import AirflowInstance, InstanceSpec
from testkit.realtime import E2E_REDIS_URL
from testkit.services import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path):
    home = tmp_path_factory.mktemp("batch")
    model_dir = tmp_path_factory.mktemp("batch-models")
    for item in trained_model_dir.iterdir():  # start from the session's champion
        if item.is_dir():
            shutil.copytree(item, model_dir / item.name)
        else:
            shutil.copy(item, model_dir / item.name)
    # Give the champion a weak record on the folds the DAG evaluates on, so a fresh challenger
    # beats it through the real gate.
    champion = model_dir / current_version(model_dir) / "metadata.json"
    meta = json.loads(champion.read_text())
    meta["cv"] = {"repeats": 1, "folds": 10, "seed": 0, "data_sha256": load_training_data().sha256}
    meta["metrics"] = {"auc": {"mean": 0.6, "std": 0.0}, "cost_policy": {"mean": 0.69, "std": 0.0}}
    settings = RiskSettings.from_env({})
    meta["costs"] = {
        "bad_approved": 5.0,
        "good_declined": 1.0,
        "review": settings.review_cost,
        "review_capacity": settings.review_capacity,
    }
    champion.write_text(json.dumps(meta))
    # Signed as edited: promotion verifies versions, and an unverifiable champion is not defended.
    sign_version(champion.parent, Signer())
    instance = AirflowInstance(
        InstanceSpec.from_deploy("batch", home, free_port(), free_port()),
        {
            **os.environ,
            "REDIS_URL": E2E_REDIS_URL,
            "SIGNUPS_STREAM": "batch-e2e:signups",
            "RISK_MODEL_DIR": str(model_dir),
        },
    )
    instance.prepare()
    instance.migrate()
    return instance, model_dir


def test_retraining_promotes_a_challenger_through_the_gate(batch) -> None:
    instance, model_dir = batch
    before = current_version(model_dir)
    instance.airflow("dags", "test", "risk_model_retrain", "-c", json.dumps({"repeats": 1}), timeout_s=900)
    after = current_version(model_dir)
    assert after != before
    assert (model_dir / after / "MODEL_CARD.md").is_file()
    assert (model_dir / after / "roc.png").is_file()
    assert history(model_dir)[-1]["version"] == after
    assert history(model_dir)[-1]["reasons"][0].startswith("cost per applicant")  # compared with the champion


def test_drift_dag_publishes_psi(batch) -> None:
    instance, _model_dir = batch
    client = redis.Redis.from_url(E2E_REDIS_URL)
    client.delete("batch-e2e:signups", drift.DRIFT_KEY)
    rng = random.Random(5)
    for _ in range(60):
        publish_signup(client, "batch-e2e:signups", new_signup(rng=rng))
    instance.airflow("dags", "test", "risk_drift", timeout_s=600)
    values = {k.decode(): v.decode() for k, v in client.hgetall(drift.DRIFT_KEY).items()}
    assert values["_sample_size"] == "60"
    assert 0.0 <= float(values["credit_amount"]) < 1.0
    client.delete("batch-e2e:signups", drift.DRIFT_KEY)
