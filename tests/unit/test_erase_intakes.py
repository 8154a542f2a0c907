"""`onboarding-erase` reaches the apps' intake streams (`<signups>:app:<name>`, ONBOARDING_APPS):
a signup an app submitted that the listener has not forwarded yet is a copy of the user's
data; and the apps' decision feeds (`<decisions>:app:<name>`), a copy of their decisions.
Real Redis; the erasure runs as the shipped `operator` ACL user; only U's entries go."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from onboarding.keys import fingerprint_key, intake_stream
from onboarding.settings import StreamSettings
from ops.erase import erase_from_streams
from ops.redis_acl import apply
from stack.settings import PROJECT_ROOT
from tests.conftest import TEST_REDIS_URL

STREAMS = StreamSettings(redis_url=TEST_REDIS_URL, apps=("web", "mobile"))
PREFIX = f"erase-intake-{os.getpid()}-"


def _submit(client: redis.Redis, app: str, user_id: str, event_id: str) -> bytes:
    """What the client with app=<name> writes: XADD <intake> * payload <signup JSON>."""
    payload = json.dumps({"event_id": event_id, "user_id": user_id, "application": {"age_years": 30}})
    return client.xadd(intake_stream(STREAMS.signups_stream, app), {"payload": payload})


def _intake_users(client: redis.Redis, app: str) -> list[str]:
    """The users named by an intake's entries (an unparseable one: `?<its raw payload>`)."""
    users = []
    for _id, fields in client.xrange(intake_stream(STREAMS.signups_stream, app)):
        try:
            users.append(json.loads(fields[b"payload"])["user_id"])
        except ValueError:
            users.append(f"?{fields[b'payload'].decode()}")
    return sorted(users)


@pytest.fixture
def operator(redis_client: redis.Redis) -> Iterator[redis.Redis]:
    """A connection as the shipped operator role (ops/redis_acl.py), the erasure's user."""
    password = secrets.token_urlsafe(16)
    created = apply(redis_client, STREAMS, {"REDIS_ACL_PASSWORD_OPERATOR": password}, user_prefix=PREFIX)
    url = redis.connection.parse_url(TEST_REDIS_URL)
    client = redis.Redis(
        host=url.get("host", "127.0.0.1"),
        port=url.get("port", 6379),
        db=url.get("db", 0),
        username=f"{PREFIX}operator",
        password=password,
    )
    try:
        yield client
    finally:
        client.close()
        redis_client.execute_command("ACL", "DELUSER", *created)


def test_erase_removes_only_the_users_entries_from_each_apps_intake(
    redis_client: redis.Redis, operator: redis.Redis
) -> None:
    web = [_submit(redis_client, "web", user, f"w{n}") for n, user in enumerate(["u1", "u2", "u1", "u2"])]
    mobile = [_submit(redis_client, "mobile", user, f"m{n}") for n, user in enumerate(["u2", "u1"])]
    redis_client.xadd(intake_stream(STREAMS.signups_stream, "web"), {"payload": '{"user_id": "u1", broken'})
    # A fingerprint under the app's namespaced id (keys.app_event_id), as the listener keeps it.
    redis_client.set(fingerprint_key(STREAMS.signups_stream, "web:w0"), "1")

    dry = erase_from_streams(operator, STREAMS, "u1", dry_run=True)
    assert _intake_users(redis_client, "web") == ['?{"user_id": "u1", broken', "u1", "u1", "u2", "u2"]

    report = erase_from_streams(operator, STREAMS, "u1")
    assert report.intakes == dry.intakes
    web_stream, mobile_stream = (intake_stream(STREAMS.signups_stream, app) for app in ("web", "mobile"))
    assert set(report.intakes) == {web_stream, mobile_stream}
    assert set(report.intakes[web_stream]) >= {web[0].decode(), web[2].decode()}
    assert len(report.intakes[web_stream]) == 3  # the unparseable entry names u1 too
    assert report.intakes[mobile_stream] == [mobile[1].decode()]
    assert {"web:w0", "web:w2", "mobile:m1"} <= set(report.event_ids)
    assert fingerprint_key(STREAMS.signups_stream, "web:w0") in report.keys
    assert not redis_client.exists(fingerprint_key(STREAMS.signups_stream, "web:w0"))
    # Only u1's entries went; u2's stay, in order.
    assert _intake_users(redis_client, "web") == ["u2", "u2"]
    assert _intake_users(redis_client, "mobile") == ["u2"]
    assert erase_from_streams(operator, STREAMS, "u1").intakes == {}


