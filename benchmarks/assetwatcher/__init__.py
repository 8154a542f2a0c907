"""Benchmark variant (d): Airflow's own event-driven path, an AssetWatcher fed by Redis pub/sub.

    with assetwatcher_instance(home, "redis://127.0.0.1:6379/6", "decisions") as handle:
        handle.publish({**new_signup(), "accepted_at": utc_now()})
        ...
        handle.runs()          # run ids and how many asset events each consumed

A separate Airflow instance (api-server, scheduler, dag-processor and triggerer: the watcher
runs in the triggerer) with benchmarks/assetwatcher/dags as its DAG folder and the realtime
instance's tuned settings (deploy/realtime/airflow.cfg and its local settings, which warm
the model in the scheduler), except two: the SimpleAuthManager (only the benchmark talks to
this instance; its admin password is generated like the realtime one's) and no StatsD
(a realtime stack's exporter may be listening on the same port).

The watcher is `MessageQueueTrigger(scheme="redis+pubsub", ...)` from
apache-airflow-providers-common-messaging, which resolves to the Redis provider's
`AwaitMessageTrigger`: it SUBSCRIBEs, yields the first message and ends; the triggerer then
starts it again (about 1 to 3 s later, its loops run once a second). Redis pub/sub keeps
nothing for a channel nobody listens to, so a signup published in that gap is gone: it
never becomes an asset event and is never decided. `publish` records the signups that
Redis delivered to no subscriber (PUBLISH returned 0) in `handle.unheard`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
import redis

from onboarding.decision import DecisionEvent
from onboarding.settings import StreamSettings
from stack.errors import StackError
from stack.instance import AirflowInstance, InstanceSpec, ensure_postgres_database, use_wal
from stack.processes import ManagedProcess
from stack.settings import PROJECT_ROOT

DAG_ID = "onboarding_asset"
DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
REALTIME_DEPLOY = PROJECT_ROOT / "deploy" / "realtime"
CONN_ID = "assetwatcher_redis"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
WARMUP_USER = "assetwatcher-warmup"

__all__ = ["DAG_ID", "AssetWatcherHandle", "assetwatcher_instance", "redis_connection_json"]


def redis_connection_json(redis_url: str) -> str:
    """The Airflow connection (AIRFLOW_CONN_<ID>, JSON form) for a Redis URL.

    The Redis provider's hook takes host, port, login and password from the connection and
    the database from its extra (`{"db": n}`), not from the URL's path."""
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// or rediss:// URL: {parts.scheme}://...")
    db_text = parts.path.lstrip("/") or "0"
    extra: dict[str, Any] = {"db": int(db_text) if db_text.isdigit() else 0}
    if parts.scheme == "rediss":
        extra["ssl"] = True
    conn: dict[str, Any] = {
        "conn_type": "redis",
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 6379,
        "extra": extra,
    }
    if parts.username:
        conn["login"] = unquote(parts.username)
    if parts.password:
        conn["password"] = unquote(parts.password)
    return json.dumps(conn)


