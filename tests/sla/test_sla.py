"""The SLA service against a real Redis: the listener records accepted signups, the observer
measures decisions and clears them, overdue ones are found, diagnosed and re-driven."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import pytest
import redis
from prometheus_client import generate_latest

from listener.consumer import Listener
from listener.metrics import ListenerMetrics
from listener.settings import ListenerSettings
from onboarding.airflow import DagRun, TriggerOutcome
from onboarding.awaiting import awaiting_count, record_accepted
from onboarding.decision import DecisionEvent, publish_decision
from onboarding.errors import ConfigError
from onboarding.keys import run_id_for
from onboarding.publisher import publish_raw, publish_signup
from onboarding.settings import StreamSettings
from risk.samples import new_signup
from sla.metrics import SlaMetrics, StreamCollector, latency_buckets
from sla.observer import DecisionObserver
from sla.overdue import Stuck, list_overdue, redrive
from sla.page import render, snapshot
from sla.settings import SlaSettings
from tests.conftest import TEST_REDIS_URL

STREAMS = StreamSettings(redis_url=TEST_REDIS_URL)
T0 = "2026-01-01T00:00:00+00:00"
SETTINGS = SlaSettings(streams=STREAMS, consumer="test-sla", block_ms=50, overdue_after_s=30)


class FakeAirflow:
    """Runs by id with a settable state; records triggers and clears."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.triggered: dict[str, dict[str, Any]] = {}
        self.cleared: list[str] = []

    def trigger(self, run_id: str, conf: dict[str, Any]) -> TriggerOutcome:
        if run_id in self.states:
            return TriggerOutcome.ALREADY_EXISTS
        self.states[run_id] = "queued"
        self.triggered[run_id] = conf
        return TriggerOutcome.CREATED

    def get_run(self, run_id: str) -> DagRun | None:
        state = self.states.get(run_id)
        return None if state is None else DagRun(run_id=run_id, state=state, conf={})

    def clear_run(self, run_id: str) -> bool:
        if run_id not in self.states:
            return False
        self.cleared.append(run_id)
        self.states[run_id] = "queued"
        return True


def decision(event_id: str, accepted: str, published: str, **extra: Any) -> DecisionEvent:
    return DecisionEvent(
        event_id=event_id,
        user_id="u-1",
        decision=extra.pop("decision", "approve"),
        score=0.1,
        reason_codes=[],
        model_version=extra.pop("model_version", "v1"),
        run_id=run_id_for(event_id),
        timestamps={
            "accepted_at": accepted,
            "run_started_at": "2026-01-01T00:00:01+00:00",
            "scored_at": "2026-01-01T00:00:02+00:00",
            "published_at": published,
        },
        **extra,
    )


