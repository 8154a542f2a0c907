"""Signup -> decision latency and throughput, side by side, on this machine.

    python benchmarks/latency.py [--variants tuned,defaults,inprocess,assetwatcher]
                                 [--rate 2] [--duration 60] [--burst 500]
                                 [--metadata-db postgres] [--out docs/benchmarks]

For each variant in turn: start it, warm it up, then
  1. `sustained`: publish signups at --rate per second for --duration seconds (an open
     loop on a fixed schedule: a slow system does not slow the load down);
  2. `burst`: publish --burst signups at once.
A collector reads the decisions stream and stamps when each decision became visible to
the app. Latency is the app's view: from publishing the signup to seeing its decision.
Every event must be decided: one still undecided when the benchmark stops waiting (the
drain time, or --stall-timeout without any decision) is reported as `undecided`, and as
lost only where the variant cannot decide it later (`assetwatcher`: pub/sub keeps nothing).

Variants:
  tuned        the full local stack (`onboarding-stack`: realtime + batch Airflow,
               listeners, rq, SLA service) with the repo's settings;
  stepwise     the same, with the onboarding DAG in its one-task-per-step shape
               (benchmarks/dags/onboarding_stepwise.py: enrich -> score -> decide -> publish);
  defaults     the same stack and DAG, the realtime instance on Airflow's default
               settings (only what security and correctness need is kept);
  unwarmed     (only when asked for) `tuned` without deploy/realtime/airflow_local_settings.py:
               no model, scikit-learn or DAG imports warmed before the task processes fork,
               no schema-check cache in the API server;
  inprocess    the listener deciding in its own process, no Airflow: the floor;
  assetwatcher Airflow's own event-driven path: an AssetWatcher with the Redis
               message-queue trigger (benchmarks/assetwatcher), one task per run.

Output: a JSON file, a Markdown table (with ratios to `tuned`) and a PNG plot in --out,
and the same table on stdout, each with the command that produced it. The Redis database
of --redis-url belongs to the benchmark: it is emptied before each variant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402  (Airflow's own dependency)
import redis  # noqa: E402

from onboarding.decision import DecisionEvent  # noqa: E402
from onboarding.settings import StreamSettings  # noqa: E402
from risk.samples import new_signup  # noqa: E402

VARIANTS = ("tuned", "stepwise", "defaults", "inprocess", "assetwatcher")
STEPWISE_DAGS = ROOT / "benchmarks" / "dags"
# Not in the default set: a lever measured on its own, side by side with `tuned`.
EXTRA_VARIANTS = ("unwarmed",)
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
STAGES = (
    # name, from, to (timestamps of the decision event; "published" = the generator's
    # publish time, "seen" = when the collector saw the decision)
    ("listener", "published", "accepted_at"),
    ("to_first_task", "accepted_at", "run_started_at"),
    ("steps", "run_started_at", "decided_at"),
    ("publish", "decided_at", "published_at"),
    ("delivery", "published_at", "seen"),
)
# Settings of deploy/realtime/airflow.cfg that exist for speed; `defaults` drops them
# (the rest is security or correctness and stays).
TUNING = {
    "core": ("parallelism", "max_active_tasks_per_dag"),
    "scheduler": ("scheduler_idle_sleep_time", "task_queued_timeout", "scheduler_heartbeat_sec"),
    "dag_processor": ("refresh_interval", "min_file_process_interval", "parsing_processes"),
    "api": ("workers",),
}


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- measuring ---------------------------------------------------------------------------


@dataclass
class Sample:
    event_id: str
    published: float
    seen: float | None = None
    decision: DecisionEvent | None = None

    @property
    def latency(self) -> float | None:
        return None if self.seen is None else self.seen - self.published

    def stage_times(self) -> dict[str, float]:
        if self.decision is None or self.seen is None:
            return {}
        marks = {"published": self.published, "seen": self.seen}
        for key, value in self.decision.timestamps.items():
            with contextlib.suppress(ValueError, TypeError):
                marks[key] = datetime.fromisoformat(value).timestamp()
        return {name: marks[b] - marks[a] for name, a, b in STAGES if a in marks and b in marks}


class Collector(threading.Thread):
    """Reads the decisions stream from the current end; stamps when each decision appears."""

    def __init__(self, client: redis.Redis, stream: str) -> None:
        super().__init__(daemon=True, name="collector")
        self.client = client
        self.stream = stream
        last = client.xrevrange(stream, count=1)
        self.last = last[0][0].decode() if last else "0-0"
        self.seen: dict[str, tuple[float, DecisionEvent]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            reply = self.client.xread({self.stream: self.last}, count=1000, block=200)
            now = time.time()
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    self.last = entry_id.decode()
                    raw = fields.get(b"payload")
                    if raw is None:
                        continue
                    event = DecisionEvent.from_dict(json.loads(raw))
                    with self.lock:
                        self.seen.setdefault(event.event_id, (now, event))

    def resolve(self, samples: list[Sample]) -> int:
        with self.lock:
            for sample in samples:
                if sample.seen is None and sample.event_id in self.seen:
                    sample.seen, sample.decision = self.seen[sample.event_id]
        return sum(s.seen is not None for s in samples)


class CpuMeter:
    """CPU used between start and stop: the whole host, the variant's own processes (and
    their children) by component, and the PostgreSQL and Redis servers it talks to."""

    def __init__(self, pids: Callable[[], list[int]], names: Callable[[], dict[int, str]] | None = None) -> None:
        self.pids = pids
        self.names = names or dict

    def __enter__(self) -> CpuMeter:
        self.t0 = time.monotonic()
        self.host0 = psutil.cpu_times()
        self.own0 = self._own()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self.t0
        host = psutil.cpu_times()
        busy = sum(getattr(host, f) - getattr(self.host0, f) for f in ("user", "system", "nice", "irq", "softirq"))
        own = self._own()
        by_group: dict[str, float] = {}
        for key, (group, cpu_s) in own.items():
            by_group[group] = by_group.get(group, 0.0) + cpu_s - self.own0.get(key, (group, 0.0))[1]
        own_s = sum(v for g, v in by_group.items() if g not in ("postgres", "redis"))
        self.result = {
            "host_cores": round(busy / wall, 2),
            "variant_cores": round(own_s / wall, 2),
            "by_component_cores": {g: round(v / wall, 2) for g, v in sorted(by_group.items(), key=lambda i: -i[1])},
        }
        self.variant_cpu_s = own_s
        self.by_component_s = {g: v for g, v in sorted(by_group.items(), key=lambda i: -i[1])}

    def _own(self) -> dict[tuple[int, float], tuple[str, float]]:
        """(component, CPU seconds) per process, keyed by pid and start time so a reused pid
        is not counted twice. A finished child's CPU shows in its parent's children times."""
        out: dict[tuple[int, float], tuple[str, float]] = {}
        names = self.names()

        def add(proc: psutil.Process, group: str) -> None:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                out[(proc.pid, proc.create_time())] = (group, t.user + t.system + t.children_user + t.children_system)

        for pid in self.pids():
            try:
                root = psutil.Process(pid)
                tops = root.children()
            except psutil.Error:
                continue
            add(root, "supervisor" if tops else _component(root))
            for top in tops or [root]:
                group = _service_component(names[top.pid]) if top.pid in names else _component(top)
                if top is not root:
                    add(top, group)
                # A scheduler's children are the executor's workers and the task processes.
                child_group = f"{group.removesuffix(' scheduler')} tasks" if group.endswith("scheduler") else group
                with contextlib.suppress(psutil.Error):
                    for child in top.children(recursive=True):
                        add(child, child_group)
        for proc in psutil.process_iter(["name"]):
            name = proc.info["name"] or ""
            if name.startswith("postgres"):
                add(proc, "postgres")
            elif name.startswith("redis-server"):
                add(proc, "redis")
        return out


class WorkCounter:
    """What a phase asked of the shared servers: Redis commands (all clients of the server,
    the benchmark's own publisher and collector included) and, with PostgreSQL metadata,
    the realtime database's transactions and row writes (`pg_stat_database`)."""

    def __init__(self, redis_client: redis.Redis, metadata_url: str | None) -> None:
        self.redis = redis_client
        self.metadata_url = metadata_url

    def _read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        stats = self.redis.info("commandstats")
        out["redis_commands"] = float(sum(v["calls"] for v in stats.values() if isinstance(v, dict)))
        if self.metadata_url and self.metadata_url.startswith("postgresql"):
            import psycopg2
            from sqlalchemy.engine import make_url

            url = make_url(self.metadata_url)
            with (
                contextlib.closing(
                    psycopg2.connect(host=url.host, port=url.port, user=url.username, dbname="postgres")
                ) as conn,
                conn.cursor() as cur,
            ):
                cur.execute("SELECT pg_stat_clear_snapshot()")
                cur.execute(
                    "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted, tup_fetched"
                    " FROM pg_stat_database WHERE datname = %s",
                    (url.database,),
                )
                row = cur.fetchone()
            if row:
                out["pg_transactions"], out["pg_rows_written"], out["pg_rows_fetched"] = map(float, row)
        return out

    def __enter__(self) -> WorkCounter:
        self.before = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        # PostgreSQL publishes a backend's counters at most once a second.
        time.sleep(1.5)
        after = self._read()
        self.delta = {k: after[k] - self.before.get(k, 0.0) for k in after}

    def per_decision(self, decided: int) -> dict[str, float | None]:
        return {k: round(v / decided, 1) if decided else None for k, v in self.delta.items()}


def _service_component(service: str) -> str:
    """The component of a stack service: `realtime-api-server` -> `realtime api-server`,
    `listener-2` -> `listener`."""
    kind, _, rest = service.partition("-")
    if kind in ("realtime", "batch") and rest:
        return f"{kind} {rest}"
    return "listener" if kind == "listener" else service


def _component(proc: psutil.Process) -> str:
    """A readable name for a process the variant started: `realtime scheduler`, `listener` ..."""
    try:
        cmd = " ".join(proc.cmdline())
        home = proc.environ().get("AIRFLOW_HOME", "")
    except psutil.Error:
        return "other"
    for part in ("api-server", "scheduler", "dag-processor", "triggerer"):
        if f"airflow {part}" in cmd or f"airflow {part.replace('-', '_')}" in cmd or cmd.endswith(f" {part}"):
            return f"{Path(home).name or 'airflow'} {part}"
    for marker, name in (
        ("-m listener", "listener"),
        ("benchmarks.inprocess", "inprocess decider"),
        ("onboarding-sla", "sla"),
        ("rq", "rq"),
        ("onboarding-archive", "archive metrics"),
        ("redis-server", "redis"),
    ):
        if marker in cmd:
            return name
    return Path(proc.cmdline()[0]).name if proc.cmdline() else "other"


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarize(samples: list[Sample], t_start: float, cpu: dict[str, float], dead_letters: int) -> dict[str, Any]:
    decided = [s for s in samples if s.latency is not None]
    latencies = sorted(s.latency for s in decided)  # type: ignore[misc]
    out: dict[str, Any] = {"published": len(samples), "decided": len(decided), "undecided": len(samples) - len(decided)}
    out["dead_lettered"] = dead_letters
    if latencies:
        out |= {
            "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(percentile(latencies, 0.95), 3),
            "p99_s": round(percentile(latencies, 0.99), 3),
            "max_s": round(latencies[-1], 3),
            "mean_s": round(statistics.fmean(latencies), 3),
        }
        span = max(s.seen for s in decided) - t_start  # type: ignore[type-var]
        out["throughput_per_s"] = round(len(decided) / span, 2) if span > 0 else None
        stages: dict[str, list[float]] = {}
        for sample in decided:
            for name, value in sample.stage_times().items():
                stages.setdefault(name, []).append(value)
        out["stages_p50_s"] = {name: round(statistics.median(v), 3) for name, v in stages.items()}
        runs = {s.decision.run_id for s in decided if s.decision and s.decision.run_id}
        out["runs"] = len(runs)
        out["events_per_run"] = round(len(decided) / len(runs), 2) if runs else None
        reviews = sum(1 for s in decided if s.decision and s.decision.error)
        out["failed_pipeline_reviews"] = reviews
    out["cpu"] = cpu
    return out


# -- variants ----------------------------------------------------------------------------


@dataclass
class Running:
    """A started variant: how to publish a signup and which processes are its own."""

    publish: Callable[[dict[str, Any]], None]
    pids: Callable[[], list[int]]
    description: str
    settings: dict[str, Any] = field(default_factory=dict)
    # What else the variant can tell about a phase's signups (e.g. how many no one heard).
    notes: Callable[[list[str]], dict[str, Any]] | None = None
    # The realtime metadata database's URL, when it is PostgreSQL (for its work counters).
    metadata_url: str | None = None
    # pid -> service name of the processes the supervisor started (their titles may hide it).
    names: Callable[[], dict[int, str]] | None = None


def _stack_settings(home: Path, redis_url: str, metadata_db: str) -> Any:
    from stack.settings import StackSettings

    # Ports of their own: a demo stack on the default ports may be up beside the benchmark.
    return StackSettings(
        home=home,
        metadata_db=metadata_db,
        redis_url=redis_url,
        realtime_api_port=28380,
        realtime_scheduler_health_port=28381,
        listener_metrics_port=28390,
        batch_api_port=28382,
        batch_scheduler_health_port=28383,
        archive_metrics_port=28395,
        sla_port=28396,
        realtime_log_server_port=28384,
        batch_log_server_port=28385,
    )


def defaults_config(tuned: Path, target: Path) -> list[str]:
    """deploy/realtime/airflow.cfg without its speed settings; returns what was dropped."""
    dropped: list[str] = []
    section = ""
    lines = []
    for line in tuned.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
        key = stripped.split("=", 1)[0].strip() if "=" in stripped and not stripped.startswith("#") else None
        if key and key in TUNING.get(section, ()):
            dropped.append(f"[{section}] {stripped}")
            continue
        lines.append(line)
    target.write_text("\n".join(lines) + "\n")
    return dropped


@contextlib.contextmanager
def stack_variant(
    name: str, home: Path, redis_url: str, metadata_db: str, realtime_env: dict[str, str] | None = None
) -> Iterator[Running]:
    from stack.instance import InstanceSpec
    from stack.local import Stack

    settings = _stack_settings(home, redis_url, metadata_db)
    described: dict[str, Any] = {"metadata_db": metadata_db}

    class _Stack(Stack):
        def _instance(self, kind: str, api_port: int, health_port: int, log_server_port: int):  # type: ignore[override]
            instance = super()._instance(kind, api_port, health_port, log_server_port)
            if name == "defaults" and kind == "realtime":
                home.mkdir(parents=True, exist_ok=True)
                cfg = home / "realtime-defaults.cfg"
                described["dropped"] = defaults_config(instance.spec.config_file, cfg)
                # ... and no model warmed up in the scheduler before it forks task processes.
                spec = instance.spec
                instance.spec = InstanceSpec(**{**spec.__dict__, "config_file": cfg, "local_settings": None})
            if realtime_env and kind == "realtime":
                spec = instance.spec
                instance.spec = InstanceSpec(**{**spec.__dict__, "extra_env": {**spec.extra_env, **realtime_env}})
                described["realtime_env"] = realtime_env
            if name == "unwarmed" and kind == "realtime":
                instance.spec = InstanceSpec(**{**instance.spec.__dict__, "local_settings": None})
                described["local_settings"] = None
            if name == "stepwise" and kind == "realtime":
                # The same dag id, one task per step: the realtime instance parses this folder
                # instead of dags/realtime; its task bodies are benchmarks/stepwise.py, which
                # the wheel does not ship: the instance imports them from the checkout.
                spec = instance.spec
                pythonpath = os.pathsep.join(p for p in (str(ROOT), spec.extra_env.get("PYTHONPATH")) if p)
                instance.spec = InstanceSpec(
                    **{
                        **spec.__dict__,
                        "dags_folder": STEPWISE_DAGS,
                        "extra_env": {**spec.extra_env, "PYTHONPATH": pythonpath},
                    }
                )
                described["dag_shape"] = "stepwise"
                described["dags_folder"] = _shown(STEPWISE_DAGS)
            return instance

    stack = _Stack(settings)
    if metadata_db == "postgres":
        from stack.instance import drop_postgres_database

        for url in (settings.database_url, settings.batch_database_url):
            drop_postgres_database(url)  # a fresh metadata database per variant
    log(f"{name}: starting the local stack ({metadata_db}) in {home}")
    stack.up()
    try:
        client = redis.Redis.from_url(redis_url)
        streams = StreamSettings.from_env({"REDIS_URL": redis_url})

        def publish(event: dict[str, Any]) -> None:
            client.xadd(streams.signups_stream, {"payload": json.dumps(event)})

        def pids() -> list[int]:
            pid = stack.supervisor.pid()
            return [pid] if pid else []

        def names() -> dict[int, str]:
            found: dict[int, str] = {}
            for pid_file in (home / "run").glob("*.pid"):
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    found[int(json.loads(pid_file.read_text())["pid"])] = pid_file.stem
            return found

        yield Running(publish, pids, "full local stack", described, metadata_url=settings.database_url, names=names)
    finally:
        log(f"{name}: stopping the stack")
        stack.down()


@contextlib.contextmanager
def inprocess_variant(home: Path, redis_url: str) -> Iterator[Running]:
    from stack.instance import current_env
    from stack.processes import ManagedProcess

    env = {**current_env(), "REDIS_URL": redis_url, "LISTENER_CONSUMER": "bench-inprocess", "LOG_FORMAT": "text"}
    process = ManagedProcess(
        "inprocess", [sys.executable, "-m", "benchmarks.inprocess"], env, home / "run", home / "logs", cwd=ROOT
    )
    process.start()
    try:
        deadline = time.monotonic() + 60
        while "ready" not in process.tail(5):
            if time.monotonic() > deadline or not process.running():
                raise RuntimeError(f"the in-process decider did not start:\n{process.tail(30)}")
            time.sleep(0.2)
        client = redis.Redis.from_url(redis_url)
        streams = StreamSettings.from_env({"REDIS_URL": redis_url})

        def publish(event: dict[str, Any]) -> None:
            client.xadd(streams.signups_stream, {"payload": json.dumps(event)})

        def pids() -> list[int]:
            pid = process.pid()
            return [pid] if pid else []

        yield Running(publish, pids, "one listener process deciding in-process")
    finally:
        process.stop(timeout_s=20)


@contextlib.contextmanager
def assetwatcher_variant(home: Path, redis_url: str, metadata_db: str) -> Iterator[Running]:
    from benchmarks.assetwatcher import assetwatcher_instance

    database_url = None
    if metadata_db == "postgres":
        from stack.instance import drop_postgres_database

        database_url = "postgresql+psycopg2://postgres@127.0.0.1:5432/onboarding_bench_assetwatcher"
        drop_postgres_database(database_url)
    streams = StreamSettings.from_env({"REDIS_URL": redis_url})
    with assetwatcher_instance(home, redis_url, streams.decisions_stream, database_url=database_url) as handle:

        def publish(event: dict[str, Any]) -> None:
            # No listener on this path: the signup carries its own acceptance time.
            handle.publish({**event, "accepted_at": datetime.now(UTC).isoformat()})

        def notes(event_ids: list[str]) -> dict[str, Any]:
            mine = set(event_ids)
            return {"published_to_no_subscriber": sum(1 for e in handle.unheard if e in mine)}

        yield Running(publish, handle.process_pids, "AssetWatcher + Redis message-queue trigger", notes=notes)


# -- the run ----------------------------------------------------------------------------


def publish_paced(running: Running, rate: float, duration: float, tag: str) -> list[Sample]:
    samples: list[Sample] = []
    count = max(1, round(rate * duration))
    t0 = time.monotonic()
    for i in range(count):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        event = new_signup(user_id=f"bench-{tag}-{i}")
        now = time.time()
        running.publish(event)
        samples.append(Sample(event["event_id"], now))
        if (i + 1) % max(1, round(rate * 10)) == 0:
            log(f"  {tag}: published {i + 1}/{count}")
    return samples


def publish_burst(running: Running, count: int, tag: str) -> list[Sample]:
    samples = []
    for i in range(count):
        event = new_signup(user_id=f"bench-{tag}-{i}")
        now = time.time()
        running.publish(event)
        samples.append(Sample(event["event_id"], now))
    return samples


def await_decisions(
    collector: Collector, samples: list[Sample], timeout_s: float, tag: str, stall_s: float = 60.0
) -> None:
    """Until every sample is decided, the timeout passes, or no decision came for `stall_s`
    (a variant that loses events would otherwise hold the run for the whole timeout)."""
    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    last_progress, last_done = time.monotonic(), -1
    while time.monotonic() < deadline:
        done = collector.resolve(samples)
        if done == len(samples):
            return
        if done != last_done:
            last_progress, last_done = time.monotonic(), done
        elif time.monotonic() - last_progress > stall_s:
            log(f"  {tag}: no decision for {stall_s:.0f} s: {len(samples) - done} undecided")
            return
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            log(f"  {tag}: {done}/{len(samples)} decided")
        time.sleep(0.2)
    log(f"  {tag}: gave up waiting after {timeout_s:.0f} s: {len(samples) - collector.resolve(samples)} undecided")


def run_variant(label: str, args: argparse.Namespace, home: Path) -> dict[str, Any]:
    """One variant; `label` is its name, optionally with `@sqlite` or `@postgres` for the
    metadata database (otherwise --metadata-db), so both can run side by side in one run,
    and with `:KEY=VALUE+KEY=VALUE` for settings of that variant's realtime instance (on top
    of --realtime-env), so a setting can be compared with itself off in one run."""
    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    streams = StreamSettings.from_env({"REDIS_URL": args.redis_url})
    label, _, variant_env = label.partition(":")
    name, _, metadata_db = label.partition("@")
    metadata_db = metadata_db or args.metadata_db
    if name in ("tuned", "stepwise", "defaults", "unwarmed"):
        overrides = dict(item.split("=", 1) for item in args.realtime_env)
        overrides |= dict(item.split("=", 1) for item in variant_env.split("+") if item)
        context = stack_variant(name, home, args.redis_url, metadata_db, overrides)
    elif name == "inprocess":
        context = inprocess_variant(home, args.redis_url)
    elif name == "assetwatcher":
        context = assetwatcher_variant(home, args.redis_url, metadata_db)
    else:
        raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS + EXTRA_VARIANTS)}")
    result: dict[str, Any] = {"variant": label + (f":{variant_env}" if variant_env else "")}
    with context as running:
        result["setup"] = running.description
        result["settings"] = running.settings
        collector = Collector(client, streams.decisions_stream)
        collector.start()
        try:
            warm = publish_paced(running, 1.0, args.warmup, f"{name}-warmup")
            await_decisions(collector, warm, 180, f"{name} warm-up", args.stall_timeout)
            if collector.resolve(warm) == 0:
                dead = client.xrevrange(streams.dead_letter_stream, count=3)
                raise RuntimeError(f"{name}: no warm-up signup was decided; last dead letters: {dead}")
            phases: list[tuple[str, Callable[[], list[Sample]], float]] = [
                (
                    "sustained",
                    lambda: publish_paced(running, args.rate, args.duration, f"{name}-sustained"),
                    args.drain_timeout,
                ),
                ("burst", lambda: publish_burst(running, args.burst, f"{name}-burst"), args.burst_timeout),
            ]
            for phase, publish, timeout in phases:
                if phase == "burst" and args.burst <= 0:
                    continue
                log(f"{name}: {phase}")
                dead_before = client.xlen(streams.dead_letter_stream)
                with WorkCounter(client, running.metadata_url) as work:
                    with CpuMeter(running.pids, running.names) as cpu:
                        t_start = time.time()
                        samples = publish()
                        await_decisions(collector, samples, timeout, f"{name} {phase}", args.stall_timeout)
                dead = client.xlen(streams.dead_letter_stream) - dead_before
                summary = summarize(samples, t_start, cpu.result, dead)
                decided = summary["decided"]
                summary["cpu"]["variant_cpu_s_per_decision"] = (
                    round(cpu.variant_cpu_s / decided, 3) if decided else None
                )
                summary["cpu"]["by_component_cpu_s_per_decision"] = (
                    {g: round(s / decided, 4) for g, s in cpu.by_component_s.items()} if decided else {}
                )
                summary["work_per_decision"] = work.per_decision(decided)
                summary["latencies"] = [
                    [round(s.published - t_start, 3), None if s.latency is None else round(s.latency, 3)]
                    for s in samples
                ]
                if running.notes is not None:
                    summary["notes"] = running.notes([s.event_id for s in samples])
                result[phase] = summary
                log(f"{name} {phase}: {_brief(summary)}")
        finally:
            collector.stopping.set()
            collector.join(timeout=5)
    return result


