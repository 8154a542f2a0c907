"""The review queue against a real Redis: a `review` decision opens one case in the same
step; reviewers claim, release and decide; the final decision is published exactly once,
also when reviewers race (threads and processes) or a reviewer retries after a lost reply."""

from __future__ import annotations

import json
import multiprocessing
import random
import threading

import pytest
import redis

from onboarding import keys
from onboarding.decision import DecisionEvent, decision_errors, get_decision, publish_decision, utc_now
from review import CaseConflict, CaseNotFound, ReviewError, ReviewQueue, State
from tests.conftest import TEST_REDIS_URL

STREAM = "decisions"


def provisional(event_id: str, decision: str = "review", error: str | None = None) -> DecisionEvent:
    return DecisionEvent(
        event_id=event_id,
        user_id=f"user-{event_id}",
        decision=decision,
        score=None if error else 0.42,
        reason_codes=[{"code": "checking_account", "text": "Checking account status", "contribution": 0.3}],
        model_version=None if error else "v1",
        run_id=f"signup__{event_id}",
        timestamps={"occurred_at": utc_now()},
        error=error,
    )


def test_a_review_opens_one_case_and_other_decisions_open_none(redis_client: redis.Redis) -> None:
    publish_decision(redis_client, STREAM, provisional("evt-r1"))
    publish_decision(redis_client, STREAM, provisional("evt-r1"))  # a retried task
    publish_decision(redis_client, STREAM, provisional("evt-a1", decision="approve"))
    publish_decision(redis_client, STREAM, provisional("evt-f1", error="StageFailed: score"))
    queue = ReviewQueue(redis_client, STREAM)
    cases = queue.pending()
    assert [c.case_id for c in cases] == ["evt-r1", "evt-f1"]
    case = queue.get("evt-r1")
    assert case.state is State.OPEN and case.user_id == "user-evt-r1" and case.score == 0.42
    assert case.why() == "borderline score 0.420"
    assert queue.get("evt-f1").why().startswith("automated assessment unavailable: StageFailed")
    assert abs((case.deadline_epoch - json_time(case.opened_at)) - keys.REVIEW_DEADLINE_S) < 1
    assert [h.action for h in queue.history("evt-r1")] == ["opened"]
    provisional_seen = get_decision(redis_client, STREAM, "evt-r1")
    assert provisional_seen is not None and provisional_seen.decision == "review" and not provisional_seen.is_final


def json_time(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_claim_decide_publishes_the_final_decision_on_key_channel_and_stream(redis_client: redis.Redis) -> None:
    publish_decision(redis_client, STREAM, provisional("evt-r2"))
    queue = ReviewQueue(redis_client, STREAM)
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.decision_key(STREAM, "evt-r2"))
    assert queue.claim("evt-r2", "alice").state is State.CLAIMED
    with pytest.raises(CaseConflict, match="claimed by alice"):
        queue.decide("evt-r2", "bob", "approve", "looks fine")
    decided = queue.decide("evt-r2", "alice", "decline", "income not verifiable")
    assert decided.now
    final = get_decision(redis_client, STREAM, "evt-r2")
    assert final is not None and final.decision == "decline" and final.is_final
    assert final.review is not None and final.review["reviewer_id"] == "alice"
    assert final.review["reason"] == "income not verifiable"
    assert decision_errors(final.to_dict()) == []
    messages = [pubsub.get_message(timeout=1) for _ in range(3)]
    announced = [json.loads(m["data"]) for m in messages if m is not None]
    assert [m["final"] for m in announced] == [True]
    entries = redis_client.xrange(STREAM)
    payloads = [json.loads(f[b"payload"]) for _i, f in entries]
    assert [(p["decision"], p["final"]) for p in payloads] == [("review", False), ("decline", True)]
    assert queue.pending() == []
    assert [h.action for h in queue.history("evt-r2")] == ["opened", "claimed", "decided"]
    assert queue.history("evt-r2")[-1].actor == "alice"