@dataclass
class AssetWatcherHandle:
    """A running assetwatcher instance, as the benchmark sees it."""

    instance: AirflowInstance
    triggerer: ManagedProcess
    redis: redis.Redis
    channel: str
    decisions_stream: str
    warmup_event_ids: set[str] = field(default_factory=set)
    # Event ids of signups that no subscriber received (PUBLISH returned 0): lost for sure.
    unheard: list[str] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return self.instance.spec.api_url

    def processes(self) -> list[ManagedProcess]:
        return [*self.instance.processes(), self.triggerer]

    def process_pids(self) -> list[int]:
        """The pids of the four Airflow components (their children are theirs: task processes
        under the scheduler, the trigger runner under the triggerer)."""
        return [pid for pid in (p.pid() for p in self.processes()) if pid is not None]

    def publish(self, event: dict[str, Any]) -> None:
        """PUBLISH the signup (JSON) to the watched channel; `accepted_at` is the caller's."""
        receivers = self.redis.publish(self.channel, json.dumps(event, separators=(",", ":")))
        if receivers == 0:
            self.unheard.append(str(event.get("event_id")))

    def subscribers(self) -> int:
        """How many connections are subscribed to the channel now (1 while the watcher listens)."""
        reply = self.redis.pubsub_numsub(self.channel)
        return int(reply[0][1]) if reply else 0

    def decisions(self) -> list[dict[str, Any]]:
        """Every decision on the stream, as published (with `events_in_run` where this DAG made it)."""
        out = []
        for _entry_id, fields in self.redis.xrange(self.decisions_stream):
            raw = fields.get(b"payload") or fields.get("payload")
            if raw is not None:
                out.append(json.loads(raw))
        return out

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.instance.token()}"}

    def runs(self) -> list[dict[str, Any]]:
        """Every run of the DAG, oldest first: `run_id`, `state`, `run_type`, `start_date`,
        `end_date`, `asset_events` (how many asset events it consumed, from the REST API),
        `decisions` (how many decisions on the stream name the run), `events_in_run` (what the
        run's decisions say it decided) and `warmup` (the instance's own warm-up run)."""
        headers = self._headers()
        base = f"{self.api_url}/api/v2/dags/{DAG_ID}/dagRuns"
        dag_runs: list[dict[str, Any]] = []
        with httpx.Client(headers=headers, timeout=30) as http:
            while True:
                response = http.get(base, params={"limit": 100, "offset": len(dag_runs), "order_by": "run_after"})
                response.raise_for_status()
                page = response.json()["dag_runs"]
                dag_runs.extend(page)
                if len(page) < 100:
                    break
            consumed: dict[str, int] = {}
            for run in dag_runs:
                url = f"{base}/{quote(run['dag_run_id'], safe='')}/upstreamAssetEvents"
                response = http.get(url)
                response.raise_for_status()
                consumed[run["dag_run_id"]] = int(response.json().get("total_entries", 0))
        by_run: dict[str, list[dict[str, Any]]] = {}
        for decision in self.decisions():
            by_run.setdefault(str(decision.get("run_id")), []).append(decision)
        out = []
        for run in dag_runs:
            decided = by_run.get(run["dag_run_id"], [])
            out.append(
                {
                    "run_id": run["dag_run_id"],
                    "state": run.get("state"),
                    "run_type": run.get("run_type"),
                    "start_date": run.get("start_date"),
                    "end_date": run.get("end_date"),
                    "asset_events": consumed.get(run["dag_run_id"], 0),
                    "decisions": len(decided),
                    "events_in_run": max((int(d.get("events_in_run") or 0) for d in decided), default=0),
                    "warmup": any(d.get("event_id") in self.warmup_event_ids for d in decided),
                }
            )
        return out

    def wait_for_decision(self, event_id: str, timeout_s: float) -> DecisionEvent | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for decision in self.decisions():
                if decision.get("event_id") == event_id:
                    return DecisionEvent.from_dict(decision)
            self._check_running()
            time.sleep(0.2)
        return None

    def wait_subscribed(self, timeout_s: float) -> float:
        """Wait until the watcher is subscribed to the channel; returns the seconds it took."""
        started = time.monotonic()
        while self.subscribers() < 1:
            if time.monotonic() - started > timeout_s:
                raise StackError(f"no subscriber on {self.channel} after {timeout_s:.0f} s\n{self._tails()}")
            self._check_running()
            time.sleep(0.05)
        return time.monotonic() - started

    def warm_up(self, timeout_s: float = 300.0) -> float:
        """Publish signups until one is decided through the whole path (watcher -> asset
        event -> run -> decision), then wait for the watcher to listen again.

        Returns the seconds it took. A signup published before the triggerer subscribed is
        lost (pub/sub), so it publishes again only while nobody has received one."""
        from onboarding.decision import utc_now
        from risk.samples import new_signup

        started = time.monotonic()
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            self.wait_subscribed(max(1.0, deadline - time.monotonic()))
            event = {**new_signup(user_id=WARMUP_USER), "accepted_at": utc_now()}
            self.warmup_event_ids.add(event["event_id"])
            self.publish(event)
            if event["event_id"] in self.unheard:
                continue  # the subscriber went away in between: again
            if self.wait_for_decision(event["event_id"], max(1.0, deadline - time.monotonic())) is not None:
                self.wait_subscribed(max(1.0, deadline - time.monotonic()))
                return time.monotonic() - started
        raise StackError(f"no warm-up decision after {timeout_s:.0f} s\n{self._tails()}")

    def _check_running(self) -> None:
        for process in self.processes():
            if not process.running():
                raise StackError(f"{process.name} exited:\n{process.tail(40)}")

    def _tails(self, lines: int = 25) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(lines)}" for p in self.processes())


def _config(home: Path) -> Path:
    """deploy/realtime/airflow.cfg with the SimpleAuthManager instead of FAB, and no StatsD."""
    text = (REALTIME_DEPLOY / "airflow.cfg").read_text()
    text, found = re.subn(
        r"(?m)^auth_manager\s*=.*$",
        f"auth_manager = {SIMPLE_AUTH_MANAGER}\n"
        "# Benchmark only: users and their generated passwords file (stack/instance.py)\n"
        "simple_auth_manager_users = admin:admin",
        text,
    )
    if found != 1:
        raise StackError(f"{REALTIME_DEPLOY / 'airflow.cfg'} no longer sets [core] auth_manager once")
    text = re.sub(r"(?m)^statsd_on\s*=.*$", "statsd_on = False", text)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "assetwatcher.cfg.in"
    path.write_text(
        "# Generated by benchmarks/assetwatcher from deploy/realtime/airflow.cfg: the SimpleAuthManager\n"
        "# instead of FAB, and StatsD off. Copied to airflow.cfg by AirflowInstance.prepare().\n" + text
    )
    return path