def _brief(summary: dict[str, Any]) -> str:
    keys = ("decided", "undecided", "p50_s", "p99_s", "max_s", "throughput_per_s")
    return ", ".join(f"{k}={summary.get(k)}" for k in keys)


# -- reporting ---------------------------------------------------------------------------


def _ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "n/a"
    return f"{value / base:.2f}x"


def markdown(report: dict[str, Any]) -> str:
    results = report["results"]
    base = next((r for r in results if r["variant"] == "tuned"), results[0])
    out = [
        f"Command: `{report['command']}`  ",
        f"Host: {report['host']}; {report['when']}",
        "",
    ]
    for phase, title in (
        ("sustained", f"Sustained {report['args']['rate']}/s for {report['args']['duration']} s"),
        ("burst", f"Burst of {report['args']['burst']}"),
    ):
        rows = [r for r in results if phase in r]
        if not rows:
            continue
        out += [
            f"### {title}",
            "",
            "| variant | decided | undecided | p50 s | p95 s | p99 s | max s | decisions/s | p50 vs tuned"
            " | p99 vs tuned | decisions/s vs tuned | events/run | host CPU cores | variant CPU s/decision |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        b = base.get(phase, {})
        for r in rows:
            s = r[phase]
            out.append(
                f"| {r['variant']} | {s['decided']}/{s['published']} | {s.get('undecided', s.get('lost'))}"
                f" | {s.get('p50_s')} | {s.get('p95_s')}"
                f" | {s.get('p99_s')} | {s.get('max_s')} | {s.get('throughput_per_s')}"
                f" | {_ratio(s.get('p50_s'), b.get('p50_s'))} | {_ratio(s.get('p99_s'), b.get('p99_s'))}"
                f" | {_ratio(s.get('throughput_per_s'), b.get('throughput_per_s'))} | {s.get('events_per_run')}"
                f" | {s['cpu']['host_cores']} | {s['cpu'].get('variant_cpu_s_per_decision')} |"
            )
        out += ["", "Median time per stage (s):", ""]
        names = [n for n, _, _ in STAGES]
        out += ["| variant | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for r in rows:
            stages = r[phase].get("stages_p50_s", {})
            out.append(f"| {r['variant']} | " + " | ".join(str(stages.get(n, "-")) for n in names) + " |")
        out += ["", "CPU seconds per decision by component, and work per decision:", ""]
        components = sorted(
            {g for r in rows for g in r[phase]["cpu"].get("by_component_cpu_s_per_decision", {})},
            key=lambda g: -max(r[phase]["cpu"].get("by_component_cpu_s_per_decision", {}).get(g, 0) for r in rows),
        )
        counters = ("redis_commands", "pg_transactions", "pg_rows_written", "pg_rows_fetched")
        out += [
            "| variant | " + " | ".join(components + list(counters)) + " |",
            "|---|" + "---|" * (len(components) + len(counters)),
        ]
        for r in rows:
            per = r[phase]["cpu"].get("by_component_cpu_s_per_decision", {})
            work = r[phase].get("work_per_decision", {})
            out.append(
                f"| {r['variant']} | "
                + " | ".join([str(per.get(g, "-")) for g in components] + [str(work.get(c, "-")) for c in counters])
                + " |"
            )
        out.append("")
    return "\n".join(out)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, phase in zip(axes, ("sustained", "burst"), strict=True):
        for i, r in enumerate(report["results"]):
            if phase not in r:
                continue
            points = sorted(v for _, v in r[phase]["latencies"] if v is not None)
            if not points:
                continue
            # Of all published signups: a variant that loses or leaves some never reaches 1.
            published = len(r[phase]["latencies"])
            ys = [(i + 1) / published for i in range(len(points))]
            color = COLORS[i % len(COLORS)]
            label = f"{r['variant']} (p99 {r[phase].get('p99_s')} s, {len(points)}/{published} decided)"
            ax.step(points, ys, where="post", label=label, color=color)
        ax.set_xscale("log")
        ax.set_xlabel("signup -> decision seen by the app (s, log scale)")
        ax.set_ylabel("fraction of published signups decided")
        args = report["args"]
        title = (
            f"sustained {args['rate']}/s for {args['duration']} s"
            if phase == "sustained"
            else f"burst of {args['burst']}"
        )
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Onboarding decision latency, side by side (one run, one machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _shown(path: Path) -> str:
    """A path as the report shows it: relative to the checkout when inside it."""
    return str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def host_description() -> str:
    return f"{psutil.cpu_count()} CPUs, {round(psutil.virtual_memory().total / 2**30)} GiB, {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated; a name may end in @sqlite or @postgres, then :KEY=VALUE+KEY=VALUE for its "
        "realtime instance (tuned@sqlite,tuned@sqlite:ONBOARDING_ACTION_LOG_IN_THREAD=false)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="run the variants this many times, order rotated")
    parser.add_argument("--rate", type=float, default=2.0, help="signups per second in the sustained phase")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the sustained phase")
    parser.add_argument("--burst", type=int, default=500, help="signups published at once (0: no burst)")
    parser.add_argument("--warmup", type=int, default=5, help="signups before measuring (1 per second)")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--burst-timeout", type=float, default=900.0)
    parser.add_argument(
        "--stall-timeout", type=float, default=60.0, help="stop waiting when no decision came for this long"
    )
    parser.add_argument("--metadata-db", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7"))
    parser.add_argument(
        "--realtime-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra environment variable of the realtime instance, to try a setting (AIRFLOW__CORE__PARALLELISM=4)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--keep-home", action="store_true", help="keep the variants' homes (logs) afterwards")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only write the table and plot of an earlier run")
    args = parser.parse_args(argv)
    if args.render:
        report = json.loads(args.render.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "latency.md").write_text(markdown(report) + "\n")
        plot(report, args.out / "latency.png")
        print(markdown(report))
        return 0
    # Stopped by SIGTERM: unwind, so the variant in progress stops its processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if redis.connection.parse_url(args.redis_url).get("db", 0) in (0, None):
        raise SystemExit("--redis-url must name a database of its own (not 0): the benchmark empties it")
    command = "python benchmarks/latency.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    report: dict[str, Any] = {
        "command": command.strip(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": host_description(),
        "args": {k: (_shown(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": [],
    }
    base = Path(tempfile.mkdtemp(prefix="onboarding-latency-"))
    from stack.local import Stack

    Stack(_stack_settings(base / "model", args.redis_url, args.metadata_db)).ensure_model()  # trains one if none
    try:
        for r in range(args.rounds):
            # Rounds rotate the order: no variant always runs first, on a machine the others warmed.
            shift = r % len(variants)
            for name in variants[shift:] + variants[:shift]:
                safe = re.sub(r"[^A-Za-z0-9@._-]+", "_", name)  # a variant's settings may hold spaces
                result = run_variant(name, args, base / f"{safe}-{r}")
                if args.rounds > 1:
                    result["variant"] = f"{name} #{r + 1}"
                report["results"].append(result)
    finally:
        if not args.keep_home:
            shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"variant homes kept in {base}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (args.out / "latency.md").write_text(table + "\n")
    plot(report, args.out / "latency.png")
    print(table)
    print(f"\nwrote {args.out / 'latency.json'}, {args.out / 'latency.md'}, {args.out / 'latency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
