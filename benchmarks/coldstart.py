"""The first minute after a start and after a restart, SQLite and PostgreSQL side by side.

    python benchmarks/coldstart.py [--metadata sqlite,postgres] [--rounds 1] [--rate 2]
                                   [--duration 60] [--first 20] [--out coldstart.json]
                                   [--compare KEY=VALUE ...]

For each round, for each metadata database in turn (the order alternates between rounds, so
neither always runs on a machine warmed or loaded by the other): a stack of its own
(`onboarding-stack up`: both Airflow instances, listeners, rq, SLA, with a home, ports and a
Redis of its own; PostgreSQL: fresh databases on the local server), then
  1. `start`: as soon as `up` returns (the supervisor reports every part healthy), signups at
     --rate per second for --duration seconds (an open loop on a fixed schedule);
  2. `restart`: `onboarding-stack down`, `up` again on the same home (metadata, model and
     Redis kept), and the same load.
With --compare, each metadata database also runs with those settings (for every part of the
stack), alternating with the repository's settings: a lever measured side by side.
Latency is the app's view: from the signup's XADD to the decision's `published_at`. Per
phase: how long `up` took, p50/p99/max of the first --first signups and of the whole first
minute, and the median of each stage for the first three signups (where a cold start
spends its time). Prints the table and the command; --out writes every latency as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
import redis  # noqa: E402

from onboarding.publisher import publish_signup  # noqa: E402
from risk.samples import new_signup  # noqa: E402
from testkit.faults import FaultStack, log, stack_env  # noqa: E402
from testkit.model import model_dir_or_train  # noqa: E402

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
STAGES = (
    ("listener", "published", "accepted_at"),
    ("to_first_task", "accepted_at", "run_started_at"),
    ("steps", "run_started_at", "decided_at"),
    ("publish", "decided_at", "published_at"),
)


@dataclass
class Phase:
    metadata: str
    phase: str
    settings: str
    up_s: float
    latencies: list[float] = field(default_factory=list)  # in publish order
    stages: dict[str, float] = field(default_factory=dict)  # first three signups, median
    undecided: int = 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_load(stack: FaultStack, rate: float, duration: float, timeout_s: float = 120) -> tuple[list, int]:
    """Publish at `rate` for `duration` s; return each signup's decision timestamps and the
    number still undecided at the end."""
    client = redis.Redis.from_url(stack.streams.redis_url)
    published: list[tuple[str, float]] = []
    t0 = time.monotonic()
    n = int(rate * duration)
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        event = new_signup()
        publish_signup(client, stack.streams.signups_stream, event)
        published.append((event["event_id"], time.time()))
    wanted = {event_id for event_id, _ in published}
    decided: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    after = "-"
    while wanted - decided.keys() and time.monotonic() < deadline:
        page = client.xrange(stack.streams.decisions_stream, min=after, count=1000)
        for entry_id, fields in page:
            data = json.loads(fields[b"payload"])
            if data["event_id"] in wanted:
                decided[data["event_id"]] = data
            after = f"({entry_id.decode()}"
        if not page:
            time.sleep(0.2)
    client.close()
    rows = []
    for event_id, at in published:
        data = decided.get(event_id)
        if data is None:
            continue
        stamps = {k: datetime.fromisoformat(v).timestamp() for k, v in data["timestamps"].items()}
        stamps["published"] = at
        rows.append(stamps)
    return rows, len(wanted - decided.keys())


def measure(stack: FaultStack, metadata: str, settings: str, phase: str, args: argparse.Namespace) -> Phase:
    started = time.monotonic()
    stack.up()
    up_s = time.monotonic() - started
    log(f"[{metadata} {settings} {phase}] up after {up_s:.1f} s; {args.rate}/s for {args.duration:.0f} s")
    rows, undecided = run_load(stack, args.rate, args.duration)
    result = Phase(metadata, phase, settings, up_s, undecided=undecided)
    result.latencies = [r["published_at"] - r["published"] for r in rows if "published_at" in r]
    for name, start, end in STAGES:
        values = [r[end] - r[start] for r in rows[:3] if start in r and end in r]
        if values:
            result.stages[name] = statistics.median(values)
    first = percentile(result.latencies[: args.first], 0.99)
    log(
        f"[{metadata} {settings} {phase}] first {args.first}: p99 {first:.2f} s; "
        f"minute p99 {percentile(result.latencies, 0.99):.2f} s; undecided {undecided}"
    )
    return result


def postgres_url(tag: str) -> str:
    return f"{PG}/onb_cold_{os.getpid()}_{tag}"


def drop_databases(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in (name, f"{name}_batch"):
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    conn.close()


def one_variant(
    metadata: str, settings: dict[str, str], tag: str, model_dir: Path, args: argparse.Namespace
) -> list[Phase]:
    shown = " ".join(f"{k}={v}" for k, v in settings.items()) or "repository"
    with tempfile.TemporaryDirectory(prefix="onboarding-coldstart-") as tmp:
        db = "sqlite" if metadata == "sqlite" else postgres_url(tag)
        stack = FaultStack(stack_env(Path(tmp) / "home", model_dir, db, **settings))
        try:
            phases = [measure(stack, metadata, shown, "start", args)]
            stack.cli("down", timeout_s=600)
            phases.append(measure(stack, metadata, shown, "restart", args))
            return phases
        finally:
            left = stack.down()
            if left:
                log(f"left after down: {left}")
            if metadata != "sqlite":
                with contextlib.suppress(Exception):
                    drop_databases(db)


def table(phases: list[Phase], first: int) -> str:
    lines = [
        f"| metadata | settings | phase | `up` took | first {first}: p50 | p99 | max "
        "| first minute: p50 | p99 | undecided | first three, median: listener | to first task | steps | publish |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        head = p.latencies[:first] or [float("nan")]
        whole = p.latencies or [float("nan")]
        stages = " | ".join(f"{p.stages.get(name, float('nan')):.2f} s" for name, _, _ in STAGES)
        lines.append(
            f"| {p.metadata} | {p.settings} | {p.phase} | {p.up_s:.1f} s "
            f"| {statistics.median(head):.2f} s | {percentile(head, 0.99):.2f} s "
            f"| {max(head):.2f} s | {statistics.median(whole):.2f} s | {percentile(whole, 0.99):.2f} s | {p.undecided} "
            f"| {stages} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metadata", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--first", type=int, default=20)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model-dir", type=Path, help="a trained model directory to use (default: train one)")
    parser.add_argument("--compare", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    settings: list[dict[str, str]] = [{}]
    if args.compare:
        settings.append(dict(item.split("=", 1) for item in args.compare))
    order = [m.strip() for m in args.metadata.split(",") if m.strip()]
    command = "python benchmarks/coldstart.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the stack in progress is stopped
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="onboarding-coldstart-model-") as models:
        model_dir = model_dir_or_train(args.model_dir, Path(models))
        for r in range(args.rounds):
            for metadata in order if r % 2 == 0 else order[::-1]:
                for i, chosen in enumerate(settings if r % 2 == 0 else settings[::-1]):
                    phases += one_variant(metadata, chosen, f"{r}_{metadata}_{i}", model_dir, args)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"\nCommand: `{command}`  ")
    print(f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}; {when}\n")
    print(table(phases, args.first))
    if args.out:
        args.out.write_text(
            json.dumps({"command": command, "when": when, "phases": [p.__dict__ for p in phases]}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