def _model_dir() -> Path:
    from risk.artifacts import current_version, load_model
    from risk.errors import RiskError
    from risk.settings import RiskSettings

    model_dir = RiskSettings.from_env().model_dir
    try:
        load_model(model_dir, current_version(model_dir))
    except RiskError as err:
        raise StackError(
            f"no usable risk model in {model_dir} ({err}): set RISK_MODEL_DIR or train one (onboarding-train)"
        ) from err
    return model_dir


@contextlib.contextmanager
def assetwatcher_instance(
    home: Path,
    redis_url: str,
    decisions_stream: str,
    api_port: int = 28180,
    scheduler_health_port: int = 28184,
    database_url: str | None = None,
    channel: str | None = None,
    ready_timeout_s: float = 300.0,
    log_server_port: int | None = None,
    trigger_log_server_port: int | None = None,
) -> Iterator[AssetWatcherHandle]:
    """Start the instance, warm it up (one signup decided end to end) and yield its handle;
    stop every process on exit.

    `database_url`: PostgreSQL metadata (created if missing; the caller drops it), or None for
    SQLite in `home`. `channel`: the pub/sub channel (default: one of its own; Redis pub/sub
    channels are not per database, so two instances must not share one). The log servers of
    the scheduler and the triggerer listen on `log_server_port` and `trigger_log_server_port`
    (default: the two ports after `scheduler_health_port`; Airflow's 8793/8794 may be taken)."""
    home = Path(home).resolve()
    model_dir = _model_dir()
    channel = channel or f"{decisions_stream}:assetwatcher:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    streams = StreamSettings.from_env({"REDIS_URL": redis_url, "DECISIONS_STREAM": decisions_stream})
    env = {
        **os.environ,
        # What the DAG's task uses (risk.settings.RiskSettings.from_env).
        "REDIS_URL": streams.redis_url,
        "SIGNUPS_STREAM": streams.signups_stream,
        "DECISIONS_STREAM": streams.decisions_stream,
        "DEAD_LETTER_STREAM": streams.dead_letter_stream,
        "RISK_MODEL_DIR": str(model_dir),
        # What the DAG file reads when parsed, and the connection its trigger uses.
        "ASSETWATCHER_REDIS_URL": redis_url,
        "ASSETWATCHER_CHANNEL": channel,
        "ASSETWATCHER_REDIS_CONN_ID": CONN_ID,
        f"AIRFLOW_CONN_{CONN_ID.upper()}": redis_connection_json(redis_url),
    }
    local_settings = REALTIME_DEPLOY / "airflow_local_settings.py"
    spec = InstanceSpec(
        name="assetwatcher",
        home=home,
        config_file=_config(home),
        dags_folder=DAGS_FOLDER,
        api_port=api_port,
        scheduler_health_port=scheduler_health_port,
        database_url=database_url,
        local_settings=local_settings if local_settings.is_file() else None,
        extra_env={
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_server_port or scheduler_health_port + 1),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_log_server_port or scheduler_health_port + 2),
        },
    )
    instance = AirflowInstance(spec, env)
    instance.prepare()
    if database_url and database_url.startswith("postgresql"):
        ensure_postgres_database(database_url)
    instance.migrate()
    if instance.database_url.startswith("sqlite"):
        use_wal(home / "airflow.db")  # readers do not block the triggerer's and tasks' commits
    triggerer = ManagedProcess(
        name=f"{spec.name}-triggerer",
        argv=[sys.executable, "-m", "airflow", "triggerer"],
        env=instance.env(),
        run_dir=spec.run_dir or home / "run",
        log_dir=spec.log_dir or home / "logs",
    )
    client = redis.Redis.from_url(redis_url)
    handle = AssetWatcherHandle(instance, triggerer, client, channel, decisions_stream)
    try:
        instance.start()
        triggerer.start()
        instance.wait_ready((DAG_ID,), timeout_s=ready_timeout_s)
        handle.warm_up(ready_timeout_s)
        yield handle
    finally:
        # The triggerer first (no new asset events), then the scheduler, then the rest.
        triggerer.stop(timeout_s=20)
        instance.stop(timeout_s=20)
        client.close()


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def with_accepted_at(event: dict[str, Any]) -> dict[str, Any]:
    """The signup as the benchmark publishes it: stamped with its acceptance time."""
    return {**event, "accepted_at": iso_now()}
