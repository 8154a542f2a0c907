"""The consumer loop in burst mode, against a real Redis and a recording fake Airflow."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import redis

from listener.consumer import Listener
from listener.metrics import ListenerMetrics
from listener.settings import ListenerSettings
from onboarding.airflow import DagRun, TriggerOutcome
from onboarding.decision import DecisionEvent, publish_decision
from onboarding.errors import AirflowRejected, AirflowUnavailable
from onboarding.keys import run_id_for
from onboarding.publisher import publish_raw, publish_signup
from onboarding.settings import StreamSettings
from risk.samples import new_signup
from tests.conftest import TEST_REDIS_URL

SETTINGS = ListenerSettings(
    streams=StreamSettings(redis_url=TEST_REDIS_URL),
    consumer="test-consumer",
    block_ms=50,
    retry_initial_s=0.01,
    retry_max_s=0.02,
)


class FakeAirflow:
    """Records triggers; fails the next `fail_next` calls with the given error."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.calls = 0
        self.failures: list[Exception] = []

    def trigger(self, run_id: str, conf: dict[str, Any]) -> TriggerOutcome:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        if run_id in self.runs:
            return TriggerOutcome.ALREADY_EXISTS
        self.runs[run_id] = conf
        return TriggerOutcome.CREATED

    def get_run(self, run_id: str) -> DagRun | None:
        conf = self.runs.get(run_id)
        return None if conf is None else DagRun(run_id=run_id, state="queued", conf=conf)


def pending_count(client: redis.Redis) -> int:
    return client.xpending(SETTINGS.streams.signups_stream, SETTINGS.group)["pending"]


def dead_letters(client: redis.Redis) -> list[dict[str, str]]:
    entries = client.xrange(SETTINGS.streams.dead_letter_stream)
    return [{k.decode(): v.decode(errors="replace") for k, v in fields.items()} for _id, fields in entries]


def test_valid_signups_trigger_one_run_each_and_are_acknowledged(redis_client: redis.Redis) -> None:
    airflow = FakeAirflow()
    events = [new_signup(rng=random.Random(i)) for i in range(5)]
    for event in events:
        publish_signup(redis_client, SETTINGS.streams.signups_stream, event)
    settled = Listener(redis_client, airflow, SETTINGS).run(burst=True)
    assert settled == 5
    assert set(airflow.runs) == {f"signup__{e['event_id']}" for e in events}
    conf = airflow.runs[f"signup__{events[0]['event_id']}"]
    assert conf["user_id"] == events[0]["user_id"] and conf["application"] == events[0]["application"]
    assert conf["accepted_at"]
    assert pending_count(redis_client) == 0


def test_invalid_events_are_dead_lettered_with_reason_and_original_payload(redis_client: redis.Redis) -> None:
    airflow = FakeAirflow()
    stream = SETTINGS.streams.signups_stream
    publish_raw(redis_client, stream, b"{oops")
    bad_age = new_signup(rng=random.Random(1))
    bad_age["application"]["age_years"] = 3
    publish_raw(redis_client, stream, json.dumps(bad_age))
    redis_client.xadd(stream, {"something": "else"})
    publish_signup(redis_client, stream, new_signup(rng=random.Random(2)))
    metrics = ListenerMetrics()
    assert Listener(redis_client, airflow, SETTINGS, metrics).run(burst=True) == 4
    letters = dead_letters(redis_client)
    assert [d["reason"] for d in letters] == ["not_json", "out_of_range", "missing_payload"]
    assert letters[0]["original.payload"] == "{oops"
    assert "application.age_years" in letters[1]["detail"]
    assert len(airflow.runs) == 1
    assert pending_count(redis_client) == 0
    assert metrics.registry.get_sample_value("onboarding_listener_dead_letters_total", {"reason": "not_json"}) == 1


