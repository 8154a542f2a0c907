"""The apps' Python client (clients/python/onboarding_client) against a real Redis and the
service's own publish, refusal and review steps: what it submits is a valid signup (checked
against the shipped schema unless told not to), what it reads is the decision the service
published, a refusal is raised as `Refused` (not a timeout, not a ContractError), a
`review` can be waited through to the reviewer's final decision, its wait reads no stream,
its feed delivers each decision until acknowledged. Sync and asyncio."""

from __future__ import annotations

import ast
import asyncio
import json
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from onboarding_client import (
    AsyncOnboardingClient,
    ContractError,
    Decision,
    OnboardingClient,
    Refusal,
    Refused,
    decision_key,
)

from onboarding import keys
from onboarding.decision import DecisionEvent, publish_decision, utc_now
from onboarding.errors import InvalidEvent
from onboarding.refusal import Refusal as ServiceRefusal
from onboarding.refusal import answer_refusal, message_for
from onboarding.schema import parse_signup, validate_signup
from review import ReviewQueue
from risk.samples import new_signup
from tests.conftest import TEST_REDIS_URL

CLIENT_DIR = Path(__file__).parents[2] / "clients" / "python" / "onboarding_client"


def decision(event_id: str, outcome: str = "approve") -> DecisionEvent:
    return DecisionEvent(
        event_id,
        "u-1",
        outcome,
        0.12,
        [{"code": "checking_account", "text": "Status of the checking account", "contribution": 0.8}],
        "model-7",
        f"signup__{event_id}",
        {"occurred_at": "2026-11-30T10:00:00+00:00"},
    )


@pytest.fixture
def client(redis_client: redis.Redis):
    app = OnboardingClient.from_url(TEST_REDIS_URL)
    yield app
    app.close()


def test_a_submitted_signup_is_one_the_service_accepts(client: OnboardingClient, redis_client: redis.Redis) -> None:
    application = new_signup()["application"]
    event_id = client.submit(application, user_id="u-42")
    again = client.submit(application, user_id="u-42", event_id=event_id)  # a retry keeps the id
    assert again == event_id and event_id.startswith("evt-")
    entries = redis_client.xrange(keys.SIGNUPS_STREAM)
    assert len(entries) == 2
    for _id, fields in entries:
        signup = validate_signup(json.loads(fields[b"payload"]))  # the listener's own check
        assert (signup.event_id, signup.user_id) == (event_id, "u-42")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"event_id": "../etc"}, "event_id"),
        ({"user_id": ""}, "user_id"),
        ({"application": {"credit_amount": float("nan")}}, "application"),
    ],
)
def test_what_the_service_would_refuse_fails_at_the_call(client: OnboardingClient, changes, message: str) -> None:
    args = {"application": {"credit_amount": 1000}, "user_id": "u", "event_id": "e-1"} | changes
    with pytest.raises(ContractError, match=message):
        client.submit(args.pop("application"), **args)
    assert client.redis.xlen(keys.SIGNUPS_STREAM) == 0


def test_the_client_names_the_services_keys() -> None:
    assert decision_key(keys.DECISIONS_STREAM, "e-1") == keys.decision_key(keys.DECISIONS_STREAM, "e-1")


def test_get_and_wait_read_the_decision_the_service_published(client: OnboardingClient, redis_client) -> None:
    assert client.get("e-1") is None
    assert client.wait("e-1", timeout_s=0.2) is None
    threading.Timer(0.3, lambda: publish_decision(redis_client, keys.DECISIONS_STREAM, decision("e-1"))).start()
    started = time.monotonic()
    found = client.wait("e-1", timeout_s=10)
    assert found is not None and 0.25 < time.monotonic() - started < 5
    assert (found.event_id, found.outcome, found.score, found.model_version) == ("e-1", "approve", 0.12, "model-7")
    assert found.reason_codes[0].code == "checking_account" and found.reason_codes[0].contribution == 0.8
    assert found.timestamps["published_at"]
    assert client.get("e-1") == found
    # No stream is read to find one decision.
    for name in ("xread", "xrange", "xrevrange"):
        setattr(client.redis, name, lambda *a, **k: pytest.fail("the client scanned the stream"))
    assert client.wait("e-1", timeout_s=1) == found


