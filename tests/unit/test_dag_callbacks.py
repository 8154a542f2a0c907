"""The onboarding DAG's task bodies and callbacks (risk.pipeline) answer every applicant, once."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from airflow.sdk.exceptions import AirflowFailException

from onboarding.decision import DecisionEvent, decision_errors, publish_decision
from onboarding.schema import validate_signup
from risk import pipeline, steps
from risk.samples import new_signup
from tests.conftest import TEST_REDIS_URL


@pytest.fixture(autouse=True)
def test_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    pipeline.settings.cache_clear()  # read once per process: read again with this environment
    yield
    pipeline.settings.cache_clear()


def conf_for(event: dict) -> dict:
    return validate_signup(event).to_dict() | {"accepted_at": "2026-11-22T10:00:00+00:00"}


def context_for(event: dict) -> dict:
    return {
        "dag_run": SimpleNamespace(conf=conf_for(event), run_id=f"signup__{event['event_id']}"),
        "reason": "task_failure",
    }


def decisions(client: redis.Redis) -> list[dict]:
    """Every published decision, each checked against the contract (decision.v1.json)."""
    found = [json.loads(fields[b"payload"]) for _id, fields in client.xrange("decisions")]
    for decision in found:
        assert decision_errors(decision) == [], decision
    return found


class FakeTaskInstance:
    """The XComs of a stepwise run's tasks, as `xcom_pull` returns them."""

    def __init__(self, xcoms: dict[tuple[str, str], object]) -> None:
        self.xcoms = xcoms
        self.start_date = None

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> object:
        return self.xcoms.get((task_ids, key))


def test_failed_run_without_answer_gets_review(redis_client: redis.Redis) -> None:
    event = new_signup(rng=random.Random(1))
    pipeline.answer_failed_run(context_for(event))
    [decision] = decisions(redis_client)
    assert decision["event_id"] == event["event_id"]
    assert decision["decision"] == "review"
    assert decision["error"] == "task_failure"


def test_backstop_adds_nothing_when_publish_already_answered(redis_client: redis.Redis) -> None:
    event = new_signup(rng=random.Random(2))
    publish_decision(
        redis_client,
        "decisions",
        DecisionEvent(event["event_id"], event["user_id"], "approve", 0.05, [], "v1", "r"),
    )
    pipeline.answer_failed_run(context_for(event))
    assert redis_client.xlen("decisions") == 1


def test_a_step_failing_for_good_answers_review_with_the_stage(redis_client: redis.Redis) -> None:
    event = new_signup(rng=random.Random(3))
    conf = conf_for(event)

    def broken_model():
        raise FileNotFoundError("model version 'does-not-exist' is not in the registry")

    with pytest.raises(steps.StageFailed) as failed:
        steps.run_stages(conf, conf["accepted_at"], "2026-11-22T10:00:01+00:00", broken_model)
    context = {**context_for(event), "exception": failed.value}
    pipeline.answer_failed_task(context)
    [decision] = decisions(redis_client)
    assert decision["event_id"] == event["event_id"]
    assert decision["decision"] == "review"
    assert decision["error"].startswith("stage 'score' failed: FileNotFoundError")
    assert "does-not-exist" in decision["error"]
    assert decision["timestamps"]["accepted_at"] == "2026-11-22T10:00:00+00:00"
    # The DAG's backstop then finds the applicant answered and adds nothing.
    pipeline.answer_failed_run(context_for(event))
    assert redis_client.xlen("decisions") == 1


def test_publishing_waits_out_a_short_redis_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def flaky(event):
        calls.append(event)
        if len(calls) < 3:
            raise redis.ConnectionError("Redis is failing over")
        return "1-0"

    monkeypatch.setattr(pipeline, "publish", flaky)
    monkeypatch.setattr(pipeline.time, "sleep", lambda s: None)
    event = SimpleNamespace(event_id="evt-1", run_id="signup__evt-1")
    assert pipeline.publish_retrying(event) == "1-0"
    assert len(calls) == 3
    # ... and gives up (so Airflow retries the task) once the budget is spent.
    calls.clear()
    monkeypatch.setattr(pipeline, "publish", lambda e: (_ for _ in ()).throw(redis.ConnectionError("down")))
    with pytest.raises(redis.ConnectionError):
        pipeline.publish_retrying(event, budget_s=0.0)


def test_the_single_task_decides_and_publishes_once(
    redis_client: redis.Redis, trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISK_MODEL_DIR", str(trained_model_dir))
    event = new_signup(rng=random.Random(4))
    run_id = f"signup__{event['event_id']}"
    decided = pipeline.decide_and_publish(conf_for(event), None, run_id)
    # A retried task publishes nothing more.
    assert pipeline.decide_and_publish(conf_for(event), None, run_id)["decision"] == decided["decision"]
    [decision] = decisions(redis_client)
    assert decision["event_id"] == event["event_id"]
    assert decision["decision"] == decided["decision"] in ("approve", "review", "decline")
    assert decision["run_id"] == run_id
    assert {"accepted_at", "enriched_at", "scored_at", "decided_at"} <= set(decision["timestamps"])


def test_a_run_without_params_is_refused_with_a_clear_error() -> None:
    with pytest.raises(pipeline.MissingParams, match="run 'manual__1' has no params"):
        pipeline.decide_and_publish(None, None, "manual__1")
    with pytest.raises(ValueError, match="has no params"):
        pipeline.enrich(None, None, "manual__1")


def test_stepwise_publish_answers_review_with_the_first_failed_step(redis_client: redis.Redis) -> None:
    event = new_signup(rng=random.Random(5))
    enriched = {"event_id": event["event_id"]}
    ti = FakeTaskInstance({("enrich", "return_value"): enriched, ("score", "error"): "ValueError: no model"})
    with pytest.raises(AirflowFailException, match="stage 'score' failed: ValueError: no model"):
        pipeline.publish_decided(conf_for(event), ti, f"signup__{event['event_id']}")
    [decision] = decisions(redis_client)
    assert decision["decision"] == "review"
    assert decision["error"] == "stage 'score' failed: ValueError: no model"
    # A step that never ran (its upstream failed) is named as such.
    assert pipeline.first_failure(FakeTaskInstance({})) == "stage 'enrich' failed (upstream failure)"


def test_a_failed_step_keeps_its_error_for_publish() -> None:
    pushed = {}
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}))
    pipeline.remember_failure({"ti": ti, "exception": KeyError("credit_amount")})
    assert pushed == {"error": "KeyError: 'credit_amount'"}