def scrape(metrics: SlaMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in scrape")


def test_observer_measures_each_decision_once_and_clears_it(redis_client: redis.Redis) -> None:
    metrics = SlaMetrics(SETTINGS)
    observer = DecisionObserver(redis_client, SETTINGS, metrics)
    observer.ensure_group()
    record_accepted(redis_client, STREAMS, "e-fast", time.time(), {"event_id": "e-fast"})
    record_accepted(redis_client, STREAMS, "e-slow", time.time(), {"event_id": "e-slow"})
    publish_decision(redis_client, STREAMS.decisions_stream, decision("e-fast", T0, "2026-01-01T00:00:03+00:00"))
    slow = decision("e-slow", T0, "2026-01-01T00:00:25+00:00", decision="review")
    publish_decision(redis_client, STREAMS.decisions_stream, slow)

    assert observer.run(burst=True) == 2
    assert observer.run(burst=True) == 0  # acknowledged: a restart does not count them twice

    text = scrape(metrics)
    assert sample(text, "onboarding_decision_latency_seconds_count") == 2
    assert sample(text, 'onboarding_decision_latency_seconds_bucket{le="10.0"}') == 1
    assert sample(text, 'onboarding_decisions_total{decision="review",model_version="v1"}') == 1
    assert sample(text, 'onboarding_decision_stage_seconds_count{stage="queued"}') == 2
    assert sample(text, 'onboarding_decision_stage_seconds_sum{stage="scoring"}') == 2.0
    assert awaiting_count(redis_client, STREAMS) == 0


def test_a_refused_model_is_counted_apart_from_other_pipeline_failures(redis_client: redis.Redis) -> None:
    """The ModelIntegrityFailure alert's series (issue 29, item 4): only decisions whose error
    says the task refused the model count."""
    metrics = SlaMetrics(SETTINGS)
    observer = DecisionObserver(redis_client, SETTINGS, metrics)
    observer.ensure_group()
    refused = "model integrity: version 'v1' refused: metadata.json was changed after signing"
    for event_id, error in (("e-refused", refused), ("e-failed", "stage 'score' failed: ValueError: x")):
        event = decision(event_id, T0, "2026-01-01T00:00:03+00:00", decision="review", error=error)
        publish_decision(redis_client, STREAMS.decisions_stream, event)
    assert observer.run(burst=True) == 2
    text = scrape(metrics)
    assert sample(text, "onboarding_decision_pipeline_failures_total") == 2
    assert sample(text, "onboarding_model_integrity_failures_total") == 1


def test_buckets_follow_the_configured_threshold() -> None:
    assert 10.0 in latency_buckets(10.0)
    assert 2.5 in latency_buckets(2.5)
    assert SlaSettings.from_env({"SLO_THRESHOLD_S": "2.5"}).slo_threshold_s == 2.5


def test_settings_name_the_bad_value() -> None:
    with pytest.raises(ConfigError, match="SLO_TARGET"):
        SlaSettings.from_env({"SLO_TARGET": "1"})
    with pytest.raises(ConfigError, match="SLA_AIRFLOW_INSTANCES"):
        SlaSettings.from_env({"SLA_AIRFLOW_INSTANCES": "realtime"})
    parsed = SlaSettings.from_env({"SLA_AIRFLOW_INSTANCES": "realtime=http://a:1/, batch=http://b:2"})
    assert parsed.airflow_instances == (("realtime", "http://a:1"), ("batch", "http://b:2"))


def test_listener_records_accepted_signups_for_overdue_detection(redis_client: redis.Redis) -> None:
    class Accepting:
        def trigger(self, run_id: str, conf: dict[str, Any]) -> TriggerOutcome:
            return TriggerOutcome.CREATED

        def get_run(self, run_id: str) -> DagRun | None:
            return None

    listener_settings = ListenerSettings(streams=STREAMS, consumer="c", block_ms=50)
    listener = Listener(redis_client, Accepting(), listener_settings, ListenerMetrics())
    event = new_signup()
    publish_signup(redis_client, STREAMS.signups_stream, event)
    publish_raw(redis_client, STREAMS.signups_stream, "not json")
    listener.run(burst=True)

    later = time.time() + 60
    overdue = list_overdue(redis_client, SETTINGS, None, now=later)
    assert [item.event_id for item in overdue] == [event["event_id"]]  # the malformed one is not awaited
    assert list_overdue(redis_client, SETTINGS, None) == []  # not yet past the SLA


def test_a_decision_already_out_is_never_overdue(redis_client: redis.Redis) -> None:
    publish_decision(redis_client, STREAMS.decisions_stream, decision("e-1", T0, "2026-01-01T00:00:01+00:00"))
    # A duplicate delivery after the decision: not recorded at all.
    assert not record_accepted(redis_client, STREAMS, "e-1", time.time() - 100, {})
    # Recorded, then decided while the observer lagged: dropped when listed, not reported.
    record_accepted(redis_client, STREAMS, "e-2", time.time() - 100, {})
    publish_decision(redis_client, STREAMS.decisions_stream, decision("e-2", T0, "2026-01-01T00:00:01+00:00"))
    assert list_overdue(redis_client, SETTINGS, None) == []
    assert awaiting_count(redis_client, STREAMS) == 0


def test_overdue_says_where_each_is_stuck_and_redrive_pushes_it(redis_client: redis.Redis) -> None:
    airflow = FakeAirflow()
    old = time.time() - 120
    for event_id, state in (("lost", None), ("waits", "queued"), ("broke", "failed"), ("silent", "success")):
        record_accepted(redis_client, STREAMS, event_id, old, {"event_id": event_id, "accepted_at": "x"})
        if state:
            airflow.states[run_id_for(event_id)] = state

    found = {item.event_id: item for item in list_overdue(redis_client, SETTINGS, airflow)}
    assert {k: v.stuck for k, v in found.items()} == {
        "lost": Stuck.NEVER_TRIGGERED,
        "waits": Stuck.RUN_QUEUED,
        "broke": Stuck.RUN_FAILED,
        "silent": Stuck.PUBLISH_MISSING,
    }
    actions = {event_id: redrive(redis_client, SETTINGS, airflow, item) for event_id, item in found.items()}
    assert actions["lost"] == "triggered"
    assert airflow.triggered[run_id_for("lost")] == {"event_id": "lost", "accepted_at": "x"}
    assert actions["broke"] == actions["silent"] == "cleared"
    assert sorted(airflow.cleared) == sorted([run_id_for("broke"), run_id_for("silent")])
    assert actions["waits"].startswith("waiting")
    # A second redrive of the never-triggered one does not create a second run.
    again = next(i for i in list_overdue(redis_client, SETTINGS, FakeAirflow()) if i.event_id == "lost")
    assert redrive(redis_client, SETTINGS, airflow, again) == "run_exists"


def test_collector_reports_lag_pending_dead_letters_and_overdue(redis_client: redis.Redis) -> None:
    metrics = SlaMetrics(SETTINGS)
    metrics.registry.register(StreamCollector(redis_client, SETTINGS))
    redis_client.xgroup_create(STREAMS.signups_stream, SETTINGS.listener_group, id="0", mkstream=True)
    for _ in range(3):
        publish_signup(redis_client, STREAMS.signups_stream, new_signup())
    redis_client.xreadgroup(SETTINGS.listener_group, "c", {STREAMS.signups_stream: ">"}, count=1)
    redis_client.xadd(STREAMS.dead_letter_stream, {"reason": "not_json"})
    record_accepted(redis_client, STREAMS, "old", time.time() - 100, {})

    text = scrape(metrics)
    labels = f'group="{SETTINGS.listener_group}",stream="{STREAMS.signups_stream}"'
    assert sample(text, f"onboarding_stream_lag{{{labels}}}") == 2
    assert sample(text, f"onboarding_stream_pending{{{labels}}}") == 1
    assert sample(text, "onboarding_dead_letters_depth") == 1
    assert sample(text, "onboarding_overdue_decisions") == 1
    assert sample(text, "onboarding_overdue_oldest_age_seconds") >= 100


def test_page_shows_live_figures(redis_client: redis.Redis) -> None:
    settings = replace(SETTINGS, slo_target=0.9)
    metrics = SlaMetrics(settings)
    observer = DecisionObserver(redis_client, settings, metrics)
    observer.ensure_group()
    for i in range(10):
        published = "2026-01-01T00:00:02+00:00" if i < 9 else "2026-01-01T00:00:30+00:00"
        publish_decision(redis_client, STREAMS.decisions_stream, decision(f"e-{i}", T0, published))
    observer.run(burst=True)
    data = snapshot(redis_client, settings, observer, list, None)
    assert data.decisions == 10
    assert data.latency_s.p50 == 2.0
    assert data.latency_s.p99 == 30.0
    assert data.within_slo_ratio == 0.9
    # /api/sla: the same figures as JSON, in the shape the API has always had
    api = json.loads(json.dumps(data.to_dict()))
    assert (api["decisions"], api["latency_s"]["p50"], api["within_slo_ratio"]) == (10, 2.0, 0.9)
    assert api["slo"] == {"threshold_s": settings.slo_threshold_s, "target": settings.slo_target}
    assert set(api["series"]) == {"1h", "24h"} and api["overdue"] == [] and api["archive"] == []
    page = render(data)
    assert 'id="latency-p50">2.00 s<' in page
    assert 'id="compliance">90.00 %<' in page
    assert "SLO met" in page


def test_scheduler_heartbeat_age_comes_from_the_health_api_and_survives_an_outage() -> None:
    import json as jsonlib
    import threading
    from datetime import UTC, datetime, timedelta
    from http.server import BaseHTTPRequestHandler, HTTPServer

    beat = (datetime.now(UTC) - timedelta(seconds=42)).isoformat()

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = jsonlib.dumps({"scheduler": {"status": "healthy", "latest_scheduler_heartbeat": beat}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    from sla.metrics import SchedulerCollector

    collector = SchedulerCollector((("realtime", f"http://127.0.0.1:{server.server_address[1]}"),), timeout_s=2)
    metrics = SlaMetrics(SETTINGS)
    metrics.registry.register(collector)
    collector.poll()
    text = scrape(metrics)
    assert 40 <= sample(text, 'onboarding_airflow_scheduler_heartbeat_age_seconds{airflow="realtime"}') < 100
    assert sample(text, 'onboarding_airflow_scheduler_healthy{airflow="realtime"}') == 1
    server.shutdown()
    server.server_close()
    collector.poll()  # the API is gone: unhealthy, and the age keeps counting from the last beat
    text = scrape(metrics)
    assert sample(text, 'onboarding_airflow_scheduler_healthy{airflow="realtime"}') == 0
    assert sample(text, 'onboarding_airflow_scheduler_heartbeat_age_seconds{airflow="realtime"}') >= 40
