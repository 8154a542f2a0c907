"""Decision events: one per signup, however often publishing is retried."""

from __future__ import annotations

import json
import threading
import time

import redis

from onboarding.decision import (
    DecisionEvent,
    decision_errors,
    get_decision,
    publish_decision,
    read_decisions,
    wait_for_decision,
)
from onboarding.keys import decision_key


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


def valid(decision: str = "approve", **changes: object) -> dict:
    data = event(decision).to_dict()
    data["timestamps"] |= {"occurred_at": "2026-11-22T09:59:59+00:00", "published_at": "2026-11-22T10:00:01+00:00"}
    return data | changes


def test_the_contract_accepts_each_outcome_and_refuses_what_an_app_could_not_read() -> None:
    assert decision_errors(valid("approve")) == []
    assert (
        decision_errors(valid("decline", reason_codes=[{"code": "checking_account", "text": "t", "contribution": 1.2}]))
        == []
    )
    failed = valid("review", score=None, model_version=None, error="task_failure")
    failed["reason_codes"] = [
        {"code": "pipeline_failed", "text": "Automated assessment unavailable", "contribution": None}
    ]
    assert decision_errors(failed) == []
    broken = {
        "unknown outcome": valid("maybe"),
        "an error with approve": valid("approve", error="boom", score=None),
        "no score without an error": valid("review", score=None),
        "score above 1": valid(score=1.5),
        "naive timestamp": valid(
            timestamps={"occurred_at": "2026-11-22T09:59:59", "published_at": "2026-11-22T10:00:01Z"}
        ),
        "no published_at": valid(timestamps={"occurred_at": "2026-11-22T09:59:59+00:00"}),
        "version 2": valid(schema_version=2),
        "hostile event id": valid(event_id="../x"),
        "code with spaces": valid(reason_codes=[{"code": "Bad Code", "text": "t", "contribution": 1}]),
    }
    assert {name: bool(decision_errors(data)) for name, data in broken.items()} == {name: True for name in broken}
    missing = valid()
    del missing["run_id"]
    assert decision_errors(missing) == ["(event): 'run_id' is a required property"]


def test_the_decision_is_stored_under_its_event_key_for_the_streams_retention(redis_client: redis.Redis) -> None:
    published = event()
    publish_decision(redis_client, "decisions", published, decision_ttl_s=600)
    stored = json.loads(redis_client.get(decision_key("decisions", "e1")))
    assert stored == published.to_dict()
    assert 590 <= redis_client.ttl(decision_key("decisions", "e1")) <= 600
    assert get_decision(redis_client, "decisions", "e1") == published
    # A second publish changes nothing: the first decision stands everywhere.
    publish_decision(redis_client, "decisions", event("decline"), decision_ttl_s=600)
    assert get_decision(redis_client, "decisions", "e1").decision == "approve"  # type: ignore[union-attr]
    assert get_decision(redis_client, "decisions", "other") is None


class NoScan(redis.Redis):
    """A client that fails the test if anything reads the stream."""

    def xread(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the wait read the stream")

    xrange = xrevrange = xread


def test_waiting_for_one_decision_reads_no_stream_and_sees_one_published_later(redis_client: redis.Redis) -> None:
    from tests.conftest import TEST_REDIS_URL

    client = NoScan.from_url(TEST_REDIS_URL)
    for i in range(500):  # other apps' decisions: the wait must not go through them
        publish_decision(redis_client, "decisions", DecisionEvent(f"x{i}", "u", "approve", 0.1, [], "v1", "r"))
    later = threading.Timer(0.3, lambda: publish_decision(redis_client, "decisions", event("decline")))
    started = time.monotonic()
    later.start()
    found = wait_for_decision(client, "decisions", "e1", timeout_s=10)
    waited = time.monotonic() - started
    later.join()
    assert found is not None and found.decision == "decline"
    assert 0.25 <= waited < 5
    # Published before the wait began: found by the key at once.
    assert wait_for_decision(client, "decisions", "x7", timeout_s=0.01) is not None


def test_the_announcement_is_sent_once_per_event(redis_client: redis.Redis) -> None:
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(decision_key("decisions", "e1"))
    for outcome in ("approve", "review", "approve"):
        publish_decision(redis_client, "decisions", event(outcome))
    messages = []
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message:
            messages.append(json.loads(message["data"])["decision"])
    pubsub.close()
    assert messages == ["approve"]


def test_an_apps_decision_is_also_appended_to_its_feed_once_and_the_feed_is_capped(redis_client: redis.Redis) -> None:
    """`app` (the run's param): the same payload goes to `<decisions>:app:<app>` in the same
    call as the shared stream, once per event id, with or without a decision record; a
    signup without an app reaches no feed; the feed is capped with MAXLEN ~."""
    import pytest

    from onboarding.functions import fcall
    from onboarding.keys import app_feed_stream

    feed = app_feed_stream("decisions", "web")
    mine = DecisionEvent("web:e1", "u1", "approve", 0.1, [], "v1", "signup__web:e1")
    assert publish_decision(redis_client, "decisions", mine, app="web")[0] is True
    assert publish_decision(redis_client, "decisions", mine, app="web", record={"event_id": "web:e1"})[0] is False
    ((_id, fields),) = redis_client.xrange(feed)
    ((_shared_id, shared),) = redis_client.xrange("decisions")
    assert fields == shared and fields[b"event_id"] == b"web:e1"
    assert json.loads(fields[b"payload"]) == json.loads(redis_client.get(decision_key("decisions", "web:e1")) or "")
    with_record = DecisionEvent("web:e2", "u2", "decline", 0.9, [], "v1", "signup__web:e2")
    publish_decision(redis_client, "decisions", with_record, record={"event_id": "web:e2"}, app="web")
    assert redis_client.xlen(feed) == 2 and redis_client.xlen("decisions:records") == 1
    publish_decision(redis_client, "decisions", DecisionEvent("e3", "u3", "approve", 0.1, [], "v1", None))
    assert redis_client.xlen("decisions") == 3 and redis_client.xlen(feed) == 2
    assert sorted(redis_client.scan_iter("decisions:app:*")) == [feed.encode()]
    # The cap: XADD ... MAXLEN ~ n keeps at least n entries and trims whole nodes beyond them.
    node = int(redis_client.config_get("stream-node-max-entries")["stream-node-max-entries"])
    for n in range(3 * node):
        capped = DecisionEvent(f"web:c{n}", "u", "approve", 0.1, [], "v1", None)
        publish_decision(redis_client, "decisions", capped, app="web", app_feed_maxlen=10)
    assert 10 <= redis_client.xlen(feed) <= 10 + node < 3 * node
    # A name that is not an app's, and a feed key that is not the app's, write nothing.
    with pytest.raises(ValueError, match="must match"):
        publish_decision(redis_client, "decisions", DecisionEvent("x:e", "u", "approve", 0.1, [], "v1", None), app="X*")
    keys_ = [
        *("decisions", "decisions:published:web:e9", "decisions:event:web:e9", "decisions:review:case:web:e9"),
        *("decisions:review:queue", "decisions:review:history", "decisions:records", "decisions:app:mobile"),
    ]
    args = ["{}", 60, "web:e9", 60, "approve", "u", "t", "0", "", "", 10, "web"]
    with pytest.raises(redis.ResponseError, match="app feed key"):
        fcall(redis_client, "publish_decision", keys_, args)
    assert not redis_client.exists("decisions:published:web:e9", "decisions:app:mobile")
