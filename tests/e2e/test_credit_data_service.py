"""The service on the second data set's feature contract, on a real Airflow (issue 29, item 5):
with ONBOARDING_DATASET=credit_data in every component (the dag-processor builds the DAG's typed
params from credit_data's signup schema; the listener validates against it; the task loads only
a credit_data model), a credit_data signup is decided on the real realtime instance with
credit_data's reason codes, one that left its income out too, and a German credit signup is
refused with its reason (dead-lettered and answered `refused`), never triggered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onboarding import keys
from onboarding.decision import wait_for_decision
from onboarding.publisher import publish_raw, publish_signup
from risk.artifacts import current_version, load_model, save_model
from risk.datasets import dataset
from risk.model import fit, load_dataset, probability_bad
from risk.policy import CostMatrix, Policy
from risk.samples import new_signup
from testkit.model import credit_data_sample
from testkit.realtime import running_realtime
from tests.e2e.test_review_page import eventually

pytestmark = pytest.mark.e2e

WAIT_S = 120.0


def train_credit_data(model_dir: Path) -> Path:
    """The service's procedure for credit_data (the blend) on 1,200 of its applicants: seconds."""
    data = credit_data_sample()
    contract = dataset("credit_data")
    extra = {"dataset": "credit_data", "features": contract.feature_schema(), "kind": contract.service_kind}
    save_model(model_dir, fit(data), Policy.from_costs(CostMatrix(review_cost=0.7)), data.sha256, {}, extra=extra)
    return model_dir


def test_a_credit_data_service_decides_credit_data_signups_on_a_real_airflow(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    model_dir = train_credit_data(tmp_path / "models")
    setting = {"ONBOARDING_DATASET": "credit_data"}
    with running_realtime(
        "sqlite", tmp_path / "realtime", model_dir, request.session, "credit", extra_env=lambda _url: setting
    ) as stack:
        stack.start_listener(**setting)
        data = load_dataset("credit_data")
        model = load_model(model_dir, current_version(model_dir)).scorer
        by_risk = sorted(data.applications[:400], key=lambda a: probability_bad(model, a))
        risky = max((a for a in data.applications if a["income"] is None), key=lambda a: probability_bad(model, a))
        signups = [new_signup(application=by_risk[0]), new_signup(application=risky)]
        for signup in signups:  # as an app sends them (publish_signup checks German credit's schema)
            publish_raw(stack.redis, stack.streams.signups_stream, json.dumps(signup))
        columns = set(dataset("credit_data").trees.columns)
        decided = []
        for signup in signups:
            found = wait_for_decision(stack.redis, stack.streams.decisions_stream, signup["event_id"], WAIT_S)
            assert found is not None, f"no decision for {signup['event_id']}"
            assert found.error is None and found.score is not None
            assert found.model_version == current_version(model_dir)
            assert {r["code"] for r in found.reason_codes} <= columns  # credit_data's features, not German credit's
            decided.append(found)
        safe, unstated = decided
        assert safe.decision == "approve" and unstated.decision in ("review", "decline")
        assert unstated.score > safe.score and unstated.reason_codes  # the risky one is told why
        # A German credit signup does not fit the contract: refused with its reason, never run.
        german = new_signup(dataset="german_credit")
        publish_signup(stack.redis, stack.streams.signups_stream, german)
        key = keys.decision_key(stack.streams.decisions_stream, german["event_id"])
        answer = json.loads(eventually(lambda: stack.redis.get(key), "the German signup's refusal", WAIT_S))
        assert answer["kind"] == "refusal" and answer["reason"] in ("missing_field", "unknown_field")
        assert {r["dag_run_id"] for r in stack.dag_runs()} == {keys.run_id_for(s["event_id"]) for s in signups}
