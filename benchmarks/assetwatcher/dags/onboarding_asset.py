"""Onboarding on Airflow's own event-driven path: an AssetWatcher on a Redis pub/sub channel.

Benchmark variant (d) only (benchmarks/latency.py, `assetwatcher`); not deployed anywhere.
The triggerer runs the watcher: common.messaging's `MessageQueueTrigger` with scheme
`redis+pubsub`, which the Redis provider turns into its `AwaitMessageTrigger` (SUBSCRIBE
to the channels, yield the first message). Each message becomes an asset event whose
`extra` is `{"from_trigger": True, "payload": <the pub/sub message>}`, the published JSON
being `payload["data"]`. The scheduler then starts a run of this DAG, which may consume
several asset events at once (all the events queued since the DAG's last run): the one
task decides every signup it was given, with the same steps as dags/realtime/onboarding_dag.py
(`risk.steps.run_stages`, `decision_event`, `publish_decision`), and stamps each decision with the
run id and `events_in_run`, so the benchmark can count signups per run.

Settings, read when the file is parsed:
    ASSETWATCHER_CHANNEL        the pub/sub channel (default onboarding:signups:pubsub)
    ASSETWATCHER_REDIS_URL      the Redis the benchmark publishes to; the trigger itself only
                                takes an Airflow connection id (AwaitMessageTrigger(redis_conn_id)),
                                so the instance defines that connection from the same URL
    ASSETWATCHER_REDIS_CONN_ID  that connection's id (default assetwatcher_redis)
    ASSETWATCHER_POLL_INTERVAL  seconds the trigger sleeps when no message is waiting
                                (the provider's default is 60 s; default here 0.05 s)
The tasks publish decisions with the usual settings (REDIS_URL, DECISIONS_STREAM, RISK_MODEL_DIR).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
from airflow.sdk import Asset, AssetWatcher, dag, task

CHANNEL = os.environ.get("ASSETWATCHER_CHANNEL", "onboarding:signups:pubsub")
REDIS_URL = os.environ.get("ASSETWATCHER_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_CONN_ID = os.environ.get("ASSETWATCHER_REDIS_CONN_ID", "assetwatcher_redis")
POLL_INTERVAL = float(os.environ.get("ASSETWATCHER_POLL_INTERVAL", "0.05"))
log = logging.getLogger("onboarding")

SIGNUPS = Asset(
    name="onboarding_signups",
    uri=f"redis+pubsub://{CHANNEL}",
    watchers=[
        AssetWatcher(
            name="onboarding_signups_pubsub",
            trigger=MessageQueueTrigger(
                scheme="redis+pubsub",
                channels=[CHANNEL],
                redis_conn_id=REDIS_CONN_ID,
                poll_interval=POLL_INTERVAL,
            ),
        )
    ],
)


def signups_of(extra: dict[str, Any] | None) -> dict[str, Any] | None:
    """The signup a Redis pub/sub asset event carries, or None if it carries none."""
    payload = (extra or {}).get("payload")
    if not isinstance(payload, dict) or payload.get("type") != "message":
        return None
    data = payload.get("data")
    try:
        signup = json.loads(data) if isinstance(data, (str, bytes)) else data
    except ValueError:
        return None
    if not isinstance(signup, dict) or "event_id" not in signup or "user_id" not in signup:
        return None
    return signup


def _decision_event_class() -> type:
    from onboarding.decision import DecisionEvent

    @dataclass
    class RunDecisionEvent(DecisionEvent):
        """A decision event plus how many signups the run that decided it decided."""

        events_in_run: int = 1

        def to_dict(self) -> dict[str, Any]:
            return {**super().to_dict(), "events_in_run": self.events_in_run}

    return RunDecisionEvent


@dag(
    dag_id="onboarding_asset",
    schedule=[SIGNUPS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    # As the realtime DAG. Asset events that arrive while 16 runs are active wait in the
    # asset's queue and are folded into the next run.
    max_active_runs=16,
    tags=["benchmark", "onboarding"],
)
def onboarding_asset() -> None:
    """Decide every signup that the triggering asset events carry."""

    @task(retries=0, execution_timeout=timedelta(seconds=120), show_return_value_in_logs=False)
    def decide(triggering_asset_events: Any = None, ti: Any = None, run_id: str | None = None) -> list[str]:
        from onboarding.decision import publish_decision, utc_now
        from onboarding.redis_clients import Role, shared
        from risk import steps
        from risk.artifacts import model_store
        from risk.settings import RiskSettings

        settings = RiskSettings.from_env()
        started = ti.start_date.isoformat() if getattr(ti, "start_date", None) else utc_now()
        received: list[tuple[dict[str, Any], str | None]] = []
        for events in (triggering_asset_events or {}).values():
            for asset_event in events:
                when = getattr(asset_event, "timestamp", None)
                signup = signups_of(asset_event.extra)
                if signup is None:
                    log.warning("onboarding_asset: the asset event of %s carries no signup", when)
                    continue
                received.append((signup, when.isoformat() if when is not None else None))
        event_class = _decision_event_class()
        client = shared(settings.streams.redis_url, Role.TASK)
        published: list[str] = []
        for signup, asset_event_at in received:
            accepted_at = signup.get("accepted_at")
            try:
                decided = steps.run_stages(
                    signup, accepted_at, started, lambda: model_store(settings.model_dir).current()
                )
                event = steps.decision_event(signup, decided, run_id, None, accepted_at)
            except steps.StageFailed as err:
                event = steps.decision_event(signup, None, run_id, str(err), accepted_at)
            if asset_event_at:
                event.timestamps["asset_event_at"] = asset_event_at
            stamped = event_class(**vars(event), events_in_run=len(received))
            created, entry_id = publish_decision(
                client, settings.streams.decisions_stream, stamped, settings.decision_marker_ttl_s
            )
            log.info(
                "onboarding_asset: %s decision=%s event_id=%s entry=%s (%d in run %s)",
                "published" if created else "already published",
                stamped.decision,
                stamped.event_id,
                entry_id,
                len(received),
                run_id,
            )
            published.append(entry_id)
        return published

    decide()


onboarding_asset()