def test_a_decision_of_another_version_is_refused_clearly() -> None:
    with pytest.raises(ContractError, match="schema_version 2"):
        Decision.from_json(json.dumps({"schema_version": 2, "decision": "approve"}))
    with pytest.raises(ContractError, match="none of"):
        Decision.from_json(json.dumps({"schema_version": 1, "decision": "maybe"}))
    unknown = decision("e-9").to_dict() | {"channel": "web"}  # a new optional property: kept, not refused
    unknown["timestamps"]["published_at"] = "2026-11-30T10:00:01+00:00"
    assert Decision.from_json(json.dumps(unknown)).raw["channel"] == "web"


def test_the_feed_delivers_each_decision_until_it_is_acknowledged(client: OnboardingClient, redis_client) -> None:
    publish_decision(redis_client, keys.DECISIONS_STREAM, decision("before"))
    feed = client.feed("billing-app", "pod-1", start="$", block_s=0.2)
    for event_id in ("e-1", "e-2", "e-3"):
        publish_decision(redis_client, keys.DECISIONS_STREAM, decision(event_id))
    items = [next(feed) for _ in range(3)]
    assert [item.decision.event_id for item in items] == ["e-1", "e-2", "e-3"]  # not "before": start="$"
    items[0].ack()
    items[2].ack()
    feed.close()  # the app restarts before handling e-2
    again = client.feed("billing-app", "pod-1", block_s=0.2)
    publish_decision(redis_client, keys.DECISIONS_STREAM, decision("e-4"))
    redelivered, new = next(again), next(again)
    assert (redelivered.decision.event_id, new.decision.event_id) == ("e-2", "e-4")
    redelivered.ack()
    new.ack()
    assert redis_client.xpending(keys.DECISIONS_STREAM, "billing-app")["pending"] == 0


def test_the_asyncio_client_does_the_same(redis_client: redis.Redis) -> None:
    async def scenario() -> tuple[str, str | None, list[str]]:
        app = AsyncOnboardingClient.from_url(TEST_REDIS_URL)
        try:
            event_id = await app.submit(new_signup()["application"], user_id="u-7")
            waiting = asyncio.create_task(app.wait(event_id, timeout_s=10))
            await asyncio.sleep(0.2)
            publish_decision(redis_client, keys.DECISIONS_STREAM, decision(event_id, "decline"))
            found = await waiting
            feed = await app.feed("audit-app", "a-1", start="0", block_s=0.2)
            first = await feed.__anext__()
            await first.ack()
            await feed.aclose()  # type: ignore[attr-defined]
            pending = await app.redis.xpending(keys.DECISIONS_STREAM, "audit-app")
            assert pending["pending"] == 0  # acknowledged at once, not at the next read
            return event_id, found.outcome if found else None, [first.decision.event_id]
        finally:
            await app.close()

    event_id, outcome, fed = asyncio.run(scenario())
    assert outcome == "decline" and fed == [event_id]
    validate_signup(json.loads(redis_client.xrange(keys.SIGNUPS_STREAM)[0][1][b"payload"]))


def test_with_an_app_both_clients_feed_from_the_apps_own_stream(redis_client: redis.Redis) -> None:
    """`app="web"`: `feed` reads `decisions:app:web` (what the publish step appends for web's
    signups), not the shared stream; sync and asyncio alike."""
    from onboarding_client import app_feed_stream

    assert app_feed_stream("decisions", "web") == keys.app_feed_stream("decisions", "web")
    publish_decision(redis_client, keys.DECISIONS_STREAM, decision("evt-shared", "approve"))
    publish_decision(redis_client, keys.DECISIONS_STREAM, decision("web:evt-1", "decline"), app="web")
    sync = OnboardingClient(redis.Redis.from_url(TEST_REDIS_URL), app="web")
    assert sync.feed_stream == "decisions:app:web"
    item = next(sync.feed("crm", "pod-1", start="0", block_s=0.2))
    item.ack()
    assert item.decision.event_id == "web:evt-1"
    sync.close()

    async def scenario() -> list[str]:
        app = AsyncOnboardingClient.from_url(TEST_REDIS_URL, app="web")
        try:
            feed = await app.feed("audit", "a-1", start="0", block_s=0.2)
            first = await feed.__anext__()
            await first.ack()
            await feed.aclose()  # type: ignore[attr-defined]
            assert (await app.redis.xpending("decisions:app:web", "audit"))["pending"] == 0
            return [first.decision.event_id]
        finally:
            await app.close()

    assert asyncio.run(scenario()) == ["web:evt-1"]
    assert redis_client.xinfo_groups(keys.DECISIONS_STREAM) == []  # the shared stream was not read


