"""Decision events: one per signup, however often publishing is retried."""

from __future__ import annotations

import redis

from onboarding.decision import DecisionEvent, publish_decision, read_decisions, wait_for_decision


def event(decision: str = "approve") -> DecisionEvent:
    return DecisionEvent(
        event_id="e1",
        user_id="u1",
        decision=decision,
        score=0.1,
        reason_codes=[],
        model_version="v1",
        run_id="signup__e1",
        timestamps={"accepted_at": "2026-11-22T10:00:00+00:00"},
    )


def test_publishing_twice_appends_once(redis_client: redis.Redis) -> None:
    first, entry = publish_decision(redis_client, "decisions", event())
    again, same_entry = publish_decision(redis_client, "decisions", event("review"))
    assert (first, again) == (True, False)
    assert same_entry == entry
    decisions = read_decisions(redis_client, "decisions")
    assert [d.decision for _id, d in decisions] == ["approve"]


def test_decision_carries_latency_from_its_timestamps(redis_client: redis.Redis) -> None:
    published = event()
    published.timestamps["published_at"] = "2026-11-22T10:00:01.250000+00:00"
    publish_decision(redis_client, "decisions", published)
    found = wait_for_decision(redis_client, "decisions", "e1", timeout_s=2)
    assert found is not None
    assert found.latency_s() == 1.25


def test_waiting_for_an_unknown_event_times_out(redis_client: redis.Redis) -> None:
    publish_decision(redis_client, "decisions", event())
    assert wait_for_decision(redis_client, "decisions", "other", timeout_s=0.3) is None
