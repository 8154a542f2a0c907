"""`onboarding-erase`: one user's signups, decisions, dead letters and keys leave the streams;
everybody else's stay; --dry-run reports the same and changes nothing."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import redis

from listener.consumer import Listener
from listener.settings import ListenerSettings
from onboarding.decision import DecisionEvent, publish_decision
from onboarding.keys import decision_key, marker_key
from onboarding.publisher import publish_raw, publish_signup
from onboarding.settings import StreamSettings
from ops.erase import erase_from_streams
from risk.samples import new_signup
from stack.settings import PROJECT_ROOT
from tests.conftest import TEST_REDIS_URL
from tests.unit.test_listener import FakeAirflow

STREAMS = StreamSettings(redis_url=TEST_REDIS_URL)


def _traffic(client: redis.Redis) -> dict[str, list[dict]]:
    """Two users' signups through the real listener (fingerprints, dead letters) and decisions."""
    rng = random.Random(9)
    events: dict[str, list[dict]] = {"alice": [], "bob": []}
    for n in range(6):
        user = "alice" if n % 2 == 0 else "bob"
        event = new_signup(user_id=user, rng=rng)
        events[user].append(event)
        publish_signup(client, STREAMS.signups_stream, event)
    bad = new_signup(user_id="alice", rng=rng)
    bad["application"]["age_years"] = 3  # dead-lettered: out of range
    publish_raw(client, STREAMS.signups_stream, json.dumps(bad))
    events["alice_refused"] = [bad]  # answered with a refusal under its decision key
    publish_raw(client, STREAMS.signups_stream, '{"user_id": "alice", broken')  # not JSON, still hers
    publish_raw(client, STREAMS.signups_stream, '{"user_id": "bob", broken')
    settings = ListenerSettings(streams=STREAMS, consumer="erase-test", block_ms=50, retry_initial_s=0.01)
    Listener(client, FakeAirflow(), settings).run(burst=True)
    for user, evs in events.items():
        if user == "alice_refused":
            continue
        for event in evs:
            decision = DecisionEvent(event["event_id"], user, "approve", 0.1, [], "v1", f"signup__{event['event_id']}")
            publish_decision(client, STREAMS.decisions_stream, decision)
    return events


def _users_in(client: redis.Redis, stream: str, field: bytes) -> list[str]:
    out = []
    for _id, fields in client.xrange(stream):
        raw = fields[field].decode()
        try:
            out.append(json.loads(raw)["user_id"])
        except ValueError:
            out.append("alice" if '"alice"' in raw else "bob")
    return sorted(out)


def test_erase_removes_one_users_entries_and_keys_only(redis_client: redis.Redis) -> None:
    events = _traffic(redis_client)
    alice_keys = [f"{STREAMS.signups_stream}:fingerprint:{e['event_id']}" for e in events["alice"]]
    alice_keys += [marker_key(STREAMS.decisions_stream, e["event_id"]) for e in events["alice"]]
    decided = [
        e["event_id"]
        for e in events["alice"]
        if redis_client.exists(marker_key(STREAMS.decisions_stream, e["event_id"]))
    ]
    alice_keys += [decision_key(STREAMS.decisions_stream, event_id) for event_id in decided]
    # The refusal answering her dead-lettered signup is a copy of her data too.
    alice_keys += [decision_key(STREAMS.decisions_stream, events["alice_refused"][0]["event_id"])]
    assert len(decided) == 3 and all(redis_client.exists(k) for k in alice_keys)
    before = {s: redis_client.xlen(s) for s in (STREAMS.signups_stream, STREAMS.decisions_stream)}

    dry = erase_from_streams(redis_client, STREAMS, "alice", dry_run=True)
    assert (len(dry.signups), len(dry.decisions), len(dry.dead_letters)) == (5, 3, 2)
    assert sorted(dry.keys) == sorted(alice_keys)
    assert {s: redis_client.xlen(s) for s in before} == before, "a dry run changes nothing"

    report = erase_from_streams(redis_client, STREAMS, "alice")
    assert report == dry
    assert _users_in(redis_client, STREAMS.signups_stream, b"payload") == ["bob"] * 4
    assert _users_in(redis_client, STREAMS.decisions_stream, b"payload") == ["bob"] * 3
    assert _users_in(redis_client, STREAMS.dead_letter_stream, b"original.payload") == ["bob"]
    assert not any(redis_client.exists(k) for k in alice_keys)
    bob_marker = marker_key(STREAMS.decisions_stream, events["bob"][0]["event_id"])
    assert redis_client.exists(bob_marker)
    assert redis_client.exists(decision_key(STREAMS.decisions_stream, events["bob"][0]["event_id"]))
    assert erase_from_streams(redis_client, STREAMS, "alice").signups == [], "erasing twice finds nothing"


def test_erase_command_reports_what_it_removed(redis_client: redis.Redis, tmp_path: Path) -> None:
    _traffic(redis_client)
    env = {**os.environ, "REDIS_URL": TEST_REDIS_URL, "ARCHIVE_DIR": str(tmp_path / "archive")}
    env["ONBOARDING_HOME"] = str(tmp_path / "home")  # no local stack's settings or databases
    command = [sys.executable, "-m", "ops.erase", "--user-id", "bob", "--archive-dir", str(tmp_path)]
    dry = subprocess.run([*command, "--dry-run"], env=env, capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["dry_run"] is True
    assert redis_client.xlen(STREAMS.signups_stream) == 9
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["streams"]["signups"]) == 4 and len(report["streams"]["decisions"]) == 3
    assert report["airflow_runs"].startswith("skipped")
    assert report["archive"] == {"runs": [], "rows": {}, "files": []}
    assert redis_client.xlen(STREAMS.signups_stream) == 5