def _refuse(redis_client: redis.Redis, app: str, event_id: str, reason: str = "missing_field") -> None:
    """The listener's refusal of an app's signup: answered on the key and the app's refusals feed."""
    service_id = keys.app_event_id(app, event_id)
    with redis_client.pipeline(transaction=True) as pipe:
        refusal = ServiceRefusal(service_id, "u-1", reason, message_for(reason, "user_id"), utc_now())
        answer_refusal(pipe, keys.SIGNUPS_STREAM, keys.DECISIONS_STREAM, refusal, 60, app=app)
        pipe.execute()


def test_answers_deliver_an_apps_decisions_and_refusals_until_acknowledged(redis_client: redis.Redis) -> None:
    """`answers` (app= only) reads the app's decision feed and refusals feed through its
    groups: each answer once, typed (a Decision or a Refusal), this consumer's unacknowledged
    ones first after a restart, an entry trimmed while pending skipped (and acknowledged)."""
    from onboarding_client import app_refusals_stream

    refusals_feed = app_refusals_stream("decisions", "web")
    assert refusals_feed == keys.app_refusals_stream("decisions", "web")
    with pytest.raises(ContractError, match="app="):
        OnboardingClient.from_url(TEST_REDIS_URL).answers("crm", "pod-1")
    web = OnboardingClient(redis.Redis.from_url(TEST_REDIS_URL), app="web")
    assert web.answer_streams == ("decisions:app:web", refusals_feed)
    answers = web.answers("crm", "pod-1", start="$", block_s=0.2)
    publish_decision(redis_client, keys.DECISIONS_STREAM, decision("web:evt-1", "decline"), app="web")
    _refuse(redis_client, "web", "evt-2")
    _refuse(redis_client, "mobile", "evt-3")  # another app's: never web's
    first, second = next(answers), next(answers)
    by_kind = {type(item.answer).__name__: item for item in (first, second)}
    assert set(by_kind) == {"Decision", "Refusal"}
    assert by_kind["Decision"].answer.event_id == "web:evt-1" and by_kind["Decision"].stream == "decisions:app:web"
    refused_item = by_kind["Refusal"]
    assert isinstance(refused_item.answer, Refusal) and refused_item.stream == refusals_feed
    assert (refused_item.answer.event_id, refused_item.answer.reason) == ("web:evt-2", "missing_field")
    by_kind["Decision"].ack()
    answers.close()  # a restart before the refusal was handled
    _refuse(redis_client, "web", "evt-4")
    _refuse(redis_client, "web", "evt-5")
    again = web.answers("crm", "pod-1", block_s=0.2)
    redelivered = next(again)
    assert redelivered.entry_id == refused_item.entry_id  # pending first
    redelivered.ack()
    pending_one = next(again)  # evt-4, delivered and not acknowledged ...
    assert pending_one.answer.event_id == "web:evt-4"
    again.close()
    redis_client.xdel(refusals_feed, pending_one.entry_id)  # ... then trimmed while pending
    third = web.answers("crm", "pod-1", block_s=0.2)
    assert next(third).answer.event_id == "web:evt-5"  # the trimmed one skipped
    third.close()
    assert redis_client.xpending(refusals_feed, "crm")["pending"] == 1  # evt-5 only: the trimmed one acked
    web.close()

    async def scenario() -> list[str]:
        app = AsyncOnboardingClient.from_url(TEST_REDIS_URL, app="web")
        try:
            got = await app.answers("audit", "a-1", start="0", block_s=0.2)
            items = [await got.__anext__() for _ in range(3)]
            for item in items:
                await item.ack()
            await got.aclose()  # type: ignore[attr-defined]
            for stream in app.answer_streams:
                assert (await app.redis.xpending(stream, "audit"))["pending"] == 0
            return sorted(item.answer.event_id for item in items)
        finally:
            await app.close()

    assert asyncio.run(scenario()) == ["web:evt-1", "web:evt-2", "web:evt-5"]


def test_the_client_depends_on_redis_and_jsonschema_alone() -> None:
    """Apps install it without the service (or Airflow): only the standard library, redis and
    jsonschema (the signup check before sending)."""
    allowed = set(sys.stdlib_module_names) | {"redis", "jsonschema", "onboarding_client"}
    for path in CLIENT_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert {n.split(".")[0] for n in names} <= allowed, (path.name, names)


# -- refusals ------------------------------------------------------------------------------


