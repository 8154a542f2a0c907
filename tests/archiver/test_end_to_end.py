"""Archive a live realtime instance's real onboarding runs, then audit a user's decisions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from archiver.archive import Archiver
from archiver.audit import find_runs
from archiver.settings import ArchiveSettings, InstanceDatabase
from archiver.store import ArchiveStore
from onboarding.decision import DecisionEvent, wait_for_decision
from onboarding.keys import run_id_for
from onboarding.publisher import publish_signup
from onboarding.streams import payload
from risk.samples import new_signup
from testkit.realtime import RealtimeStack, running_realtime

pytestmark = pytest.mark.e2e


def already_decided(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('onboarding_listener_events_total{outcome="already_decided"}'):
            return float(line.split()[-1])
    return 0.0


def decisions_in(stack: RealtimeStack) -> list[DecisionEvent]:
    entries = stack.redis.xrange(stack.streams.decisions_stream)
    return [DecisionEvent.from_dict(json.loads(payload(fields))) for _id, fields in entries]


def test_real_runs_are_archived_from_a_live_instance_the_audit_finds_the_decision_and_a_resend_gets_no_run(
    request: pytest.FixtureRequest, tmp_path: Path, trained_model_dir: Path
) -> None:
    with running_realtime("sqlite", tmp_path / "realtime", trained_model_dir, request.session, "archive") as stack:
        _listener, metrics_port = stack.start_listener()
        events = [new_signup(user_id="user-audited") for _ in range(2)] + [new_signup() for _ in range(3)]
        for event in events:
            publish_signup(stack.redis, stack.streams.signups_stream, event)
        decisions = {}
        for event in events:
            decision = wait_for_decision(stack.redis, stack.streams.decisions_stream, event["event_id"], 120)
            assert decision is not None, f"no decision for {event['event_id']}"
            decisions[event["event_id"]] = decision
        assert len(stack.dag_runs()) == 5
        # A decision is published inside the run's task: the run ends a moment later.
        deadline = time.monotonic() + 120
        while {r["state"] for r in stack.dag_runs()} != {"success"} and time.monotonic() < deadline:
            time.sleep(0.5)
        assert {r["state"] for r in stack.dag_runs()} == {"success"}

        # Everything finished is older than a cut-off of 0 days; the instance keeps running.
        archive_dir = tmp_path / "archive"
        settings = ArchiveSettings(archive_dir=archive_dir, cutoff_days=0)
        archiver = Archiver(
            InstanceDatabase("realtime", stack.instance.database_url), ArchiveStore(archive_dir), settings
        )
        report = archiver.run()
        archiver.engine.dispose()

        assert report.tables["dag_run"] == 5 and report.tables["task_instance"] == 5
        assert report.tables["xcom"] >= 5
        assert stack.dag_runs() == []
        # The live instance still decides.
        later = new_signup()
        publish_signup(stack.redis, stack.streams.signups_stream, later)
        assert wait_for_decision(stack.redis, stack.streams.decisions_stream, later["event_id"], 120) is not None

        # The idempotency horizon outlives the archive: the app re-sends a signup whose run
        # is gone from Airflow; it gets neither a second run nor a second decision.
        publish_signup(stack.redis, stack.streams.signups_stream, events[0])
        deadline = time.monotonic() + 60
        while already_decided(metrics_port) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert already_decided(metrics_port) == 1
        assert [r["dag_run_id"] for r in stack.dag_runs()] == [run_id_for(later["event_id"])]
        decided = [e for e in decisions_in(stack) if e.event_id == events[0]["event_id"]]
        assert len(decided) == 1

    found = find_runs(ArchiveStore(archive_dir), user_id="user-audited")
    assert {f["signup"]["event_id"] for f in found} == {e["event_id"] for e in events[:2]}
    for run in found:
        published = decisions[run["signup"]["event_id"]]
        assert run["state"] == "success"
        assert run["decision"]["decision"] == published.decision
        assert run["decision"]["score"] == pytest.approx(published.score)
        assert run["decision"]["model_version"] == published.model_version
        # One task runs every step; its record holds the inputs the decision was made on.
        assert {t["task_id"] for t in run["task_instances"]} == {"decide"}
        assert run["decision_inputs"]["decide"]["application"] == next(
            e["application"] for e in events if e["event_id"] == run["signup"]["event_id"]
        )