def test_an_app_not_configured_is_not_scanned(redis_client: redis.Redis) -> None:
    _submit(redis_client, "web", "u1", "w0")
    report = erase_from_streams(redis_client, replace(STREAMS, apps=()), "u1")
    assert report.intakes == {}
    assert redis_client.xlen(intake_stream(STREAMS.signups_stream, "web")) == 1


def test_the_erase_command_reports_the_intake_entries(redis_client: redis.Redis, tmp_path: Path) -> None:
    kept = _submit(redis_client, "web", "u2", "w1")
    gone = _submit(redis_client, "web", "u1", "w0")
    env = {**os.environ, "REDIS_URL": TEST_REDIS_URL, "ONBOARDING_APPS": "web,mobile"}
    env |= {"ARCHIVE_DIR": str(tmp_path / "archive"), "ONBOARDING_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "ops.erase", "--user-id", "u1", "--archive-dir", str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["streams"]["intakes"] == {intake_stream(STREAMS.signups_stream, "web"): [gone.decode()]}
    assert [entry_id for entry_id, _ in redis_client.xrange(intake_stream(STREAMS.signups_stream, "web"))] == [kept]


def test_erase_removes_only_the_users_decisions_from_each_apps_feed(
    redis_client: redis.Redis, operator: redis.Redis
) -> None:
    """An app's decision feed (`<decisions>:app:<name>`) holds a copy of each of its signups'
    decisions, user id included: the erasure (as the operator user) removes U's copies, and the
    keys of those event ids, from every configured app's feed; other users' stay, in order."""
    from onboarding.decision import DecisionEvent, publish_decision
    from onboarding.keys import app_feed_stream, decision_key

    def feed_users(app: str) -> list[str]:
        stream = app_feed_stream(STREAMS.decisions_stream, app)
        return [json.loads(fields[b"payload"])["user_id"] for _id, fields in redis_client.xrange(stream)]

    for app, n, user in (("web", 0, "u1"), ("web", 1, "u2"), ("mobile", 2, "u1"), ("web", 3, "u1")):
        event = DecisionEvent(f"{app}:d{n}", user, "review", 0.5, [], "v1", f"signup__{app}:d{n}")
        publish_decision(redis_client, STREAMS.decisions_stream, event, app=app)
    dry = erase_from_streams(operator, STREAMS, "u1", dry_run=True)
    assert feed_users("web") == ["u1", "u2", "u1"] and feed_users("mobile") == ["u1"]
    report = erase_from_streams(operator, STREAMS, "u1")
    assert report.app_feeds == dry.app_feeds
    web_feed, mobile_feed = (app_feed_stream(STREAMS.decisions_stream, app) for app in ("web", "mobile"))
    assert {feed: len(ids) for feed, ids in report.app_feeds.items()} == {web_feed: 2, mobile_feed: 1}
    assert feed_users("web") == ["u2"] and feed_users("mobile") == []
    assert {"web:d0", "web:d3", "mobile:d2"} <= set(report.event_ids)
    assert not redis_client.exists(decision_key(STREAMS.decisions_stream, "web:d0"))
    assert redis_client.exists(decision_key(STREAMS.decisions_stream, "web:d1"))
    assert erase_from_streams(operator, STREAMS, "u1").app_feeds == {}