def refuse_like_the_listener(redis_client: redis.Redis, payload: bytes, refused_at: str | None = None) -> None:
    """What the listener does with a signup it refuses, as far as the app sees it: the
    service's own parse gives the reason, and the service's `answer_refusal` writes and
    announces the answer (in the listener, inside the dead letter's MULTI)."""
    with pytest.raises(InvalidEvent) as refused:
        parse_signup(payload)
    event = json.loads(payload)
    reason, detail = refused.value.reason, refused.value.detail
    refusal = ServiceRefusal(
        event["event_id"], event["user_id"], reason, message_for(reason, detail), refused_at or utc_now()
    )
    with redis_client.pipeline(transaction=True) as pipe:
        answer_refusal(pipe, keys.SIGNUPS_STREAM, keys.DECISIONS_STREAM, refusal, keys.DECISION_KEY_TTL_S)
        pipe.execute()


def sent_payload(redis_client: redis.Redis, index: int = -1) -> bytes:
    return redis_client.xrange(keys.SIGNUPS_STREAM)[index][1][b"payload"]


def test_a_refused_signup_raises_refused_not_a_timeout(client: OnboardingClient, redis_client: redis.Redis) -> None:
    application = new_signup()["application"] | {"checking_account": "gold"}
    event_id = client.submit(application, user_id="u-42", validate=False)  # the service refuses it
    assert client.wait(event_id, timeout_s=0.2) is None  # not answered yet: a timeout is None
    threading.Timer(0.3, refuse_like_the_listener, (redis_client, sent_payload(redis_client))).start()
    started = time.monotonic()
    with pytest.raises(Refused) as raised:
        client.wait(event_id, timeout_s=10)
    assert 0.25 < time.monotonic() - started < 5
    refusal = raised.value.refusal
    assert isinstance(refusal, Refusal) and not isinstance(raised.value, ContractError)
    assert (refusal.event_id, refusal.user_id, refusal.reason, refusal.retryable) == (
        event_id,
        "u-42",
        "invalid_value",
        False,
    )
    assert "checking_account" in refusal.message and refusal.raw["kind"] == "refusal"
    assert event_id in str(raised.value) and "invalid_value" in str(raised.value)
    with pytest.raises(Refused):  # already out: read at once, by get and by wait
        client.get(event_id)
    with pytest.raises(Refused):
        client.wait(event_id, timeout_s=5, until_final=True)
    assert redis_client.xlen(keys.DECISIONS_STREAM) == 0  # a refusal is never on the decisions stream


def test_a_fixed_signup_sent_again_with_the_same_id_is_not_answered_by_the_old_refusal(
    client: OnboardingClient, redis_client: redis.Redis
) -> None:
    """The refusal's own advice: fix it and send it again with the same event id. The key
    still holds the earlier refusal until the decision replaces it; it is not this send's
    answer."""
    signup = new_signup(user_id="u-5")
    earlier = OnboardingClient(client.redis)  # the app's earlier send (another process, an hour ago)
    event_id = earlier.submit(signup["application"] | {"age_years": -1}, user_id="u-5", validate=False)
    an_hour_ago = datetime.fromtimestamp(time.time() - 3600, UTC).isoformat()
    refuse_like_the_listener(redis_client, sent_payload(redis_client), refused_at=an_hour_ago)
    with pytest.raises(Refused, match="out_of_range"):  # what the key holds, for a client that did not send since
        client.get(event_id)
    assert client.submit(signup["application"], user_id="u-5", event_id=event_id) == event_id  # fixed, same id
    assert client.get(event_id) is None  # the earlier send's refusal is not this send's answer
    assert client.wait(event_id, timeout_s=0.2) is None
    threading.Timer(0.3, lambda: publish_decision(redis_client, keys.DECISIONS_STREAM, decision(event_id))).start()
    found = client.wait(event_id, timeout_s=10)
    assert found is not None and found.outcome == "approve"
    assert OnboardingClient(client.redis).get(event_id) == found


# -- the final decision of a review ----------------------------------------------------------


def test_until_final_waits_through_the_review_to_the_reviewer_s_decision(
    client: OnboardingClient, redis_client: redis.Redis
) -> None:
    publish_decision(redis_client, keys.DECISIONS_STREAM, decision("e-r", "review"))
    provisional = client.wait("e-r", timeout_s=5)
    assert provisional is not None and (provisional.outcome, provisional.final, provisional.review) == (
        "review",
        False,
        None,
    )
    assert client.wait_final("e-r", timeout_s=0.3) is None  # nobody decided yet: a timeout

    def decide() -> None:
        ReviewQueue(redis_client).decide("e-r", "rev-7", "decline", "income not verifiable")

    threading.Timer(0.3, decide).start()
    started = time.monotonic()
    final = client.wait("e-r", timeout_s=10, until_final=True)
    assert final is not None and 0.25 < time.monotonic() - started < 5
    assert (final.event_id, final.outcome, final.final) == ("e-r", "decline", True)
    assert final.review is not None
    assert (final.review.case_id, final.review.reviewer_id, final.review.reason) == (
        "e-r",
        "rev-7",
        "income not verifiable",
    )
    assert final.review.decided_at and final.review.opened_at
    assert client.get("e-r") == final == client.wait("e-r", timeout_s=1)  # the key now holds the final one
    # The feed sees both, in order: the review, then its final decision (same event id).
    feed = client.feed("crm", "pod-1", start="0", block_s=0.2)
    first, second = next(feed), next(feed)
    feed.close()
    assert [(i.decision.event_id, i.decision.outcome, i.decision.final) for i in (first, second)] == [
        ("e-r", "review", False),
        ("e-r", "decline", True),
    ]


