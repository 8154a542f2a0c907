"""Signups on Redis -> the listener -> realtime Airflow runs -> decisions on Redis."""

from __future__ import annotations

import json
import random
import time

import pytest

from onboarding.decision import DecisionEvent
from onboarding.publisher import publish_raw, publish_signup
from risk.artifacts import current_version, set_current
from risk.samples import new_signup
from testkit.realtime import RealtimeStack
from tests.e2e.conftest import LATENCIES

pytestmark = pytest.mark.e2e


def collect_decisions(stack: RealtimeStack, want: int, timeout_s: float) -> list[DecisionEvent]:
    deadline = time.monotonic() + timeout_s
    while True:
        entries = stack.redis.xrange(stack.streams.decisions_stream)
        if len(entries) >= want or time.monotonic() > deadline:
            return [DecisionEvent.from_dict(json.loads(fields[b"payload"])) for _id, fields in entries]
        time.sleep(0.25)


def test_ten_valid_and_two_invalid_signups(realtime_stack: RealtimeStack) -> None:
    stack = realtime_stack
    rng = random.Random(42)
    valid = [new_signup(rng=rng) for _ in range(10)]
    bad_json = "{this is not json"
    missing_user = new_signup(rng=rng)
    del missing_user["user_id"]
    for event in valid[:5]:
        publish_signup(stack.redis, stack.streams.signups_stream, event)
    publish_raw(stack.redis, stack.streams.signups_stream, bad_json)
    for event in valid[5:]:
        publish_signup(stack.redis, stack.streams.signups_stream, event)
    publish_raw(stack.redis, stack.streams.signups_stream, json.dumps(missing_user))

    decisions = collect_decisions(stack, 10, timeout_s=180)
    time.sleep(2)  # a duplicate would arrive right after the originals
    decisions = collect_decisions(stack, 10, timeout_s=0)

    assert len(decisions) == 10
    by_event = {d.event_id: d for d in decisions}
    assert set(by_event) == {e["event_id"] for e in valid}
    for event in valid:
        decision = by_event[event["event_id"]]
        assert decision.user_id == event["user_id"]
        assert decision.decision in ("approve", "review", "decline")
        assert decision.error is None
        assert decision.model_version
        assert 0.0 <= decision.score <= 1.0
        assert decision.run_id == f"signup__{event['event_id']}"
        assert {"accepted_at", "run_started_at", "enriched_at", "scored_at", "decided_at", "published_at"} <= set(
            decision.timestamps
        )
        if decision.decision != "approve":
            assert decision.reason_codes, "an adverse decision must say why"
            assert all(r["code"] and r["text"] for r in decision.reason_codes)
    # The sample includes adverse decisions, so the reason-code check above was exercised.
    assert any(d.decision != "approve" for d in decisions)

    dead = stack.redis.xrange(stack.streams.dead_letter_stream)
    reasons = {fields[b"reason"].decode(): fields for _id, fields in dead}
    assert set(reasons) == {"not_json", "missing_field"}
    assert reasons["not_json"][b"original.payload"].decode() == bad_json
    assert b"user_id" in reasons["missing_field"][b"detail"]

    runs = {r["dag_run_id"]: r["state"] for r in stack.dag_runs()}
    assert runs == {f"signup__{e['event_id']}": "success" for e in valid}
    assert stack.redis.xpending(stack.streams.signups_stream, "onboarding-listener")["pending"] == 0

    LATENCIES[stack.db] = [d.latency_s("accepted_at", "published_at") for d in decisions]


