"""Delivery guarantees of the consumer, in burst mode against a real Redis."""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from typing import Any

import redis

from listener.consumer import Listener, fingerprint
from listener.deadletters import list_dead_letters, replay
from listener.metrics import ListenerMetrics
from onboarding.airflow import TriggerOutcome
from onboarding.errors import AirflowUnavailable
from onboarding.publisher import publish_raw, publish_signup
from onboarding.retention import trim_stream
from onboarding.schema import validate_signup
from risk.samples import new_signup
from tests.unit.test_listener import SETTINGS, FakeAirflow, dead_letters, pending_count

STREAM = SETTINGS.streams.signups_stream
GROUP = SETTINGS.group


def leave_pending(client: redis.Redis, consumer: str, count: int) -> list[str]:
    """A consumer that reads entries and dies before acknowledging them."""
    Listener(client, FakeAirflow(), replace(SETTINGS, consumer=consumer)).ensure_group()
    reply = client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count)
    return [eid.decode() for eid, _ in reply[0][1]]


def test_entries_of_a_dead_consumer_are_claimed_and_triggered_once(redis_client: redis.Redis) -> None:
    events = [new_signup(rng=random.Random(i)) for i in range(3)]
    for event in events:
        publish_signup(redis_client, STREAM, event)
    leave_pending(redis_client, "crashed", 3)
    time.sleep(0.06)
    airflow = FakeAirflow()
    metrics = ListenerMetrics()
    survivor = Listener(redis_client, airflow, replace(SETTINGS, claim_idle_ms=50), metrics)
    assert survivor.run(burst=True) == 3
    assert set(airflow.runs) == {f"signup__{e['event_id']}" for e in events}
    assert pending_count(redis_client) == 0
    assert metrics.registry.get_sample_value("onboarding_listener_reclaimed_total") == 3


def test_entries_are_not_claimed_before_the_idle_time(redis_client: redis.Redis) -> None:
    publish_signup(redis_client, STREAM, new_signup())
    leave_pending(redis_client, "busy", 1)
    airflow = FakeAirflow()
    assert Listener(redis_client, airflow, replace(SETTINGS, claim_idle_ms=60_000)).run(burst=True) == 0
    assert airflow.runs == {}
    assert pending_count(redis_client) == 1


def test_an_entry_past_max_deliveries_is_dead_lettered(redis_client: redis.Redis) -> None:
    event = new_signup()
    publish_signup(redis_client, STREAM, event)
    [entry_id] = leave_pending(redis_client, "crash-1", 1)
    for n in range(2, 4):  # two more consumers claimed it and crashed too
        redis_client.xclaim(STREAM, GROUP, f"crash-{n}", min_idle_time=0, message_ids=[entry_id])
    time.sleep(0.06)
    airflow = FakeAirflow()
    settings = replace(SETTINGS, claim_idle_ms=50, max_deliveries=3)
    assert Listener(redis_client, airflow, settings).run(burst=True) == 1
    assert airflow.runs == {}
    [letter] = dead_letters(redis_client)
    assert letter["reason"] == "max_deliveries"
    assert "delivered 4 times" in letter["detail"]
    assert json.loads(letter["original.payload"])["event_id"] == event["event_id"]


def test_event_id_reused_with_other_content_is_dead_lettered(redis_client: redis.Redis) -> None:
    first = new_signup(rng=random.Random(1))
    impostor = new_signup(rng=random.Random(2), event_id=first["event_id"])
    publish_signup(redis_client, STREAM, first)
    publish_signup(redis_client, STREAM, impostor)
    airflow = FakeAirflow()
    assert Listener(redis_client, airflow, SETTINGS).run(burst=True) == 2
    assert airflow.runs[f"signup__{first['event_id']}"]["user_id"] == first["user_id"]
    [letter] = dead_letters(redis_client)
    assert letter["reason"] == "event_id_reused"
    assert first["event_id"] in letter["detail"]


def test_a_409_for_a_run_with_other_content_is_not_taken_as_ours(redis_client: redis.Redis) -> None:
    # The fingerprint has expired, but Airflow still has a run for this event id.
    event = new_signup(rng=random.Random(3))
    airflow = FakeAirflow()
    other = new_signup(rng=random.Random(4), event_id=event["event_id"])
    airflow.runs[f"signup__{event['event_id']}"] = other | {"accepted_at": "earlier"}
    publish_signup(redis_client, STREAM, event)
    assert Listener(redis_client, airflow, SETTINGS).run(burst=True) == 1
    assert dead_letters(redis_client)[0]["reason"] == "event_id_reused"


def test_a_409_for_our_own_run_is_acknowledged(redis_client: redis.Redis) -> None:
    # A crash after Airflow accepted the run but before the acknowledgement.
    event = new_signup(rng=random.Random(5))
    publish_signup(redis_client, STREAM, event)
    leave_pending(redis_client, "crashed", 1)
    airflow = FakeAirflow()
    # What the crashed listener had sent: the validated event, as Airflow stores it.
    airflow.runs[f"signup__{event['event_id']}"] = validate_signup(event).to_dict() | {"accepted_at": "t"}
    time.sleep(0.06)
    metrics = ListenerMetrics()
    assert Listener(redis_client, airflow, replace(SETTINGS, claim_idle_ms=50), metrics).run(burst=True) == 1
    assert len(airflow.runs) == 1
    assert dead_letters(redis_client) == []
    assert metrics.registry.get_sample_value("onboarding_listener_events_total", {"outcome": "duplicate"}) == 1