def test_an_old_decision_without_final_reads_as_final_unless_review() -> None:
    for outcome, final in (("approve", True), ("decline", True), ("review", False)):
        raw = decision("e-old", outcome).to_dict()
        del raw["final"]
        raw["timestamps"]["published_at"] = "2026-11-30T10:00:01+00:00"
        read = Decision.from_json(json.dumps(raw))
        assert (read.final, read.review) == (final, None)


# -- validation before sending --------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"application": {"checking_account": "gold"}}, ("application.checking_account", "enum")),
        ({"application": {"favourite_colour": "blue"}}, ("application", "additionalProperties")),
        ({"user_id": "u-1\n"}, ("user_id", "pattern")),  # ECMA `$`: a final newline does not match
    ],
)
def test_a_signup_breaking_the_schema_is_refused_locally_unless_validation_is_off(
    client: OnboardingClient, redis_client: redis.Redis, change: dict, names: tuple[str, str]
) -> None:
    application = new_signup()["application"] | change.get("application", {})
    user_id = change.get("user_id", "u-1")
    with pytest.raises(ContractError) as raised:
        client.submit(application, user_id=user_id, event_id="evt-1")
    field, rule = names
    assert str(raised.value).startswith(f"{field}: ") and f"rule: {rule}" in str(raised.value)
    assert redis_client.xlen(keys.SIGNUPS_STREAM) == 0
    assert client.submit(application, user_id=user_id, event_id="evt-1", validate=False) == "evt-1"
    with pytest.raises(InvalidEvent):  # what it sent is what the service refuses
        parse_signup(sent_payload(redis_client))


def test_a_newline_ended_event_id_is_refused_even_without_validation(client: OnboardingClient) -> None:
    """The event id names the key the app waits on: one the service cannot answer on is never sent."""
    for validate in (True, False):
        with pytest.raises(ContractError, match="event_id"):
            client.submit(new_signup()["application"], user_id="u-1", event_id="evt-1\n", validate=validate)
    assert client.redis.xlen(keys.SIGNUPS_STREAM) == 0


def test_the_asyncio_client_raises_refusals_and_waits_for_the_final_decision(redis_client: redis.Redis) -> None:
    async def scenario() -> tuple[Refused, Decision | None, Decision | None]:
        app = AsyncOnboardingClient.from_url(TEST_REDIS_URL)
        try:
            with pytest.raises(ContractError, match="rule: enum"):
                await app.submit(new_signup()["application"] | {"housing": "castle"}, user_id="u-8")
            refused_id = await app.submit(
                new_signup()["application"] | {"housing": "castle"}, user_id="u-8", validate=False
            )
            waiting = asyncio.create_task(app.wait(refused_id, timeout_s=10))
            await asyncio.sleep(0.2)
            refuse_like_the_listener(redis_client, sent_payload(redis_client))
            with pytest.raises(Refused) as refused:
                await waiting
            with pytest.raises(Refused):
                await app.get(refused_id)
            publish_decision(redis_client, keys.DECISIONS_STREAM, decision("e-ar", "review"))
            assert await app.wait_final("e-ar", timeout_s=0.2) is None
            final_task = asyncio.create_task(app.wait("e-ar", timeout_s=10, until_final=True))
            await asyncio.sleep(0.2)
            await asyncio.to_thread(ReviewQueue(redis_client).decide, "e-ar", "rev-2", "approve", "checked")
            return refused.value, await final_task, await app.get("e-ar")
        finally:
            await app.close()

    refused, final, got = asyncio.run(scenario())
    assert refused.refusal.reason == "invalid_value" and "housing" in refused.refusal.message
    assert final is not None and (final.outcome, final.final) == ("approve", True)
    assert final.review is not None and final.review.reviewer_id == "rev-2" and got == final
