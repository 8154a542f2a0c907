"""Structured logs: every listener and task line about an event carries its event id, run
id and stream entry id as JSON keys, so a log platform filters by them (issue 17)."""

from __future__ import annotations

import io
import json
import logging
import random

import pytest
import redis
import structlog

from listener.consumer import Listener
from onboarding.airflow import TriggerOutcome
from onboarding.decision import DecisionEvent
from onboarding.errors import AirflowUnavailable
from onboarding.logs import JsonFormatter, TextFormatter, keys, log_event
from onboarding.publisher import publish_raw, publish_signup
from risk.publishing import Publisher
from risk.samples import new_signup
from tests.unit.test_listener import SETTINGS, FakeAirflow


def test_each_listener_line_about_an_event_has_its_ids_as_keys(redis_client: redis.Redis) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("listener"))
    logging.getLogger("listener").addHandler(handler)
    logging.getLogger("listener").setLevel(logging.INFO)
    try:
        airflow = FakeAirflow()
        airflow.failures = [AirflowUnavailable("connection", "refused")]  # one retry line
        good = new_signup(rng=random.Random(1))
        entries = {
            publish_signup(redis_client, SETTINGS.streams.signups_stream, good): good["event_id"],
            publish_raw(redis_client, SETTINGS.streams.signups_stream, json.dumps({"event_id": "e-bad"})): "e-bad",
            publish_raw(redis_client, SETTINGS.streams.signups_stream, "not json"): None,
        }
        fast = SETTINGS.__class__(**{**SETTINGS.__dict__, "retry_initial_s": 0.01})
        Listener(redis_client, airflow, fast).run(burst=True)
    finally:
        logging.getLogger("listener").removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    about = {entry_id: [line for line in lines if line.get("entry_id") == entry_id] for entry_id in entries}
    run_id = f"signup__{good['event_id']}"
    good_entry = next(e for e, ev in entries.items() if ev == good["event_id"])
    retry, accepted = about[good_entry]
    assert (retry["event_id"], retry["run_id"], retry["level"]) == (good["event_id"], run_id, "warning")
    assert accepted | {"ts": None} == {
        "ts": None,
        "level": "info",
        "component": "listener",
        "logger": "listener.consumer",
        "msg": f"listener: run {TriggerOutcome.CREATED.value}",
        "event_id": good["event_id"],
        "run_id": run_id,
        "entry_id": good_entry,
        "user_id": good["user_id"],
        "outcome": "created",
    }
    for entry_id, event_id in entries.items():
        if event_id == good["event_id"]:
            continue
        (dead,) = about[entry_id]
        assert dead.get("event_id") == event_id and dead["reason"] in ("missing_field", "not_json")
        assert "user_id" not in dead  # a dead letter's line names where the problem is, no personal data
    # No line names an id only inside its message.
    assert not [line for line in lines if good["event_id"] in line["msg"]]


def test_text_lines_carry_the_same_keys_and_unknown_keys_are_refused() -> None:
    record = logging.LogRecord("listener.consumer", logging.INFO, __file__, 1, "listener: run created", (), None)
    record.__dict__.update(keys(event_id="e-1", run_id="signup__e-1", entry_id="1-0"))
    assert (
        TextFormatter("%(message)s").format(record)
        == "listener: run created event_id=e-1 run_id=signup__e-1 entry_id=1-0"
    )
    with pytest.raises(ValueError, match="application"):
        keys(application={"credit_amount": 1})


def test_task_lines_give_the_ids_to_airflows_structlog_as_keys(redis_client: redis.Redis) -> None:
    """Inside Airflow (structlog configured) the task's publish line has the keys; Airflow's
    JSON task log writes them as they are (tests/e2e/test_security.py reads a real one)."""
    event = DecisionEvent(
        "e-1", "u-1", "approve", 0.1, [], "v1", "signup__e-1", {"occurred_at": "2026-11-30T10:00:00+00:00"}
    )
    with structlog.testing.capture_logs() as captured:
        assert structlog.is_configured()
        Publisher(redis_client, "decisions", 60).publish(event)
        Publisher(redis_client, "decisions", 60).publish(event)
    published, again = captured
    assert (published["event_id"], published["run_id"], published["decision"]) == ("e-1", "signup__e-1", "approve")
    assert (
        published["entry_id"] == again["entry_id"]
        and again["event"] == "onboarding: the decision was published already"
    )
    log_event(logging.getLogger("x"), logging.INFO, "outside Airflow", event_id="e-2")  # the stdlib path: no error
