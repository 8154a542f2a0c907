"""The apps' Python client (clients/python/onboarding_client) against a real Redis and the
service's own publish step: what it submits is a valid signup, what it reads is the decision
the service published, its wait reads no stream, its feed delivers each decision until
acknowledged. Sync and asyncio."""

from __future__ import annotations

import ast
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from onboarding_client import AsyncOnboardingClient, ContractError, Decision, OnboardingClient, decision_key

from onboarding import keys
from onboarding.decision import DecisionEvent, publish_decision
from onboarding.schema import validate_signup
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


def test_the_client_depends_on_redis_alone() -> None:
    """Apps install it without the service (or Airflow): only the standard library and redis."""
    allowed = set(sys.stdlib_module_names) | {"redis", "onboarding_client"}
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