def test_failed_pipeline_still_answers_with_review(realtime_stack: RealtimeStack) -> None:
    stack = realtime_stack
    good_version = current_version(stack.model_dir)
    # A broken promotion (signed, so the pointer is not the problem): scoring fails.
    set_current(stack.model_dir, "does-not-exist", check=False)
    try:
        before = len(stack.redis.xrange(stack.streams.decisions_stream))
        event = new_signup(rng=random.Random(99))
        publish_signup(stack.redis, stack.streams.signups_stream, event)
        decisions = collect_decisions(stack, before + 1, timeout_s=120)
    finally:
        set_current(stack.model_dir, good_version)  # a newer promotion: never an old pointer put back
    mine = [d for d in decisions if d.event_id == event["event_id"]]
    assert len(mine) == 1
    assert mine[0].decision == "review"
    assert "score" in mine[0].error and "does-not-exist" in mine[0].error
    assert mine[0].reason_codes[0]["code"] == "pipeline_failed"
    # The run shows the failure to the operators, although the applicant got an answer.
    assert wait_for_run_state(stack, f"signup__{event['event_id']}", timeout_s=60) == "failed"


def wait_for_run_state(stack: RealtimeStack, run_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        state = {r["dag_run_id"]: r["state"] for r in stack.dag_runs()}.get(run_id, "missing")
        if state in ("success", "failed") or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def test_a_tampered_model_is_answered_review_by_a_real_airflow_run(realtime_stack: RealtimeStack) -> None:
    """Issue 29, item 4: a version whose metadata.json was edited after signing (the issue's
    attack: a policy that approves what the model declines) is put in service; the real task
    refuses it and answers `review` with the integrity error, and the run fails for the operators."""
    import shutil

    from risk.integrity import Signer, sign_version

    stack = realtime_stack
    good_version = current_version(stack.model_dir)
    tampered = f"{good_version}-tampered"
    shutil.copytree(stack.model_dir / good_version, stack.model_dir / tampered)
    sign_version(stack.model_dir / tampered, Signer())  # a properly signed version ...
    metadata_path = stack.model_dir / tampered / "metadata.json"
    meta = json.loads(metadata_path.read_text())
    meta["policy"] = {"approve_max": 0.98, "decline_min": 0.99}  # ... then its policy edited
    metadata_path.write_text(json.dumps(meta, indent=2) + "\n")
    set_current(stack.model_dir, tampered)  # promoted by someone holding the key, then edited
    try:
        before = len(stack.redis.xrange(stack.streams.decisions_stream))
        event = new_signup(rng=random.Random(2929))
        publish_signup(stack.redis, stack.streams.signups_stream, event)
        decisions = collect_decisions(stack, before + 1, timeout_s=120)
    finally:
        set_current(stack.model_dir, good_version)
        shutil.rmtree(stack.model_dir / tampered)
    (mine,) = [d for d in decisions if d.event_id == event["event_id"]]
    assert mine.decision == "review"
    assert mine.error is not None
    assert mine.error.startswith(f"model integrity: version '{tampered}' refused: metadata.json was changed")
    assert mine.model_version is None and mine.score is None
    assert wait_for_run_state(stack, f"signup__{event['event_id']}", timeout_s=60) == "failed"


def test_replay_of_the_stacks_decisions_finds_no_difference(realtime_stack: RealtimeStack) -> None:
    """Issue 29, item 2: `onboarding-model replay` re-decides every decision this stack made
    (the ten above, and this test's own) from their records with the recorded model version,
    as the operator's command, and finds 0 differences."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    stack = realtime_stack
    before = len(stack.redis.xrange(stack.streams.decisions_stream))
    rng = random.Random(4242)
    events = [new_signup(rng=rng) for _ in range(5)]
    for event in events:
        publish_signup(stack.redis, stack.streams.signups_stream, event)
    collect_decisions(stack, before + 5, timeout_s=120)
    env = {**os.environ, **stack.stream_env, "ONBOARDING_HOME": str(stack.home / "operator")}
    command = Path(sys.executable).with_name("onboarding-model")
    done = subprocess.run([str(command), "replay"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["differences"] == 0
    # Every decision of this stack has its record, and every scored one was replayed.
    decisions = collect_decisions(stack, 0, timeout_s=0)
    assert report["records"] == len(decisions) >= before + 5
    assert report["replayed"] == sum(d.score is not None for d in decisions) >= 5
    assert report["not_replayable"] == sum(d.score is None for d in decisions)
    assert "replayed" in done.stderr and f"/{report['records']}" in done.stderr  # progress with totals
