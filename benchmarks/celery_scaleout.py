"""Decisions per second of the realtime instance on CeleryExecutor, with one and then two
Celery workers (each WORKER_CONCURRENCY slots), three listeners in one consumer group,
PostgreSQL metadata and result backend, Redis broker.

    E2E_REDIS_URL=redis://127.0.0.1:6379/14 .venv/bin/python benchmarks/celery_scaleout.py [--burst 100]

Redis (streams and the Celery broker, under a key prefix) is E2E_REDIS_URL's database;
PostgreSQL on 127.0.0.1:5432 gets a scratch database.

Per worker count: a warm-up of 5 signups, then a burst published at once; the figure is
burst size / (last decision published - first signup accepted). Prints one line per
worker count and the command.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # testkit runs from the checkout: it is not installed

from onboarding.publisher import publish_signup  # noqa: E402
from risk.samples import new_signup  # noqa: E402
from testkit.celery_stack import (  # noqa: E402
    E2E_REDIS_URL,
    WORKER_CONCURRENCY,
    celery_realtime,
    decisions,
    start_workers,
    wait_decisions,
)
from testkit.model import train_baseline  # noqa: E402
from testkit.realtime import NoSession  # noqa: E402


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def burst(stack, size: int, seed: int) -> tuple[float, float]:
    """Publish `size` signups at once; return (decisions per second, median latency s)."""
    rng = random.Random(seed)
    already = len(decisions(stack))
    events = [new_signup(rng=rng) for _ in range(size)]
    ids = {e["event_id"] for e in events}
    for event in events:
        publish_signup(stack.redis, stack.streams.signups_stream, event)
    found = wait_decisions(stack, already + size, timeout_s=900)
    mine = [d for d in found if d.event_id in ids]
    if len(mine) != size:
        raise SystemExit(f"only {len(mine)} of {size} decided")
    first = min(_ts(d.timestamps["accepted_at"]) for d in mine)
    last = max(_ts(d.timestamps["published_at"]) for d in mine)
    latencies = [d.latency_s("accepted_at", "published_at") for d in mine]
    return size / (last - first), statistics.median(x for x in latencies if x is not None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=100)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="celery-bench-") as tmp:
        base = Path(tmp)
        model_dir = train_baseline(base / "models")
        with celery_realtime(base / "realtime", model_dir, NoSession(), "celerybench", E2E_REDIS_URL, 1, 3) as (
            stack,
            workers,
        ):
            for count in (1, 2):
                if count == 2:
                    workers += start_workers(stack, 1, first=2)
                burst(stack, 5, seed=count)  # warm-up: imports, model load, connections
                time.sleep(2)
                rate, median = burst(stack, args.burst, seed=100 + count)
                results.append((count, rate, median))
                print(
                    f"celery workers={count} (concurrency {WORKER_CONCURRENCY} each), listeners=3, "
                    f"burst={args.burst}: {rate:.2f} decisions/s, median latency {median:.2f} s",
                    flush=True,
                )
    print(
        f"cores on this machine: {os.cpu_count()}; command: .venv/bin/python benchmarks/celery_scaleout.py "
        f"--burst {args.burst}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