def test_a_live_consumer_keeps_its_entries_while_airflow_is_down(redis_client: redis.Redis) -> None:
    for i in range(2):
        publish_signup(redis_client, STREAM, new_signup(rng=random.Random(i)))
    stolen: list[Any] = []

    class SlowOutage(FakeAirflow):
        def trigger(self, run_id: str, conf: dict[str, Any]) -> TriggerOutcome:
            self.calls += 1
            if self.calls == 1:
                time.sleep(0.3)  # a request that times out
                raise AirflowUnavailable("timeout", "timed out")
            if self.calls == 2:
                # Another listener looks for entries idle for 200 ms.
                reply = redis_client.xautoclaim(STREAM, GROUP, "other", min_idle_time=200, count=10)
                stolen.extend(reply[1])
            return super().trigger(run_id, conf)

    airflow = SlowOutage()
    assert Listener(redis_client, airflow, SETTINGS).run(burst=True) == 2
    assert stolen == []
    assert len(airflow.runs) == 2


def test_trimming_never_removes_pending_or_undelivered_entries(redis_client: redis.Redis) -> None:
    ids = [publish_raw(redis_client, STREAM, json.dumps({"n": n})) for n in range(10)]
    Listener(redis_client, FakeAirflow(), SETTINGS).ensure_group()
    reply = redis_client.xreadgroup(GROUP, "c", {STREAM: ">"}, count=6)  # 6 delivered, 4 not
    delivered = [eid.decode() for eid, _ in reply[0][1]]
    redis_client.xack(STREAM, GROUP, *delivered[:2], *delivered[3:])  # entry 2 stays pending
    # Judged a second after the last publish: with retention 0 every entry is then old enough
    # (at the same millisecond as the publishes, none would be, and the test would show nothing).
    later_s = int(ids[-1].split("-")[0]) / 1000 + 1
    removed = trim_stream(redis_client, STREAM, retention_s=0, now_s=later_s)
    assert removed == 2
    remaining = [eid.decode() for eid, _ in redis_client.xrange(STREAM)]
    assert remaining == ids[2:]
    # Once entry 2 is acknowledged, everything delivered and acknowledged can go.
    redis_client.xack(STREAM, GROUP, delivered[2])
    trim_stream(redis_client, STREAM, retention_s=0, now_s=later_s)
    assert [eid.decode() for eid, _ in redis_client.xrange(STREAM)] == ids[6:]


def test_trimming_keeps_entries_inside_the_retention_period(redis_client: redis.Redis) -> None:
    for n in range(3):
        publish_raw(redis_client, STREAM, json.dumps({"n": n}))
    assert trim_stream(redis_client, STREAM, retention_s=3600) == 0
    assert redis_client.xlen(STREAM) == 3


def test_replayed_dead_letters_are_validated_again(redis_client: redis.Redis) -> None:
    good = new_signup(rng=random.Random(8))
    publish_raw(redis_client, STREAM, "{broken")
    publish_signup(redis_client, STREAM, good)
    settings = replace(SETTINGS, max_deliveries=1)
    # Force `good` past max_deliveries: a crashed consumer held it once already.
    leave_pending(redis_client, "crash-1", 2)
    time.sleep(0.06)
    airflow = FakeAirflow()
    Listener(redis_client, airflow, replace(settings, claim_idle_ms=50)).run(burst=True)
    letters = list_dead_letters(redis_client, SETTINGS.streams.dead_letter_stream)
    assert sorted(d.reason for d in letters) == ["max_deliveries", "max_deliveries"]
    assert airflow.runs == {}
    results = replay(redis_client, SETTINGS.streams.dead_letter_stream, STREAM, letters)
    assert all(new_id for _letter, new_id in results) and len(results) == 2
    again = replay(redis_client, SETTINGS.streams.dead_letter_stream, STREAM, letters)
    assert [new_id for _letter, new_id in again] == [None, None]  # already replayed: appended once
    Listener(redis_client, airflow, SETTINGS).run(burst=True)
    reasons = [d.reason for d in list_dead_letters(redis_client, SETTINGS.streams.dead_letter_stream)]
    assert reasons == ["not_json"]  # the broken one fails validation this time
    assert list(airflow.runs) == [f"signup__{good['event_id']}"]


def test_fingerprint_ignores_what_the_listener_adds() -> None:
    event = new_signup(rng=random.Random(9))
    assert fingerprint(event) == fingerprint(event | {"accepted_at": "x"})
    # `app` too (the namespaced event id implies it): a run triggered before the listener passed
    # it is still recognised as the same event's run on a 409.
    assert fingerprint(event) == fingerprint(event | {"accepted_at": "x", "app": "web"})
    assert fingerprint(event) != fingerprint(event | {"user_id": "someone-else"})


def test_an_unforeseen_error_parks_the_entry_and_the_batch_goes_on(redis_client: redis.Redis) -> None:
    events = [new_signup(rng=random.Random(i)) for i in range(3)]
    for event in events:
        publish_signup(redis_client, STREAM, event)

    class Flaky(FakeAirflow):
        def trigger(self, run_id: str, conf: dict[str, Any]) -> TriggerOutcome:
            if conf["event_id"] == events[1]["event_id"]:
                raise ValueError("Out of range float values are not JSON compliant")
            return super().trigger(run_id, conf)

    airflow = Flaky()
    assert Listener(redis_client, airflow, SETTINGS).run(burst=True) == 3
    assert set(airflow.runs) == {f"signup__{events[0]['event_id']}", f"signup__{events[2]['event_id']}"}
    [letter] = dead_letters(redis_client)
    assert letter["reason"] == "internal_error"
    assert "ValueError" in letter["detail"]
    assert pending_count(redis_client) == 0
