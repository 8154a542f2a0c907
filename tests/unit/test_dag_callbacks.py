"""The onboarding DAG's task body and callbacks (airflow_adapter.tasks), and the benchmark's stepwise
shape (benchmarks.stepwise), answer every applicant, once."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from airflow.sdk.exceptions import AirflowFailException

from airflow_adapter import tasks
from benchmarks import stepwise
from onboarding.backoff import Backoff
from onboarding.decision import DecisionEvent, decision_errors, publish_decision
from onboarding.schema import validate_signup
from risk import steps
from risk.publishing import Publisher
from risk.records import Decided
from risk.samples import new_signup
from tests.conftest import TEST_REDIS_URL


@pytest.fixture(autouse=True)
def test_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    tasks.settings.cache_clear()  # read once per process: read again with this environment
    yield
    tasks.settings.cache_clear()


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
    tasks.answer_failed_run(context_for(event))
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
    tasks.answer_failed_run(context_for(event))
    assert redis_client.xlen("decisions") == 1


def test_a_step_failing_for_good_answers_review_with_the_stage(redis_client: redis.Redis) -> None:
    event = new_signup(rng=random.Random(3))
    conf = conf_for(event)

    def broken_model():
        raise FileNotFoundError("model version 'does-not-exist' is not in the registry")

    with pytest.raises(steps.StageFailed) as failed:
        steps.run_stages(conf, conf["accepted_at"], "2026-11-22T10:00:01+00:00", broken_model)
    context = {**context_for(event), "exception": failed.value}
    tasks.answer_failed_task(context)
    [decision] = decisions(redis_client)
    assert decision["event_id"] == event["event_id"]
    assert decision["decision"] == "review"
    assert decision["error"].startswith("stage 'score' failed: FileNotFoundError")
    assert "does-not-exist" in decision["error"]
    assert decision["timestamps"]["accepted_at"] == "2026-11-22T10:00:00+00:00"
    # The DAG's backstop then finds the applicant answered and adds nothing.
    tasks.answer_failed_run(context_for(event))
    assert redis_client.xlen("decisions") == 1


class FlakyRedis:
    """A Redis client whose first `failures` commands fail as in a failover."""

    def __init__(self, client: redis.Redis, failures: int) -> None:
        self.client = client
        self.failures = failures

    def __getattr__(self, name: str) -> object:
        if self.failures > 0:
            self.failures -= 1
            raise redis.ConnectionError("Redis is failing over")
        return getattr(self.client, name)


def test_publishing_waits_out_a_short_redis_outage(redis_client: redis.Redis) -> None:
    event = steps.decision_event(conf_for(new_signup(rng=random.Random(6))), None, "signup__x", "a failure")
    quick = Backoff(initial_s=0.01, max_s=0.01)
    flaky = FlakyRedis(redis_client, failures=2)
    entry_id = Publisher(flaky, "decisions", backoff=quick).publish_retrying(event)
    assert flaky.failures == 0
    [(published_id, _)] = redis_client.xrange("decisions")
    assert published_id.decode() == entry_id
    # ... and gives up (so Airflow retries the task) once the budget is spent.
    down = FlakyRedis(redis_client, failures=1000)
    with pytest.raises(redis.ConnectionError):
        Publisher(down, "decisions", budget_s=0.05, backoff=quick).publish_retrying(event)
    assert 1000 - down.failures > 1, "it tried more than once"


def test_the_single_task_decides_and_publishes_once(
    redis_client: redis.Redis, trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISK_MODEL_DIR", str(trained_model_dir))
    event = new_signup(rng=random.Random(4))
    run_id = f"signup__{event['event_id']}"
    decided = tasks.decide_and_publish(conf_for(event), None, run_id)
    # A retried task publishes nothing more.
    assert tasks.decide_and_publish(conf_for(event), None, run_id)["decision"] == decided["decision"]
    [decision] = decisions(redis_client)
    assert decision["event_id"] == event["event_id"]
    assert decision["decision"] == decided["decision"] in ("approve", "review", "decline")
    assert decision["run_id"] == run_id
    assert {"accepted_at", "enriched_at", "scored_at", "decided_at"} <= set(decision["timestamps"])
    # The XCom (the audit trail the archive keeps) has the JSON shape archived records have,
    # and reads back as the typed record it was.
    assert list(decided) == [
        "event_id", "user_id", "application", "derived", "timestamps",
        "score", "reason_codes", "model_version", "policy", "decision",
    ]  # fmt: skip
    assert decided["application"] == event["application"]
    assert set(decided["derived"]) == {"monthly_amount"} and set(decided["policy"]) == {"approve_max", "decline_min"}
    assert Decided.from_dict(json.loads(json.dumps(decided))).to_dict() == decided


def test_a_run_without_params_is_refused_with_a_clear_error() -> None:
    with pytest.raises(tasks.MissingParams, match="run 'manual__1' has no params"):
        tasks.decide_and_publish(None, None, "manual__1")
    with pytest.raises(ValueError, match="has no params"):
        stepwise.enrich(None, None, "manual__1")


def test_stepwise_publish_answers_review_with_the_first_failed_step(redis_client: redis.Redis) -> None:
    event = new_signup(rng=random.Random(5))
    enriched = {"event_id": event["event_id"]}
    ti = FakeTaskInstance({("enrich", "return_value"): enriched, ("score", "error"): "ValueError: no model"})
    with pytest.raises(AirflowFailException, match="stage 'score' failed: ValueError: no model"):
        stepwise.publish_decided(conf_for(event), ti, f"signup__{event['event_id']}")
    [decision] = decisions(redis_client)
    assert decision["decision"] == "review"
    assert decision["error"] == "stage 'score' failed: ValueError: no model"
    # A step that never ran (its upstream failed) is named as such.
    assert stepwise.first_failure(FakeTaskInstance({})) == "stage 'enrich' failed (upstream failure)"


def test_a_failed_step_keeps_its_error_for_publish() -> None:
    pushed = {}
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}))
    stepwise.remember_failure({"ti": ti, "exception": KeyError("credit_amount")})
    assert pushed == {"error": "KeyError: 'credit_amount'"}
