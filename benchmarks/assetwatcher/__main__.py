"""Check the assetwatcher variant end to end, and show what it does with spaced and burst signups.

    python -m benchmarks.assetwatcher [--events 20] [--spacing 0.5] [--redis-url redis://127.0.0.1:6379/6]
                                      [--metadata-db sqlite|postgres] [--json out.json] [--keep-home]

Starts the instance in a temporary home, publishes --events signups --spacing seconds apart,
waits, then publishes --events more at once, waits for their decisions and prints, per phase:
the latency (the decision's published_at - accepted_at), how many were decided and how many
were lost (never decided; pub/sub keeps nothing for a channel nobody listens to), and the
runs: how many, and how many asset events each consumed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from benchmarks.assetwatcher import AssetWatcherHandle, assetwatcher_instance, with_accepted_at
from risk.samples import new_signup


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def publish_phase(handle: AssetWatcherHandle, tag: str, count: int, spacing_s: float) -> list[str]:
    event_ids: list[str] = []
    t0 = time.monotonic()
    for i in range(count):
        delay = t0 + i * spacing_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        event = with_accepted_at(new_signup(user_id=f"check-{tag}-{i}"))
        handle.publish(event)
        event_ids.append(event["event_id"])
    return event_ids


def wait_decided(handle: AssetWatcherHandle, event_ids: list[str], timeout_s: float, quiet_s: float) -> None:
    """Until every event is decided, or nothing new was decided for `quiet_s` (the rest are lost)."""
    wanted = set(event_ids)
    deadline = time.monotonic() + timeout_s
    last_count, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        decided = {d["event_id"] for d in handle.decisions()} & wanted
        if decided == wanted:
            return
        if len(decided) != last_count:
            last_count, last_change = len(decided), time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            return
        time.sleep(0.5)


def latency_s(decision: dict[str, Any]) -> float | None:
    stamps = decision.get("timestamps") or {}
    if "accepted_at" not in stamps or "published_at" not in stamps:
        return None
    published = datetime.fromisoformat(stamps["published_at"])
    return (published - datetime.fromisoformat(stamps["accepted_at"])).total_seconds()


STAGES = (
    # name, from, to: timestamps of the decision event
    ("to_asset_event", "accepted_at", "asset_event_at"),
    ("to_run_start", "asset_event_at", "run_started_at"),
    ("steps_and_publish", "run_started_at", "published_at"),
)


def stage_medians(decided: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, start, end in STAGES:
        values = []
        for decision in decided:
            stamps = decision.get("timestamps") or {}
            if start in stamps and end in stamps:
                delta = datetime.fromisoformat(stamps[end]) - datetime.fromisoformat(stamps[start])
                values.append(delta.total_seconds())
        out[name] = round(statistics.median(values), 3) if values else None
    return out


def summarize(handle: AssetWatcherHandle, tag: str, event_ids: list[str], runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_event = {d["event_id"]: d for d in handle.decisions()}
    decided = [by_event[e] for e in event_ids if e in by_event]
    latencies = sorted(x for x in (latency_s(d) for d in decided) if x is not None)
    run_ids = {d.get("run_id") for d in decided}
    phase_runs = [r for r in runs if r["run_id"] in run_ids]
    return {
        "phase": tag,
        "published": len(event_ids),
        "decided": len(decided),
        "lost": len(event_ids) - len(decided),
        "unheard": len(set(handle.unheard) & set(event_ids)),
        "latency_s": {
            "p50": round(statistics.median(latencies), 3) if latencies else None,
            "max": round(latencies[-1], 3) if latencies else None,
            "all": [round(x, 3) for x in latencies],
        },
        "stage_medians_s": stage_medians(decided),
        "runs": len(phase_runs),
        "asset_events_per_run": sorted((r["asset_events"] for r in phase_runs), reverse=True),
        "events_in_run": sorted((int(d.get("events_in_run") or 0) for d in decided), reverse=True),
        "per_event": [
            {
                "event_id": e,
                "decided": e in by_event,
                "latency_s": latency_s(by_event[e]) if e in by_event else None,
                "run_id": by_event[e].get("run_id") if e in by_event else None,
                "events_in_run": by_event[e].get("events_in_run") if e in by_event else None,
            }
            for e in event_ids
        ],
    }


def show(result: dict[str, Any]) -> None:
    lat = result["latency_s"]
    print(
        f"\n== {result['phase']}: {result['published']} published, {result['decided']} decided, "
        f"{result['lost']} lost ({result['unheard']} reached no subscriber)"
    )
    print(f"   latency accepted_at -> published_at: p50 {lat['p50']} s, max {lat['max']} s")
    stages = ", ".join(f"{k} {v} s" for k, v in result["stage_medians_s"].items())
    print(f"   median by stage: {stages}")
    print(f"   runs: {result['runs']}; asset events per run: {result['asset_events_per_run']}")
    for i, row in enumerate(result["per_event"]):
        latency = f"{row['latency_s']:.3f} s" if row["latency_s"] is not None else "LOST"
        run = f"{row['run_id']} ({row['events_in_run']} in run)" if row["run_id"] else ""
        print(f"   {i:3d} {row['event_id']}  {latency:>9}  {run}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.assetwatcher", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20, help="signups per phase")
    parser.add_argument("--spacing", type=float, default=0.5, help="seconds between spaced signups")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--metadata-db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--api-port", type=int, default=28180)
    parser.add_argument("--scheduler-health-port", type=int, default=28184)
    parser.add_argument("--wait", type=float, default=120.0, help="at most this long for a phase's decisions")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep-home", action="store_true")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    home = Path(tempfile.mkdtemp(prefix="onboarding-assetwatcher-"))
    client = redis.Redis.from_url(args.redis_url)
    stream = f"assetwatcher-check:{home.name}:decisions"
    database_url = None
    if args.metadata_db == "postgres":
        from stack.instance import drop_postgres_database

        database_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/onboarding_assetwatcher_check_{home.name[-8:]}"
        database_url = database_url.replace("-", "_")
        drop_postgres_database(database_url)
    results: list[dict[str, Any]] = []
    try:
        log(f"starting the assetwatcher instance in {home} (decisions on {stream})")
        t0 = time.monotonic()
        with assetwatcher_instance(
            home / "assetwatcher",
            args.redis_url,
            stream,
            api_port=args.api_port,
            scheduler_health_port=args.scheduler_health_port,
            database_url=database_url,
        ) as handle:
            log(f"ready and warmed up in {time.monotonic() - t0:.1f} s; channel {handle.channel}, {handle.api_url}")
            spaced = publish_phase(handle, "spaced", args.events, args.spacing)
            wait_decided(handle, spaced, args.wait, quiet_s=20)
            handle.wait_subscribed(60)
            log("spaced phase done; burst")
            burst = publish_phase(handle, "burst", args.events, 0.0)
            wait_decided(handle, burst, args.wait, quiet_s=20)
            runs = handle.runs()
            results = [summarize(handle, "spaced", spaced, runs), summarize(handle, "burst", burst, runs)]
            warmup_runs = [r for r in runs if r["warmup"]]
            log(f"stopping ({len(runs)} runs in all, {len(warmup_runs)} of them warm-up)")
        for result in results:
            show(result)
        total = sum(r["published"] for r in results)
        decided = sum(r["decided"] for r in results)
        print(
            f"\n== total: {total} published, {decided} decided, {total - decided} lost; "
            f"{sum(r['runs'] for r in results)} runs for {decided} decided signups"
        )
        if args.json:
            args.json.write_text(json.dumps({"args": vars(args), "results": results}, default=str) + "\n")
        return 0
    finally:
        client.delete(stream)
        for key in client.scan_iter(f"{stream}:published:*"):
            client.delete(key)
        if database_url:
            from stack.instance import drop_postgres_database

            drop_postgres_database(database_url)
        if args.keep_home:
            log(f"home kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
