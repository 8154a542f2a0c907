"""Overdue decisions: where each one is stuck, and re-driving it safely.

Re-driving relies on the idempotency the path already has: the run id is derived from the
event id (a second trigger is a 409, never a second run), and publishing is once per event
id (a cleared run that publishes again appends nothing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import redis

from onboarding.airflow import DagRun, TriggerOutcome
from onboarding.awaiting import accepted_conf, clear_awaiting
from onboarding.keys import marker_key, run_id_for
from sla.metrics import overdue_now
from sla.settings import SlaSettings


class Stuck(StrEnum):
    NEVER_TRIGGERED = "never_triggered"  # Airflow has no run for it
    RUN_QUEUED = "run_queued"
    RUN_RUNNING = "run_running"
    RUN_FAILED = "run_failed"  # and its failure handler could not publish the review either
    PUBLISH_MISSING = "publish_missing"  # the run succeeded, yet no decision is on the stream
    UNKNOWN = "unknown"  # Airflow did not answer


class RunsApi(Protocol):
    def trigger(self, run_id: str, conf: dict[str, Any]) -> TriggerOutcome: ...

    def get_run(self, run_id: str) -> DagRun | None: ...

    def clear_run(self, run_id: str) -> bool: ...


@dataclass(frozen=True)
class OverdueDecision:
    event_id: str
    run_id: str
    accepted_ts: float
    age_s: float
    stuck: Stuck
    run_state: str | None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "run_id": self.run_id,
            "accepted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.accepted_ts)),
            "age_s": round(self.age_s, 1),
            "stuck": self.stuck.value,
            "run_state": self.run_state,
            "detail": self.detail,
        }


def where_stuck(run: DagRun | None) -> Stuck:
    if run is None:
        return Stuck.NEVER_TRIGGERED
    if run.state == "queued":
        return Stuck.RUN_QUEUED
    if run.state == "running":
        return Stuck.RUN_RUNNING
    if run.state == "failed":
        return Stuck.RUN_FAILED
    if run.state == "success":
        return Stuck.PUBLISH_MISSING
    return Stuck.UNKNOWN


def list_overdue(
    client: redis.Redis,
    settings: SlaSettings,
    airflow: RunsApi | None,
    now: float | None = None,
    limit: int | None = None,
) -> list[OverdueDecision]:
    """Overdue signups, oldest first, each with where it is stuck (Airflow asked per run)."""
    now = now or time.time()
    out = []
    for event_id, accepted_ts in overdue_now(client, settings, now)[:limit]:
        run_id = run_id_for(event_id)
        run, stuck, detail = None, Stuck.UNKNOWN, "Airflow not asked"
        if airflow is not None:
            try:
                run = airflow.get_run(run_id)
                stuck, detail = where_stuck(run), ""
            except Exception as err:  # any API failure: still list it, say why it is unknown
                detail = f"{type(err).__name__}: {err}"[:300]
        out.append(
            OverdueDecision(event_id, run_id, accepted_ts, now - accepted_ts, stuck, run.state if run else None, detail)
        )
    return out


def redrive(client: redis.Redis, settings: SlaSettings, airflow: RunsApi, item: OverdueDecision) -> str:
    """Push one overdue signup forward; returns what was done (one short word or phrase)."""
    if client.exists(marker_key(settings.streams.decisions_stream, item.event_id)):
        clear_awaiting(client, settings.streams, item.event_id)
        return "already_decided"
    if item.stuck is Stuck.NEVER_TRIGGERED:
        conf = accepted_conf(client, settings.streams, item.event_id)
        if conf is None:
            return "no_conf: replay the signup with onboarding-deadletters or re-publish it"
        outcome = airflow.trigger(item.run_id, conf)
        return "triggered" if outcome is TriggerOutcome.CREATED else "run_exists"
    if item.stuck in (Stuck.RUN_FAILED, Stuck.PUBLISH_MISSING):
        return "cleared" if airflow.clear_run(item.run_id) else "run_vanished"
    if item.stuck in (Stuck.RUN_QUEUED, Stuck.RUN_RUNNING):
        return "waiting: the run is still in progress; check the realtime scheduler and executor"
    return "skipped: Airflow did not answer"
