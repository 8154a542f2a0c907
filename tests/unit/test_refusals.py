"""Every refused signup gets an answer (refusal.v1.json) on its decision key and channel, in
the dead letter's own transaction; a refusal never covers a decision or another app's
signup. Against a real Redis, the listener connecting as its ACL user."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

import redis
from jsonschema import Draft202012Validator

from listener.consumer import Listener
from onboarding.decision import get_decision, publish_decision
from onboarding.keys import decision_key
from onboarding.publisher import publish_raw, publish_signup
from onboarding.refusal import message_for, refusal_schema
from risk.samples import new_signup
from tests.unit.test_listener import SETTINGS, FakeAirflow, dead_letters
from tests.unit.test_redis_acl import acl_users  # noqa: F401 (fixture)
from tests.unit.test_review_queue import provisional

SIGNUPS = SETTINGS.streams.signups_stream
DECISIONS = SETTINGS.streams.decisions_stream


def answer(client: redis.Redis, event_id: str) -> dict | None:
    raw = client.get(decision_key(DECISIONS, event_id))
    return json.loads(raw) if raw else None


def test_a_refused_signup_is_answered_with_its_reason_on_key_and_channel(
    redis_client: redis.Redis,
    acl_users: Callable[[str], redis.Redis],  # noqa: F811 (the fixture imported above)
) -> None:
    bad = new_signup(event_id="evt-refused-1")
    bad["application"]["purpose"] = "yacht"
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(decision_key(DECISIONS, "evt-refused-1"))
    publish_raw(redis_client, SIGNUPS, json.dumps(bad))
    started = time.monotonic()
    Listener(acl_users("listener"), FakeAirflow(), SETTINGS).run(burst=True)
    refusal = answer(redis_client, "evt-refused-1")
    assert refusal is not None
    assert time.monotonic() - started < 1.0
    assert list(Draft202012Validator(refusal_schema()).iter_errors(refusal)) == []
    assert refusal["kind"] == "refusal" and refusal["reason"] == "invalid_value"
    assert refusal["user_id"] == bad["user_id"] and refusal["retryable"] is False
    assert "application.purpose" in refusal["message"] and "send it again" in refusal["message"]
    messages = [pubsub.get_message(timeout=1) for _ in range(3)]
    assert [json.loads(m["data"])["reason"] for m in messages if m] == ["invalid_value"]
    assert [d["reason"] for d in dead_letters(redis_client)] == ["invalid_value"]
    # A refusal is not a decision: the decisions stream holds decisions only.
    assert redis_client.xlen(DECISIONS) == 0
    # Fixed and sent again with the same id: decided, and the decision replaces the refusal.
    publish_signup(redis_client, SIGNUPS, new_signup(event_id="evt-refused-1"))
    airflow = FakeAirflow()
    Listener(redis_client, airflow, SETTINGS).run(burst=True)
    assert list(airflow.runs) == ["signup__evt-refused-1"]
    publish_decision(redis_client, DECISIONS, provisional("evt-refused-1", decision="approve"))
    decided = get_decision(redis_client, DECISIONS, "evt-refused-1")
    assert decided is not None and decided.decision == "approve"


def test_an_oversize_signup_is_answered_from_the_event_id_at_its_start(redis_client: redis.Redis) -> None:
    event = new_signup(event_id="evt-big-1")
    event["padding"] = "x" * 100_000
    publish_raw(redis_client, SIGNUPS, json.dumps(event))
    Listener(redis_client, FakeAirflow(), SETTINGS).run(burst=True)
    refusal = answer(redis_client, "evt-big-1")
    assert refusal is not None and refusal["reason"] == "oversize"


def test_with_answers_switched_off_a_refused_signup_is_only_dead_lettered(redis_client: redis.Redis) -> None:
    bad = new_signup(event_id="evt-unanswered-1")
    bad["application"]["purpose"] = "yacht"
    publish_raw(redis_client, SIGNUPS, json.dumps(bad))
    Listener(redis_client, FakeAirflow(), replace(SETTINGS, answer_refusals=False)).run(burst=True)
    assert [d["reason"] for d in dead_letters(redis_client)] == ["invalid_value"]
    assert answer(redis_client, "evt-unanswered-1") is None


def test_a_refusal_never_covers_a_decision_or_an_accepted_signup_of_the_same_id(redis_client: redis.Redis) -> None:
    # A decision is out: a later malformed entry with its id leaves the decision in place.
    publish_decision(redis_client, DECISIONS, provisional("evt-done", decision="decline"))
    stale = new_signup(event_id="evt-done")
    stale["application"]["job"] = 7
    publish_raw(redis_client, SIGNUPS, json.dumps(stale))
    # A valid signup was accepted (in flight): a malformed entry carrying its id - another
    # app's, or an impostor's - does not answer the waiting app.
    publish_signup(redis_client, SIGNUPS, new_signup(event_id="evt-flight"))
    impostor = new_signup(event_id="evt-flight")
    impostor["application"]["housing"] = "castle"
    publish_raw(redis_client, SIGNUPS, json.dumps(impostor))
    # The same id with other valid content: event_id_reused, not answered on the first's key.
    publish_signup(redis_client, SIGNUPS, new_signup(event_id="evt-reuse"))
    publish_signup(redis_client, SIGNUPS, new_signup(event_id="evt-reuse", user_id="someone-else"))
    Listener(redis_client, FakeAirflow(), SETTINGS).run(burst=True)
    kept = answer(redis_client, "evt-done")
    assert kept is not None and kept["decision"] == "decline"
    assert answer(redis_client, "evt-flight") is None
    assert answer(redis_client, "evt-reuse") is None
    assert sorted(d["reason"] for d in dead_letters(redis_client)) == ["event_id_reused", "invalid_value", "wrong_type"]


def test_service_side_refusals_say_they_will_be_replayed() -> None:
    assert "replay" in message_for("max_deliveries", "delivered 6 times")
    assert "send it again" not in message_for("internal_error", "boom")
    assert len(message_for("invalid_value", "x" * 2000)) == 500