def test_airflow_outage_is_retried_and_nothing_is_lost(redis_client: redis.Redis) -> None:
    airflow = FakeAirflow()
    airflow.failures = [AirflowUnavailable("connection", "refused")] * 3 + [AirflowUnavailable("server_error", "503")]
    event = new_signup(rng=random.Random(5))
    publish_signup(redis_client, SETTINGS.streams.signups_stream, event)
    assert Listener(redis_client, airflow, SETTINGS).run(burst=True) == 1
    assert airflow.calls == 5
    assert list(airflow.runs) == [f"signup__{event['event_id']}"]
    assert dead_letters(redis_client) == []


def test_input_airflow_rejects_is_dead_lettered_not_retried(redis_client: redis.Redis) -> None:
    airflow = FakeAirflow()
    airflow.failures = [AirflowRejected("invalid_params", "Invalid input for param application")]
    publish_signup(redis_client, SETTINGS.streams.signups_stream, new_signup())
    assert Listener(redis_client, airflow, SETTINGS).run(burst=True) == 1
    assert airflow.calls == 1
    [letter] = dead_letters(redis_client)
    assert letter["reason"] == "rejected_by_airflow"
    assert "param application" in letter["detail"]


def test_shutdown_during_outage_leaves_the_entry_pending_for_the_next_start(redis_client: redis.Redis) -> None:
    airflow = FakeAirflow()
    listener = Listener(redis_client, airflow, SETTINGS)

    class StopDuringOutage(FakeAirflow):
        def trigger(self, run_id: str, conf: dict[str, Any]) -> TriggerOutcome:
            listener.stop()  # SIGTERM arrives while Airflow is down
            raise AirflowUnavailable("connection", "refused")

    listener.airflow = StopDuringOutage()
    event = new_signup()
    publish_signup(redis_client, SETTINGS.streams.signups_stream, event)
    assert listener.run(burst=True) == 0
    assert pending_count(redis_client) == 1
    # The restarted consumer (same name) re-reads its own pending entry first.
    restarted = Listener(redis_client, airflow, SETTINGS)
    assert restarted.run(burst=True) == 1
    assert list(airflow.runs) == [f"signup__{event['event_id']}"]
    assert pending_count(redis_client) == 0


def test_redelivered_event_reports_the_existing_run(redis_client: redis.Redis) -> None:
    airflow = FakeAirflow()
    event = new_signup()
    publish_signup(redis_client, SETTINGS.streams.signups_stream, event)
    publish_signup(redis_client, SETTINGS.streams.signups_stream, event)  # the app retried
    metrics = ListenerMetrics()
    assert Listener(redis_client, airflow, SETTINGS, metrics).run(burst=True) == 2
    assert len(airflow.runs) == 1
    assert metrics.registry.get_sample_value("onboarding_listener_events_total", {"outcome": "duplicate"}) == 1


def test_a_resent_signup_whose_decision_is_out_gets_no_run(redis_client: redis.Redis) -> None:
    """Its run may be archived (7 days) long before the publish marker expires (30 days):
    the listener asks the marker, not Airflow, so the resend triggers nothing."""
    airflow = FakeAirflow()
    event = new_signup()
    publish_decision(
        redis_client,
        SETTINGS.streams.decisions_stream,
        DecisionEvent(event["event_id"], event["user_id"], "approve", 0.1, [], "v1", run_id_for(event["event_id"])),
    )
    publish_signup(redis_client, SETTINGS.streams.signups_stream, event)
    metrics = ListenerMetrics()
    assert Listener(redis_client, airflow, SETTINGS, metrics).run(burst=True) == 1
    assert airflow.calls == 0
    assert pending_count(redis_client) == 0
    assert metrics.registry.get_sample_value("onboarding_listener_events_total", {"outcome": "already_decided"}) == 1
    assert redis_client.xlen(SETTINGS.streams.decisions_stream) == 1


def test_max_messages_bounds_a_burst(redis_client: redis.Redis) -> None:
    airflow = FakeAirflow()
    for _ in range(5):
        publish_signup(redis_client, SETTINGS.streams.signups_stream, new_signup())
    listener = Listener(redis_client, airflow, replace(SETTINGS, batch_size=2))
    assert listener.run(burst=True, max_messages=3) == 3
    assert len(airflow.runs) == 3