def test_a_decided_case_cannot_be_overwritten_and_a_retry_is_a_no_op(redis_client: redis.Redis) -> None:
    publish_decision(redis_client, STREAM, provisional("evt-r3"))
    queue = ReviewQueue(redis_client, STREAM)
    first = queue.decide("evt-r3", "alice", "approve", "verified by phone")
    again = queue.decide("evt-r3", "alice", "approve", "verified by phone")  # the reply was lost
    assert first.now and not again.now and again.entry_id == first.entry_id
    with pytest.raises(CaseConflict, match="already decided"):
        queue.decide("evt-r3", "alice", "decline", "changed my mind")
    with pytest.raises(CaseConflict, match="already decided"):
        queue.decide("evt-r3", "bob", "decline", "overrule")
    with pytest.raises(CaseConflict):
        queue.claim("evt-r3", "bob")
    assert redis_client.xlen(STREAM) == 2
    final = get_decision(redis_client, STREAM, "evt-r3")
    assert final is not None and final.decision == "approve"


def test_release_returns_a_case_to_the_queue_and_bad_requests_are_refused(redis_client: redis.Redis) -> None:
    publish_decision(redis_client, STREAM, provisional("evt-r4"))
    queue = ReviewQueue(redis_client, STREAM)
    queue.claim("evt-r4", "alice")
    with pytest.raises(CaseConflict, match="claimed by alice"):
        queue.release("evt-r4", "bob")
    assert queue.release("evt-r4", "alice").state is State.OPEN
    queue.claim("evt-r4", "bob")
    assert queue.release("evt-r4", "lead", force=True).state is State.OPEN
    history = queue.history("evt-r4")
    assert [(h.action, h.actor) for h in history] == [
        ("opened", "onboarding"),
        ("claimed", "alice"),
        ("released", "alice"),
        ("claimed", "bob"),
        ("released", "lead"),
    ]
    assert history[-1].detail == "released the claim of bob"
    with pytest.raises(ReviewError, match="reason is required"):
        queue.decide("evt-r4", "alice", "approve", "  ")
    with pytest.raises(ReviewError, match="approve, decline"):
        queue.decide("evt-r4", "alice", "review", "again")
    with pytest.raises(CaseNotFound):
        queue.claim("evt-missing", "alice")
    assert queue.stats().depth == 1


