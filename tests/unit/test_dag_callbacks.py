"""The DAG's failure backstop answers an unanswered applicant, and only once."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from onboarding.decision import DecisionEvent, publish_decision
from onboarding.publisher import new_signup
from onboarding.schema import validate_signup
from tests.conftest import TEST_REDIS_URL

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "realtime" / "onboarding_dag.py"


@pytest.fixture
def dag_module(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    spec = importlib.util.spec_from_file_location("onboarding_dag_under_test", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def context_for(event: dict) -> dict:
    conf = validate_signup(event).to_dict() | {"accepted_at": "2026-11-22T10:00:00+00:00"}
    return {"dag_run": SimpleNamespace(conf=conf, run_id=f"signup__{event['event_id']}"), "reason": "task_failure"}


def test_failed_run_without_answer_gets_review(dag_module, redis_client: redis.Redis) -> None:
    event = new_signup(rng=random.Random(1))
    dag_module._answer_failed_run(context_for(event))
    [(_id, fields)] = redis_client.xrange("decisions")
    decision = json.loads(fields[b"payload"])
    assert decision["event_id"] == event["event_id"]
    assert decision["decision"] == "review"
    assert decision["error"] == "task_failure"


def test_backstop_adds_nothing_when_publish_already_answered(dag_module, redis_client: redis.Redis) -> None:
    event = new_signup(rng=random.Random(2))
    publish_decision(
        redis_client,
        "decisions",
        DecisionEvent(event["event_id"], event["user_id"], "approve", 0.05, [], "v1", "r"),
    )
    dag_module._answer_failed_run(context_for(event))
    assert redis_client.xlen("decisions") == 1


def test_a_step_failing_for_good_answers_review_with_the_stage(dag_module, redis_client: redis.Redis) -> None:
    from risk import steps

    event = new_signup(rng=random.Random(3))
    conf = validate_signup(event).to_dict() | {"accepted_at": "2026-11-22T10:00:00+00:00"}

    def broken_model():
        raise FileNotFoundError("model version 'does-not-exist' is not in the registry")

    with pytest.raises(steps.StageFailed) as failed:
        steps.run_stages(conf, conf["accepted_at"], "2026-11-22T10:00:01+00:00", broken_model)
    context = {**context_for(event), "exception": failed.value}
    dag_module._answer_failed_task(context)
    [(_id, fields)] = redis_client.xrange("decisions")
    decision = json.loads(fields[b"payload"])
    assert decision["event_id"] == event["event_id"]
    assert decision["decision"] == "review"
    assert decision["error"].startswith("stage 'score' failed: FileNotFoundError")
    assert "does-not-exist" in decision["error"]
    assert decision["timestamps"]["accepted_at"] == "2026-11-22T10:00:00+00:00"
    # The DAG's backstop then finds the applicant answered and adds nothing.
    dag_module._answer_failed_run(context_for(event))
    assert redis_client.xlen("decisions") == 1


def test_publishing_waits_out_a_short_redis_outage(dag_module, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def flaky(event):
        calls.append(event)
        if len(calls) < 3:
            raise redis.ConnectionError("Redis is failing over")
        return "1-0"

    monkeypatch.setattr(dag_module, "_publish", flaky)
    monkeypatch.setattr(dag_module.time, "sleep", lambda s: None)
    event = SimpleNamespace(event_id="evt-1")
    assert dag_module._publish_retrying(event) == "1-0"
    assert len(calls) == 3
    # ... and gives up (so Airflow retries the task) once the budget is spent.
    calls.clear()
    monkeypatch.setattr(dag_module, "_publish", lambda e: (_ for _ in ()).throw(redis.ConnectionError("down")))
    with pytest.raises(redis.ConnectionError):
        dag_module._publish_retrying(event, budget_s=0.0)
