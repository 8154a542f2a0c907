"""The review queue: Redis scripts (review/store.py) vs Airflow 3.3 human-in-the-loop tasks.

    python benchmarks/review_backends.py [--cases 50] [--signups 20] [--responses 10]
                                         [--window 20] [--metadata-db postgres]
                                         [--redis-url redis://127.0.0.1:6379/10]

Both sides in one run, on this machine:

Redis (the shipped queue): publish_decision of a `review` (opens the case in the same
Redis Function call) vs of an `approve` (no case): the added time; ReviewQueue.decide (one
call, the final decision published in it); MEMORY USAGE of a case (hash + queue member +
history entry); two reviewers deciding one case at once.

Airflow: a realtime instance (deploy/realtime settings, PostgreSQL metadata, a listener)
that also parses benchmarks/review_dags/onboarding_review.py (one run per case: a
HITLOperator, then `publish_final` publishes the final decision with the same once-only
publish). It measures:
  (a) open: trigger the run -> its HITL task `awaiting_input` (REST), --cases cases
      (the first 5 one at a time, the rest at once);
  (b) respond -> final decision on Redis: PATCH .../hitlDetails, then wait on the
      decision's key/channel, --responses cases one at a time;
  (c) per pending case: metadata rows (exact counts of every table, before/after),
      scheduler tree CPU and `scheduler.scheduler_loop_duration` (statsd) over --window s,
      idle with 0 and with --cases pending;
  (d) the onboarding DAG's decision latency (signup published -> decision seen), --signups
      at 2 per second, with 0 and with --cases pending;
  race: two PATCHes of one HITL task at once (the HTTP statuses; the final published once).

Prints a table with ratios and the command that produced it. The Redis database of
--redis-url belongs to the benchmark's prefixes (`review-bench:*`), deleted afterwards.
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
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402  (Airflow's own dependency)
import redis  # noqa: E402

from onboarding import keys  # noqa: E402
from onboarding.decision import DecisionEvent, publish_decision, wait_for_decision  # noqa: E402
from onboarding.functions import ensure_loaded  # noqa: E402
from onboarding.settings import StreamSettings  # noqa: E402
from review.errors import CaseConflict  # noqa: E402
from review.store import ReviewQueue  # noqa: E402
from risk.samples import new_signup  # noqa: E402

REVIEW_DAGS = ROOT / "benchmarks" / "review_dags"
PREFIX = "review-bench"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": pct(values, 0.5),
        "p99": pct(values, 0.99),
        "max": max(values, default=float("nan")),
    }


# --- Redis ------------------------------------------------------------------------------


def provisional(decision: str, event_id: str) -> DecisionEvent:
    return DecisionEvent(
        event_id=event_id,
        user_id=f"user-{event_id[:8]}",
        decision=decision,
        score=0.52,
        reason_codes=[{"code": "income_low", "weight": 0.2}],
        model_version="bench",
        run_id=f"run-{event_id}",
        timestamps={"accepted_at": "2026-01-01T00:00:00+00:00"},
    )


def measure_redis(client: redis.Redis, n: int, races_n: int) -> dict[str, Any]:
    stream = f"{PREFIX}:redis:decisions"
    approve_s: list[float] = []
    review_s: list[float] = []
    case_ids: list[str] = []
    for i in range(n):  # interleaved: the same Redis state for both
        for decision, out in (("approve", approve_s), ("review", review_s)):
            event_id = uuid.uuid4().hex
            event = provisional(decision, event_id)
            t0 = time.perf_counter()
            publish_decision(client, stream, event)
            out.append(time.perf_counter() - t0)
            if decision == "review":
                case_ids.append(event_id)
        if (i + 1) % max(1, n // 4) == 0:
            log(f"redis: published {i + 1}/{n} approve + review decisions")
    case_key = keys.review_case_key(stream, case_ids[0])
    queue_key = keys.review_queue_key(stream)
    history_key = keys.review_history_key(stream)
    memory = {
        "case_hash_bytes": client.memory_usage(case_key, samples=0),
        "queue_bytes_per_case": client.memory_usage(queue_key, samples=0) / client.zcard(queue_key),
        "history_bytes_per_entry": client.memory_usage(history_key, samples=0) / client.xlen(history_key),
    }
    memory["per_open_case_bytes"] = (
        memory["case_hash_bytes"] + memory["queue_bytes_per_case"] + memory["history_bytes_per_entry"]
    )
    queue = ReviewQueue(client, stream)
    # races: two reviewers decide the same case at once, one approves, one declines
    races = []
    for _ in range(races_n):
        race_case = case_ids.pop()
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def racer(
            name: str, case_id: str = race_case, barrier: threading.Barrier = barrier, outcomes: dict = outcomes
        ) -> None:
            barrier.wait()
            try:
                queue.decide(case_id, name, "approve" if name == "alice" else "decline", "benchmark race")
                outcomes[name] = "decided"
            except CaseConflict:
                outcomes[name] = "CaseConflict"

        threads = [threading.Thread(target=racer, args=(who,)) for who in ("alice", "bob")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        finals = [e for _, e in _stream_events(client, stream) if e.get("event_id") == race_case and e.get("final")]
        races.append(
            {
                "outcomes": outcomes,
                "finals_published": len(finals),
                "published": finals[0]["decision"] if finals else None,
                "recorded": queue.get(race_case).outcome,
            }
        )
    decide_s: list[float] = []
    for i, case_id in enumerate(case_ids):
        t0 = time.perf_counter()
        queue.decide(case_id, "reviewer", "approve", "benchmark")
        decide_s.append(time.perf_counter() - t0)
        if (i + 1) % max(1, len(case_ids) // 4) == 0:
            log(f"redis: decided {i + 1}/{len(case_ids)} cases")
    added = [r - a for r, a in zip(review_s, approve_s, strict=True)]
    return {
        "publish_approve_s": summary(approve_s),
        "publish_review_s": summary(review_s),
        "open_added_p50_s": statistics.median(added),
        "decide_s": summary(decide_s),
        "memory": memory,
        "races": races,
    }


def _stream_events(client: redis.Redis, stream: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for entry_id, fields in client.xrange(stream):
        raw = fields.get(b"payload")
        if raw:
            out.append((entry_id.decode(), json.loads(raw)))
    return out


# --- Airflow ----------------------------------------------------------------------------


class Statsd:
    """A UDP listener for the scheduler's statsd: its loop durations, stamped on arrival."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.loops: list[tuple[float, float]] = []
        self.stopped = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        pattern = re.compile(rb"scheduler\.scheduler_loop_duration[^:]*:([\d.]+)\|ms")
        while not self.stopped:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.splitlines():
                match = pattern.search(line)
                if match:
                    self.loops.append((time.monotonic(), float(match.group(1))))

    def between(self, t0: float, t1: float) -> list[float]:
        return [ms for t, ms in self.loops if t0 <= t <= t1]

    def close(self) -> None:
        self.stopped = True
        self.sock.close()


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def rss_mib(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total / 2**20


def table_rows(database_url: str) -> dict[str, int]:
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            names = inspect(conn).get_table_names()
            counts = {}
            for name in names:  # names from the database's own inspector
                counts[name] = conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one()  # noqa: S608
            return counts
    finally:
        engine.dispose()


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> None:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        response = self.http.post(f"/api/v2/dags/{dag_id}/dagRuns", json=body)
        response.raise_for_status()

    def review_states(self) -> dict[str, str | None]:
        """The state of every run's `review` task, in one call."""
        response = self.http.get("/api/v2/dags/onboarding_review/dagRuns/~/taskInstances", params={"limit": 1000})
        response.raise_for_status()
        return {ti["dag_run_id"]: ti["state"] for ti in response.json()["task_instances"] if ti["task_id"] == "review"}

    def run_states(self) -> dict[str, str]:
        response = self.http.get("/api/v2/dags/onboarding_review/dagRuns", params={"limit": 1000})
        response.raise_for_status()
        return {run["dag_run_id"]: run["state"] for run in response.json()["dag_runs"]}

    def hitl_chosen(self, run_id: str) -> list[str] | None:
        response = self.http.get(f"/api/v2/dags/onboarding_review/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails")
        response.raise_for_status()
        return response.json().get("chosen_options")

    def respond(self, run_id: str, option: str) -> httpx.Response:
        return self.http.patch(
            f"/api/v2/dags/onboarding_review/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails",
            json={"chosen_options": [option], "params_input": {}},
        )


def wait_state(
    api: Api, run_ids: list[str], state: str, timeout_s: float, started: dict[str, float]
) -> dict[str, float]:
    """Seconds from each run's trigger to its review task reaching `state` (one list call every 50 ms)."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(run_ids) and time.monotonic() < deadline:
        states = api.review_states()
        now = time.monotonic()
        for run_id in run_ids:
            if run_id not in seen and states.get(run_id) == state:
                seen[run_id] = now - started[run_id]
        time.sleep(0.05)
    missing = [r for r in run_ids if r not in seen]
    if missing:
        raise RuntimeError(f"{len(missing)} review tasks not {state} after {timeout_s:.0f} s: {missing[:3]}")
    return seen


def decision_latency(client: redis.Redis, streams: StreamSettings, count: int, tag: str) -> list[float]:
    """Publish `count` signups at 2 per second; seconds from each publish to its decision."""
    results: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        event = new_signup(user_id=f"{PREFIX}-{tag}-{i}")
        t0 = time.monotonic()
        waiter = threading.Thread(
            target=lambda: results_append(wait_for_decision(client, streams.decisions_stream, event["event_id"], 120))
        )

        def results_append(decision: DecisionEvent | None) -> None:
            if decision is None:
                raise RuntimeError(f"no decision for {event['event_id']} within 120 s")
            with lock:
                results.append(time.monotonic() - t0)

        waiter.start()
        client.xadd(streams.signups_stream, {"payload": json.dumps(event)})
        waiter.join()

    threads = []
    for i in range(count):
        thread = threading.Thread(target=one, args=(i,))
        thread.start()
        threads.append(thread)
        time.sleep(0.5)
    for thread in threads:
        thread.join()
    if len(results) != count:
        raise RuntimeError(f"{tag}: {count - len(results)} signups without a decision")
    return results


def idle_window(stack_pids: dict[str, int], statsd: Statsd, window_s: float) -> dict[str, float]:
    processes = {name: tree(pid) for name, pid in stack_pids.items()}
    before = {name: cpu_s(p) for name, p in processes.items()}
    t0 = time.monotonic()
    time.sleep(window_s)
    t1 = time.monotonic()
    after = {name: cpu_s(tree(stack_pids[name])) for name in processes}
    loops = statsd.between(t0, t1)
    out = {f"{name}_cpu_pct": 100 * (after[name] - before[name]) / (t1 - t0) for name in processes}
    out.update({f"{name}_rss_mib": rss_mib(tree(pid)) for name, pid in stack_pids.items()})
    out["scheduler_processes"] = len(tree(stack_pids["scheduler"]))
    out["loops"] = len(loops)
    out["loop_p50_ms"] = pct(loops, 0.5)
    out["loop_p99_ms"] = pct(loops, 0.99)
    return out


@contextlib.contextmanager
def airflow_instance(
    home: Path, redis_url: str, metadata_db: str, statsd_port: int
) -> Iterator[tuple[Any, StreamSettings]]:
    from stack.instance import AirflowInstance, InstanceSpec, drop_postgres_database
    from testkit.model import train_baseline
    from testkit.realtime import RealtimeStack
    from testkit.services import free_port

    streams = StreamSettings(
        redis_url=redis_url,
        signups_stream=f"{PREFIX}:af:signups",
        decisions_stream=f"{PREFIX}:af:decisions",
        dead_letter_stream=f"{PREFIX}:af:signups:dead",
    )
    database_url = None
    if metadata_db == "postgres":
        database_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/onboarding_review_bench_{os.getpid()}"
        drop_postgres_database(database_url)
    dags = home / "dags"
    dags.mkdir(parents=True)
    (dags / "onboarding_dag.py").symlink_to(ROOT / "dags" / "realtime" / "onboarding_dag.py")
    (dags / "onboarding_review.py").symlink_to(REVIEW_DAGS / "onboarding_review.py")
    log("training the baseline model")
    model_dir = train_baseline(home / "models")
    spec = InstanceSpec.from_deploy("realtime", home / "airflow", free_port(), free_port(), database_url)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    spec = InstanceSpec(
        **{
            **spec.__dict__,
            "dags_folder": dags,
            "extra_env": {
                "PYTHONPATH": pythonpath,
                "AIRFLOW__METRICS__STATSD_PORT": str(statsd_port),
                "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "False",
                "REVIEW_BENCH_STREAM": f"{PREFIX}:hitl:decisions",
            },
        }
    )
    client = redis.Redis.from_url(redis_url)
    stack = RealtimeStack(metadata_db, None, streams, client, model_dir, home)  # type: ignore[arg-type]
    stack.instance = AirflowInstance(spec, {**os.environ, **stack.stream_env})
    stack.instance.prepare()
    try:
        log(f"starting a realtime Airflow ({metadata_db}) in {home}")
        stack.instance.migrate()
        stack.instance.start()
        ready = stack.instance.wait_ready(("onboarding", "onboarding_review"), timeout_s=300)
        log(f"Airflow ready in {ready:.0f} s; starting a listener")
        stack.start_listener()
        yield stack, streams
    finally:
        for process in stack.listeners:
            process.stop(timeout_s=20)
        stack.instance.stop(timeout_s=20)
        if database_url:
            drop_postgres_database(database_url)


def measure_airflow(args: argparse.Namespace, client: redis.Redis) -> dict[str, Any]:
    statsd = Statsd()
    home = Path(tempfile.mkdtemp(prefix="review-bench-"))
    out: dict[str, Any] = {"home": str(home)}
    try:
        with airflow_instance(home, args.redis_url, args.metadata_db, statsd.port) as (stack, streams):
            instance = stack.instance
            pids = {p.name.split("-", 1)[1]: p.pid() for p in instance.processes()}
            api = Api(instance.spec.api_url, instance.token())
            log("warming up the onboarding DAG (5 signups)")
            decision_latency(client, streams, 5, "warmup")
            log(f"idle window, 0 pending cases ({args.window:.0f} s)")
            out["idle_0"] = idle_window(pids, statsd, args.window)
            log(f"decision latency, 0 pending cases ({args.signups} signups)")
            out["latency_0"] = summary(decision_latency(client, streams, args.signups, "pending0"))
            rows_0 = table_rows(instance.database_url)

            runs = [f"case-{i:03d}-{uuid.uuid4().hex[:6]}" for i in range(args.cases)]
            started: dict[str, float] = {}
            opened: dict[str, float] = {}
            for i, run_id in enumerate(runs[:5]):  # one at a time: the unloaded figure
                started[run_id] = time.monotonic()
                api.trigger("onboarding_review", run_id, {"event_id": run_id, "user_id": f"user-{i}"})
                opened.update(wait_state(api, [run_id], "awaiting_input", 120, started))
                log(f"opened {i + 1}/{args.cases} cases ({opened[run_id]:.2f} s)")
            burst = runs[5:]
            for i, run_id in enumerate(burst):
                started[run_id] = time.monotonic()
                api.trigger("onboarding_review", run_id, {"event_id": run_id, "user_id": f"user-{i + 5}"})
            burst_t0 = min((started[r] for r in burst), default=time.monotonic())
            burst_open = wait_state(api, burst, "awaiting_input", 600, started)
            log(f"opened {args.cases}/{args.cases} cases")
            out["open_single_s"] = summary([opened[r] for r in runs[:5]])
            out["open_burst_s"] = summary(list(burst_open.values()))
            out["open_burst_all_s"] = max((started[r] + burst_open[r] for r in burst), default=burst_t0) - burst_t0
            time.sleep(2)
            rows_n = table_rows(instance.database_url)
            grown = {t: rows_n[t] - rows_0.get(t, 0) for t in rows_n if rows_n[t] != rows_0.get(t, 0)}
            out["rows_added"] = grown
            out["rows_per_case"] = sum(grown.values()) / args.cases
            log(f"idle window, {args.cases} pending cases ({args.window:.0f} s)")
            out["idle_n"] = idle_window(pids, statsd, args.window)
            log(f"decision latency, {args.cases} pending cases ({args.signups} signups)")
            out["latency_n"] = summary(decision_latency(client, streams, args.signups, "pendingN"))

            # races: two reviewers PATCH the same task at once, one approves, one declines
            hitl_stream = f"{PREFIX}:hitl:decisions"
            races = []
            for race_run in runs[-args.races :]:
                barrier = threading.Barrier(2)
                statuses: dict[str, int] = {}

                def racer(
                    option: str, run_id: str = race_run, barrier: threading.Barrier = barrier, statuses: dict = statuses
                ) -> None:
                    racer_api = Api(instance.spec.api_url, instance.token())
                    barrier.wait()
                    statuses[option] = racer_api.respond(run_id, option).status_code

                threads = [threading.Thread(target=racer, args=(o,)) for o in ("approve", "decline")]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                final = wait_for_decision(client, hitl_stream, race_run, 120)
                time.sleep(1)
                finals = [e for _, e in _stream_events(client, hitl_stream) if e.get("event_id") == race_run]
                races.append(
                    {
                        "statuses": statuses,
                        "finals_published": len(finals),
                        "published": final.decision if final else None,
                        "hitl_recorded": (api.hitl_chosen(race_run) or [None])[0],
                        "respond_again_status": api.respond(race_run, "approve").status_code,
                    }
                )
                log(f"race {len(races)}/{args.races}: {races[-1]}")
            out["races"] = races

            respond_s: list[float] = []
            for i, run_id in enumerate(runs[1 : 1 + args.responses]):
                result: list[DecisionEvent | None] = []
                waiter = threading.Thread(
                    target=lambda r=run_id, out=result: out.append(wait_for_decision(client, hitl_stream, r, 120))
                )
                waiter.start()
                time.sleep(0.05)  # subscribed
                t0 = time.monotonic()
                response = api.respond(run_id, "approve")
                response.raise_for_status()
                waiter.join()
                if not result or result[0] is None:
                    raise RuntimeError(f"no final decision for {run_id}")
                respond_s.append(time.monotonic() - t0)
                log(f"responded {i + 1}/{args.responses} ({respond_s[-1]:.2f} s to the final decision)")
            out["respond_to_final_s"] = summary(respond_s)

            # control: every case answered, no run pending: the same windows again
            rest = [runs[0], *runs[1 + args.responses : len(runs) - args.races]]
            for run_id in rest:
                api.respond(run_id, "approve").raise_for_status()
            deadline = time.monotonic() + 300
            while any(state != "success" for state in api.run_states().values()):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"review runs not finished: {api.run_states()}")
                time.sleep(0.5)
            log(f"all {args.cases} cases answered; idle window, 0 pending again ({args.window:.0f} s)")
            out["idle_after"] = idle_window(pids, statsd, args.window)
            log(f"decision latency, 0 pending again ({args.signups} signups)")
            out["latency_after"] = summary(decision_latency(client, streams, args.signups, "after"))
    finally:
        statsd.close()
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)
    return out


# --- report -----------------------------------------------------------------------------


def fmt(value: float, unit: str = "s") -> str:
    if unit == "s":
        return f"{value * 1000:.2f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:.1f} {unit}"


def report(result: dict[str, Any], command: str) -> str:
    r = result["redis"]
    lines = [
        f"`{command}`",
        f"({result['machine']}, Airflow metadata on {result['metadata_db']})",
        "",
    ]
    lines.append("| figure | Redis queue (review/store.py) | Airflow HITL (review DAG) | HITL / Redis |")
    lines.append("|---|---|---|---|")
    a = result.get("airflow")
    open_redis = r["publish_review_s"]["p50"]  # the whole step that publishes and opens
    rows = ", ".join(f"{t} {n}" for t, n in sorted(a["rows_added"].items())) if a else ""
    mem = r["memory"]
    if a:
        lines += [
            f"| open a case, p50 (one at a time) | {r['open_added_p50_s'] * 1000:+.3f} ms in the publishing call "
            f"(review {fmt(r['publish_review_s']['p50'])} vs approve {fmt(r['publish_approve_s']['p50'])}) "
            f"| {fmt(a['open_single_s']['p50'])} trigger -> awaiting_input "
            f"| {a['open_single_s']['p50'] / open_redis:,.0f}x |",
            f"| open {result['cases'] - 5} cases at once | - | p50 {fmt(a['open_burst_s']['p50'])}, "
            f"all in {fmt(a['open_burst_all_s'])} | |",
            f"| decide -> final decision published, p50 / p99 | {fmt(r['decide_s']['p50'])} / "
            f"{fmt(r['decide_s']['p99'])} (one Redis Function) | {fmt(a['respond_to_final_s']['p50'])} / "
            f"{fmt(a['respond_to_final_s']['p99'])} (PATCH -> publish_final) "
            f"| {a['respond_to_final_s']['p50'] / r['decide_s']['p50']:,.0f}x |",
            f"| storage per open case | {mem['per_open_case_bytes']:.0f} B (hash {mem['case_hash_bytes']} B + "
            f"queue {mem['queue_bytes_per_case']:.0f} B + history {mem['history_bytes_per_entry']:.0f} B) "
            f"| {a['rows_per_case']:.1f} metadata rows ({rows}) | |",
        ]
        i0, i1 = a["idle_0"], a["idle_n"]
        lines += [
            f"| scheduler tree CPU, idle, 0 / {result['cases']} pending | - | {i0['scheduler_cpu_pct']:.1f} % / "
            f"{i1['scheduler_cpu_pct']:.1f} % | |",
            f"| scheduler loop p50 / p99, 0 pending | - | {i0['loop_p50_ms']:.1f} / {i0['loop_p99_ms']:.1f} ms "
            f"({i0['loops']} loops) | |",
            f"| scheduler loop p50 / p99, {result['cases']} pending | - | {i1['loop_p50_ms']:.1f} / "
            f"{i1['loop_p99_ms']:.1f} ms ({i1['loops']} loops) | {i1['loop_p50_ms'] / i0['loop_p50_ms']:.2f}x |",
            f"| scheduler tree processes / RSS, 0 / {result['cases']} pending | - | {i0['scheduler_processes']} / "
            f"{i0['scheduler_rss_mib']:.0f} MiB, {i1['scheduler_processes']} / {i1['scheduler_rss_mib']:.0f} MiB | |",
            f"| realtime decision latency p50 / p99, 0 pending | - | {fmt(a['latency_0']['p50'])} / "
            f"{fmt(a['latency_0']['p99'])} | |",
            f"| realtime decision latency p50 / p99, {result['cases']} pending | - | {fmt(a['latency_n']['p50'])} / "
            f"{fmt(a['latency_n']['p99'])} | {a['latency_n']['p50'] / a['latency_0']['p50']:.2f}x |",
            f"| realtime decision latency p50 / p99, 0 pending again (all answered) | - | "
            f"{fmt(a['latency_after']['p50'])} / {fmt(a['latency_after']['p99'])} | |",
            f"| scheduler loop p50, 0 pending again / scheduler CPU | - | {a['idle_after']['loop_p50_ms']:.1f} ms / "
            f"{a['idle_after']['scheduler_cpu_pct']:.1f} % | |",
            f"| two reviewers at once, {len(r['races'])} / {len(a['races'])} races | {race_redis(r['races'])} "
            f"| {race_hitl(a['races'])} | |",
        ]
    else:
        lines += [
            f"| open a case, p50 | {r['open_added_p50_s'] * 1000:+.3f} ms | not measured | |",
            f"| decide p50 / p99 | {fmt(r['decide_s']['p50'])} / {fmt(r['decide_s']['p99'])} | not measured | |",
            f"| storage per open case | {mem['per_open_case_bytes']:.0f} B | not measured | |",
        ]
    return "\n".join(lines)


def race_redis(races: list[dict[str, Any]]) -> str:
    refused = sum(1 for r in races if sorted(r["outcomes"].values()) == ["CaseConflict", "decided"])
    finals = sum(r["finals_published"] for r in races)
    agree = sum(1 for r in races if r["published"] == r["recorded"])
    return (
        f"{refused} of {len(races)}: one decided, the other CaseConflict; {finals} finals; "
        f"record = published in {agree}"
    )


def race_hitl(races: list[dict[str, Any]]) -> str:
    both = sum(1 for r in races if sorted(r["statuses"].values()) == [200, 200])
    one = sum(1 for r in races if sorted(r["statuses"].values()) == [200, 409])
    finals = sum(r["finals_published"] for r in races)
    agree = sum(1 for r in races if r["published"] == r["hitl_recorded"])
    later = sorted({r["respond_again_status"] for r in races})
    return (
        f"both HTTP 200 in {both}, 200 + 409 in {one}; {finals} finals; HITL record = published in {agree}; "
        f"a later PATCH: HTTP {', '.join(map(str, later))}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=50, help="HITL cases pending at once (at least 6)")
    parser.add_argument("--signups", type=int, default=20, help="signups per decision-latency phase")
    parser.add_argument("--responses", type=int, default=10, help="HITL responses timed one at a time")
    parser.add_argument("--races", type=int, default=5, help="HITL tasks two reviewers answer at once")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of each idle resource window")
    parser.add_argument("--redis-cases", type=int, default=200, help="Redis cases opened and decided")
    parser.add_argument("--metadata-db", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10"))
    parser.add_argument("--redis-only", action="store_true", help="skip the Airflow side")
    parser.add_argument("--keep-home", action="store_true", help="keep the Airflow home (logs) afterwards")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: the instance, the listener and the database are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.cases < 6 or args.responses + args.races >= args.cases:
        parser.error("--cases must be at least 6 and more than --responses + --races")
    command = shlex.join(["python", "benchmarks/review_backends.py", *(argv if argv is not None else sys.argv[1:])])
    client = redis.Redis.from_url(args.redis_url)

    def clean() -> None:
        for key in client.scan_iter(f"{PREFIX}:*"):
            client.delete(key)

    clean()
    ensure_loaded(client)  # the service's Redis Functions (server-wide), as the deploy step loads them
    result: dict[str, Any] = {
        "command": command,
        "machine": f"{psutil.cpu_count()} CPUs, {round(psutil.virtual_memory().total / 2**30)} GiB, "
        f"Python {platform.python_version()}, Redis {client.info('server')['redis_version']}, "
        f"load average {os.getloadavg()[0]:.1f} at the start",
        "metadata_db": args.metadata_db,
        "cases": args.cases,
    }
    try:
        log(f"redis: {args.redis_cases} review cases on {args.redis_url}")
        result["redis"] = measure_redis(client, args.redis_cases, args.races)
        if not args.redis_only:
            result["airflow"] = measure_airflow(args, client)
    finally:
        clean()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    print(report(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