def test_racing_reviewers_in_threads_decide_each_case_once(redis_client: redis.Redis) -> None:
    cases = [f"evt-race-{i}" for i in range(20)]
    for case_id in cases:
        publish_decision(redis_client, STREAM, provisional(case_id))
    wins: list[tuple[str, str]] = []
    lock = threading.Lock()

    def reviewer(name: str) -> None:
        queue = ReviewQueue(redis.Redis.from_url(TEST_REDIS_URL), STREAM)
        order = cases[:]
        random.Random(name).shuffle(order)
        for case_id in order:
            try:
                result = queue.decide(case_id, name, random.choice(["approve", "decline"]), f"decided by {name}")
            except CaseConflict:
                continue
            if result.now:
                with lock:
                    wins.append((case_id, name))

    threads = [threading.Thread(target=reviewer, args=(f"r{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c for c, _ in wins) == sorted(cases)
    finals = [json.loads(f[b"payload"]) for _i, f in redis_client.xrange(STREAM)]
    finals = [p for p in finals if p["final"]]
    assert sorted(p["event_id"] for p in finals) == sorted(cases)
    winner = dict(wins)
    assert all(p["review"]["reviewer_id"] == winner[p["event_id"]] for p in finals)


def _process_reviewer(name: str, cases: list[str], out: multiprocessing.Queue) -> None:
    queue = ReviewQueue(redis.Redis.from_url(TEST_REDIS_URL), STREAM)
    won = []
    for case_id in cases:
        try:
            if queue.decide(case_id, name, "approve", "race").now:
                won.append(case_id)
        except CaseConflict:
            pass
    out.put((name, won))


def test_racing_reviewer_processes_decide_each_case_once(redis_client: redis.Redis) -> None:
    cases = [f"evt-prace-{i}" for i in range(30)]
    for case_id in cases:
        publish_decision(redis_client, STREAM, provisional(case_id))
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_process_reviewer, args=(f"p{i}", cases, out)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    won = [c for _name, cs in results for c in cs]
    assert sorted(won) == sorted(cases)
    finals = [json.loads(f[b"payload"]) for _i, f in redis_client.xrange(STREAM)]
    assert sum(1 for p in finals if p["final"]) == len(cases)


def test_the_task_publisher_gives_a_case_the_configured_deadline(redis_client: redis.Redis) -> None:
    from risk.publishing import Publisher
    from risk.settings import RiskSettings

    settings = RiskSettings.from_env({"REDIS_URL": TEST_REDIS_URL, "REVIEW_DEADLINE_S": "3600"})
    assert settings.review_deadline_s == 3600
    publisher = Publisher.from_settings(settings)
    assert publisher.review_deadline_s == 3600
    Publisher(redis_client, STREAM, review_deadline_s=3600).publish(provisional("evt-deadline"))
    case = ReviewQueue(redis_client, STREAM).get("evt-deadline")
    assert abs((case.deadline_epoch - json_time(case.opened_at)) - 3600) < 1


def test_an_apps_case_keeps_its_app_and_its_final_decision_reaches_the_apps_feed_once(
    redis_client: redis.Redis,
) -> None:
    """The publish step stores the app on the case (the run's `app`); the reviewer's final
    decision is appended to that app's feed in the same step as the shared stream, once. The
    function writes nothing when the feed key it is given is not the case's app's."""
    from onboarding.functions import fcall

    publish_decision(redis_client, STREAM, provisional("web:evt-r9"), app="web")
    publish_decision(redis_client, STREAM, provisional("evt-r10"))  # from the shared stream
    queue = ReviewQueue(redis_client, STREAM, app_feed_maxlen=50)
    assert queue.get("web:evt-r9").app == "web" and queue.get("evt-r10").app is None
    case = queue.get("web:evt-r9")
    wrong_feed = [
        keys.review_case_key(STREAM, case.case_id),
        keys.review_queue_key(STREAM),
        keys.review_history_key(STREAM),
        STREAM,
        keys.decision_key(STREAM, case.case_id),
        keys.final_marker_key(STREAM, case.case_id),
        keys.app_feed_stream(STREAM, "mobile"),
    ]
    args = ["alice", utc_now(), case.case_id, "approve", "ok", "{}", 60, 60, case.version, 60, 50]
    assert fcall(redis_client, "review_decide", wrong_feed, args) == [b"app_feed", b"web"]
    assert queue.get("web:evt-r9").state is State.OPEN and not redis_client.exists(wrong_feed[-1])
    assert queue.decide("web:evt-r9", "alice", "approve", "documents checked").now
    assert not queue.decide("web:evt-r9", "alice", "approve", "documents checked").now  # a retry: nothing more
    queue.decide("evt-r10", "bob", "decline", "income not verified")
    feed = keys.app_feed_stream(STREAM, "web")
    fed = [(i.decode(), json.loads(f[b"payload"])) for i, f in redis_client.xrange(feed)]
    assert [(p["event_id"], p["decision"], p["final"]) for _i, p in fed] == [
        ("web:evt-r9", "review", False),
        ("web:evt-r9", "approve", True),
    ]
    assert fed[1][1]["review"]["reviewer_id"] == "alice" and fed[1][1] == json.loads(
        redis_client.get(keys.decision_key(STREAM, "web:evt-r9")) or ""
    )
    assert redis_client.xlen(STREAM) == 4
    assert sorted(redis_client.scan_iter(f"{STREAM}:app:*")) == [feed.encode()]
