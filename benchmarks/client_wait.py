"""How long an app waits for its decision: submit -> decision held by the app.

    python benchmarks/client_wait.py [--count 120] [--rate 2] [--metadata-db postgres]
                                     [--out docs/benchmarks/client-wait.md]

Starts a realtime Airflow (api-server, scheduler, dag-processor) and a listener, warms them
up, then submits --count signups at --rate per second with the Python client (an open loop
on a fixed schedule). Each signup is waited for in its own thread from the moment it was
submitted, two ways side by side on the same decision:
  wait  `OnboardingClient.wait`: SUBSCRIBE to `<decisions>:event:<id>`, GET the key (the
        service's per-event lookup, O(1) per event);
  scan  the older way: `XREAD BLOCK` on the decisions stream from its last id before the
        submit, reading every decision and keeping the one with this event id.
Reports p50/p95/p99/max of submit -> decision held, of published (the decision's
`published_at`) -> held, the ratio scan/wait, and how many stream entries the scanning
waiters read. Prints JSON and a Markdown table and writes both, with the command, to --out.
The Redis database of E2E_REDIS_URL is shared with the tests; the stack's own keys
(`clientwait-<db>:*`) are removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "clients" / "python"):  # testkit and the client run from the checkout
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import redis  # noqa: E402
from onboarding_client import OnboardingClient  # noqa: E402

from risk.samples import sample_application  # noqa: E402
from testkit.model import train_baseline  # noqa: E402
from testkit.realtime import E2E_REDIS_URL, NoSession, RealtimeStack, running_realtime  # noqa: E402

WAYS = ("wait", "scan")


@dataclass
class Sample:
    """One signup: when it was submitted, and when each way held its decision."""

    index: int
    event_id: str = ""
    submitted: float = 0.0  # time.monotonic()
    submitted_wall: float = 0.0  # time.time()
    published_wall: float | None = None  # the decision's published_at
    held: dict[str, float] | None = None  # way -> time.monotonic() when the app held it
    held_wall: dict[str, float] | None = None
    scanned_entries: int = 0
    error: str | None = None

    def seconds(self, way: str) -> float | None:
        return None if not self.held or way not in self.held else self.held[way] - self.submitted

    def after_publish(self, way: str) -> float | None:
        if self.published_wall is None or not self.held_wall or way not in self.held_wall:
            return None
        return self.held_wall[way] - self.published_wall


def scan_for(client: redis.Redis, stream: str, event_id: str, after_id: str, timeout_s: float) -> tuple[bool, int]:
    """The stream-scanning wait: read every decision after `after_id` until this event's.
    Returns (found, entries read)."""
    deadline = time.monotonic() + timeout_s
    cursor, read, wanted = after_id, 0, event_id.encode()
    while (remaining := deadline - time.monotonic()) > 0:
        reply: Any = client.xread({stream: cursor}, count=100, block=max(1, int(min(remaining, 1.0) * 1000)))
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                cursor, read = entry_id, read + 1
                if fields.get(b"event_id") == wanted:
                    return True, read
    return False, read


def last_id(client: redis.Redis, stream: str) -> str:
    newest: Any = client.xrevrange(stream, count=1)
    return newest[0][0].decode() if newest else "0-0"


def run_one(app: OnboardingClient, scanner: redis.Redis, sample: Sample, timeout_s: float) -> None:
    """Submit one signup and wait for its decision both ways at once, from the submit on."""
    stream = app.decisions_stream
    try:
        after = last_id(scanner, stream)
        held: dict[str, float] = {}
        held_wall: dict[str, float] = {}
        sample.submitted, sample.submitted_wall = time.monotonic(), time.time()
        sample.event_id = app.submit(sample_application(), user_id=f"bench-{sample.index}")

        def scan() -> None:
            found, sample.scanned_entries = scan_for(scanner, stream, sample.event_id, after, timeout_s)
            if found:
                held["scan"], held_wall["scan"] = time.monotonic(), time.time()

        scanning = threading.Thread(target=scan, name=f"scan-{sample.index}")
        scanning.start()
        decision = app.wait(sample.event_id, timeout_s)
        if decision is not None:
            held["wait"], held_wall["wait"] = time.monotonic(), time.time()
            published = decision.timestamps.get("published_at")
            if published:
                sample.published_wall = datetime.fromisoformat(published).timestamp()
        scanning.join()
        sample.held, sample.held_wall = held, held_wall
    except (redis.RedisError, ValueError) as err:
        sample.error = f"{type(err).__name__}: {err}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_s": round(percentile(values, 0.50), 3),
        "p95_s": round(percentile(values, 0.95), 3),
        "p99_s": round(percentile(values, 0.99), 3),
        "max_s": round(max(values), 3),
    }


def warm_up(app: OnboardingClient, count: int, timeout_s: float) -> None:
    """The first runs load the model and fill caches: not part of the figures."""
    for _ in range(count):
        event_id = app.submit(sample_application(), user_id="bench-warmup")
        if app.wait(event_id, timeout_s) is None:
            raise RuntimeError(f"warm-up: no decision for {event_id} within {timeout_s} s")


def measure(stack: RealtimeStack, count: int, rate: float, timeout_s: float) -> list[Sample]:
    app = OnboardingClient(
        redis.Redis.from_url(E2E_REDIS_URL),
        signups_stream=stack.streams.signups_stream,
        decisions_stream=stack.streams.decisions_stream,
    )
    scanner = redis.Redis.from_url(E2E_REDIS_URL)
    try:
        warm_up(app, 3, timeout_s)
        samples = [Sample(i) for i in range(count)]
        threads: list[threading.Thread] = []
        began = time.monotonic()
        next_report = began + 10
        for sample in samples:
            # Open loop: each submit at its slot, however slow the decisions are.
            time.sleep(max(0.0, began + sample.index / rate - time.monotonic()))
            thread = threading.Thread(
                target=run_one, args=(app, scanner, sample, timeout_s), name=f"signup-{sample.index}"
            )
            thread.start()
            threads.append(thread)
            if time.monotonic() >= next_report:
                next_report += 10
                _progress(samples, sample.index + 1, count, began)
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            if time.monotonic() >= next_report:
                next_report += 10
                _progress(samples, count, count, began)
        for thread in threads:
            thread.join()
        _progress(samples, count, count, began)
        return samples
    finally:
        app.close()
        scanner.close()


def _progress(samples: list[Sample], submitted: int, count: int, began: float) -> None:
    done = [s.seconds("wait") for s in samples if s.held and "wait" in s.held]
    values = [v for v in done if v is not None]
    p50 = f", wait p50 so far {percentile(values, 0.5):.2f} s" if values else ""
    print(
        f"[{time.monotonic() - began:5.0f} s] submitted {submitted}/{count}, decided {len(values)}{p50}",
        file=sys.stderr,
        flush=True,
    )


def figures(samples: list[Sample], args: argparse.Namespace, load: tuple[float, float]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "signups": len(samples),
        "rate_per_s": args.rate,
        "metadata_db": args.metadata_db,
        "errors": [s.error for s in samples if s.error],
    }
    for way in WAYS:
        held = [v for s in samples if (v := s.seconds(way)) is not None]
        result[way] = {
            "undecided": len(samples) - len(held),
            "submit_to_held": summary(held),
            "published_to_held": summary([v for s in samples if (v := s.after_publish(way)) is not None]),
        }
    result["scan_entries_read"] = {
        "total": sum(s.scanned_entries for s in samples),
        "per_wait_mean": round(sum(s.scanned_entries for s in samples) / max(1, len(samples)), 1),
        "per_wait_max": max((s.scanned_entries for s in samples), default=0),
    }
    result["load_average_1m_before_after"] = [round(load[0], 1), round(load[1], 1)]
    result["cpus"] = os.cpu_count()
    return result


def table(result: dict[str, Any]) -> str:
    rows = [
        "| Wait | measured | n | p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for span in ("submit_to_held", "published_to_held"):
        label = "submit -> held" if span == "submit_to_held" else "published -> held"
        for way, name in (("wait", "`client.wait` (SUBSCRIBE + GET)"), ("scan", "stream scan (XREAD, filter)")):
            s = result[way][span]
            if not s.get("n"):
                rows.append(f"| {name} | {label} | 0 | | | | |")
                continue
            rows.append(
                f"| {name} | {label} | {s['n']} | {s['p50_s']:.3f} s | {s['p95_s']:.3f} s | "
                f"{s['p99_s']:.3f} s | {s['max_s']:.3f} s |"
            )
        wait, scan = result["wait"][span], result["scan"][span]
        if wait.get("n") and scan.get("n"):
            ratios = [f"{scan[k] / wait[k]:.2f}x" if wait[k] else "-" for k in ("p50_s", "p95_s", "p99_s", "max_s")]
            rows.append(f"| ratio scan / wait | {label} | | {' | '.join(ratios)} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=120, help="signups to submit")
    parser.add_argument("--rate", type=float, default=2.0, help="signups per second")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="how long each signup is waited for")
    parser.add_argument("--metadata-db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "client-wait.md")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="client-wait-"))
    model_dir = train_baseline(base / "models")
    print("starting the realtime stack ...", file=sys.stderr, flush=True)
    with running_realtime(args.metadata_db, base / "realtime", model_dir, NoSession(), "clientwait") as stack:
        stack.start_listener(LOG_FORMAT="text")
        load_before = os.getloadavg()[0]
        samples = measure(stack, args.count, args.rate, args.timeout_s)
        load_after = os.getloadavg()[0]
    result = figures(samples, args, (load_before, load_after))
    command = (
        f"python benchmarks/client_wait.py --count {args.count} --rate {args.rate:g} "
        f"--metadata-db {args.metadata_db} --timeout-s {args.timeout_s:g}"
    )
    markdown = table(result)
    print(json.dumps(result, indent=2))
    print(markdown)
    print(command)
    entries = result["scan_entries_read"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "# Waiting for one decision: per-event key and channel vs stream scan\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this project's {result['cpus']}-core machine "
        f"(shared; 1-minute load average {load_before:.1f} before, {load_after:.1f} after), Airflow 3.3.2, "
        f"{args.metadata_db} metadata, realtime instance (LocalExecutor) with one listener. "
        f"{result['signups']} signups at {args.rate:g}/s, each waited for from its submit, both ways at once "
        "on the same decision (`benchmarks/client_wait.py`).\n\n"
        f"```bash\n{command}\n```\n\n"
        f"{markdown}\n\n"
        f"Undecided within {args.timeout_s:g} s: wait {result['wait']['undecided']}, "
        f"scan {result['scan']['undecided']}. "
        f"Stream entries the scanning waiters read: {entries['total']} in all, {entries['per_wait_mean']} per "
        f"wait on average, {entries['per_wait_max']} at most (`client.wait` reads one key and at most one "
        "message, whatever the traffic).\n\n"
        "submit -> held is what the app sees: listener, Airflow run, publish, delivery. published -> held is "
        "the delivery alone (the decision's `published_at` to the app holding it; same host clock).\n\n"
        f"```json\n{json.dumps(result, indent=2)}\n```\n"
    )
    if result["errors"]:
        print(f"{len(result['errors'])} errors, first: {result['errors'][0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
