"""Command-line entry points.

onboarding-listener [--burst] [--max-messages N]   run the consumer
onboarding-listener check                           health probe: exit 0 healthy, 1 not
onboarding-publish [--count N] [--file F|-] [--wait S]
onboarding-decisions [--event-id ID] [--follow]
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import redis

from listener.consumer import Listener
from listener.deadletters import get_dead_letter, list_dead_letters, replay
from listener.metrics import ListenerMetrics
from listener.settings import ListenerSettings
from onboarding.airflow import AirflowClient
from onboarding.decision import DecisionEvent, get_decision, read_decisions, wait_for_decision
from onboarding.errors import InvalidEvent, OnboardingError
from onboarding.http import loop_health, loop_liveness, probe, serve_http
from onboarding.logs import configure_logging
from onboarding.outages import probe_client, redis_client
from onboarding.publisher import publish_signup
from onboarding.settings import StreamSettings, stack_defaults_for
from onboarding.streams import live_entries
from risk.drift import DriftCollector
from risk.samples import new_signup

logger = logging.getLogger("listener.cli")


def listener_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onboarding-listener", description="Consume signups, trigger runs.")
    parser.add_argument("command", nargs="?", choices=["run", "check"], default="run")
    parser.add_argument("--burst", action="store_true", help="process what is queued, then exit")
    parser.add_argument("--max-messages", type=int, default=None, help="exit after settling this many")
    args = parser.parse_args(argv)
    try:
        settings = ListenerSettings.from_env()
    except OnboardingError as err:
        print(f"onboarding-listener: {err}", file=sys.stderr)
        return 2
    if args.command == "check":
        return _check(settings)
    configure_logging("listener", settings.log_format)
    client = redis_client(settings.streams.redis_url, block_s=settings.block_ms / 1000)
    airflow = AirflowClient(settings.airflow)
    listener = Listener(client, airflow, settings, ListenerMetrics())
    # The batch instance's drift DAG writes PSI values to Redis; expose them here.
    listener.metrics.registry.register(DriftCollector(client))
    stale_after_s = max(10.0, 3 * settings.block_ms / 1000 + settings.airflow.timeout_s)

    # Readiness pings Redis with short timeouts: it answers before a prober gives up.
    ready_client = probe_client(settings.streams.redis_url)
    healthy = loop_health("consumer loop", listener.seconds_since_loop, stale_after_s, ready_client)
    live = loop_liveness("consumer loop", listener.seconds_since_loop, stale_after_s)

    server = serve_http(settings.metrics_host, settings.metrics_port, listener.metrics.registry, healthy, live=live)

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("listener: received %s; finishing the entry in hand", signal.Signals(signum).name)
        listener.stop()
        # A second signal, or the timeout, ends the process even if Airflow hangs.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_REAL, max(settings.shutdown_timeout_s, 0.001))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, lambda *_: _shutdown_timeout(settings.shutdown_timeout_s))
    logger.info(
        "listener: consumer %s in group %s on stream %s -> %s (metrics on %s:%s)",
        settings.consumer,
        settings.group,
        settings.streams.signups_stream,
        settings.airflow.url,
        settings.metrics_host,
        server.server_address[1],
    )
    try:
        settled = listener.run(burst=args.burst, max_messages=args.max_messages)
    except redis.RedisError as err:
        logger.error("listener: redis failed: %s", err)
        return 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        server.shutdown()
        airflow.close()
    logger.info("listener: stopped after settling %d entries", settled)
    return 0


def _shutdown_timeout(timeout_s: float) -> None:
    # Unacknowledged entries stay pending and are re-read on the next start: nothing is lost.
    logger.error("listener: shutdown took longer than %.1f s; exiting with entries left pending", timeout_s)
    raise SystemExit(1)


def _check(settings: ListenerSettings) -> int:
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/healthz"
    return probe(url)


def publish_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onboarding-publish",
        description="Publish signup events to the signups stream (sample applicants by default).",
    )
    parser.add_argument("--count", type=int, default=1, help="how many sample signups to publish")
    parser.add_argument("--file", help="a JSON file with one signup event (or a list); '-' reads stdin")
    parser.add_argument("--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for each decision")
    args = parser.parse_args(argv)
    stack_defaults_for(parser.prog)
    streams = StreamSettings.from_env()
    client = redis.Redis.from_url(streams.redis_url)
    if args.file:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        loaded = json.loads(text)
        events = loaded if isinstance(loaded, list) else [loaded]
    else:
        events = [new_signup() for _ in range(args.count)]
    published = []
    for event in events:
        try:
            entry_id = publish_signup(client, streams.signups_stream, event)
        except InvalidEvent as err:
            print(f"rejected {event.get('event_id', '?')}: {err}", file=sys.stderr)
            return 1
        published.append(event)
        print(json.dumps({"published": event["event_id"], "user_id": event["user_id"], "entry": entry_id}))
    status = 0
    for event in published if args.wait > 0 else []:
        decision = wait_for_decision(client, streams.decisions_stream, event["event_id"], args.wait)
        if decision is None:
            print(f"no decision for {event['event_id']} within {args.wait:g} s", file=sys.stderr)
            status = 1
        else:
            print(json.dumps(_summary(decision), indent=2))
    return status


def _summary(event: DecisionEvent) -> dict[str, Any]:
    data = event.to_dict()
    latency = event.latency_s("accepted_at", "published_at")
    if latency is not None:
        data["latency_s"] = round(latency, 3)
    return data


def decisions_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onboarding-decisions", description="Read decision events.")
    parser.add_argument("--event-id", help="only this signup's decision: one key lookup; with --wait S, wait for it")
    parser.add_argument("--wait", type=float, default=0.0, metavar="S", help="with --event-id: wait up to S seconds")
    parser.add_argument("--follow", action="store_true", help="keep printing new decisions")
    parser.add_argument("--last", type=int, default=20, help="how many recent decisions to show")
    args = parser.parse_args(argv)
    stack_defaults_for(parser.prog)
    streams = StreamSettings.from_env()
    client = redis.Redis.from_url(streams.redis_url)
    if args.event_id:
        if args.wait > 0:
            found = wait_for_decision(client, streams.decisions_stream, args.event_id, args.wait)
        else:
            found = get_decision(client, streams.decisions_stream, args.event_id)
        if found is None:
            print(
                f"no decision for {args.event_id}" + (f" within {args.wait:g} s" if args.wait else ""), file=sys.stderr
            )
            return 1
        print(json.dumps(_summary(found)))
        return 0
    entries = live_entries(client.xrevrange(streams.decisions_stream, count=args.last))
    last = "0-0"
    for entry_id, fields in reversed(entries):
        last = entry_id
        print(json.dumps(_summary(DecisionEvent.from_dict(json.loads(fields[b"payload"])))))
    while args.follow:
        for entry_id, event in read_decisions(client, streams.decisions_stream, after=last):
            last = entry_id
            print(json.dumps(_summary(event)), flush=True)
        time.sleep(0.5)
    return 0


def deadletters_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onboarding-deadletters",
        description="List, inspect and replay dead-lettered signups (replayed ones are validated again).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    list_cmd = sub.add_parser("list", help="one line per dead letter, oldest first")
    list_cmd.add_argument("--reason", help="only this reason (e.g. not_json, max_deliveries)")
    list_cmd.add_argument("--count", type=int, help="only the newest N")
    show = sub.add_parser("show", help="one dead letter with its original payload")
    show.add_argument("id")
    replay_cmd = sub.add_parser("replay", help="send dead letters back to the signups stream")
    replay_cmd.add_argument("ids", nargs="*", help="dead-letter ids to replay")
    replay_cmd.add_argument("--reason", help="replay every dead letter with this reason")
    replay_cmd.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    args = parser.parse_args(argv)
    stack_defaults_for(parser.prog)
    streams = StreamSettings.from_env()
    client = redis.Redis.from_url(streams.redis_url)
    dead = streams.dead_letter_stream
    if args.command == "list":
        letters = list_dead_letters(client, dead, args.reason, args.count)
        for listed in letters:
            print(json.dumps(listed.to_dict()))
        print(f"{len(letters)} dead letter(s) in {dead}", file=sys.stderr)
        return 0
    if args.command == "show":
        letter = get_dead_letter(client, dead, args.id)
        if letter is None:
            print(f"no dead letter {args.id} in {dead}", file=sys.stderr)
            return 1
        print(json.dumps(letter.to_dict(with_payload=True), indent=2))
        return 0
    if not args.ids and not args.reason:
        parser.error("replay needs dead-letter ids or --reason")
    chosen = list_dead_letters(client, dead, args.reason) if args.reason else []
    missing: list[str] = []
    for entry_id in args.ids:
        letter = get_dead_letter(client, dead, entry_id)
        if letter is None:
            missing.append(entry_id)
        else:
            chosen.append(letter)
    if missing:
        print(f"no such dead letter(s): {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.dry_run:
        for letter in chosen:
            print(json.dumps({"would_replay": letter.to_dict()}))
        return 0
    results = replay(client, dead, streams.signups_stream, chosen)
    for letter, new_id in results:
        if new_id is None:
            print(json.dumps({"not_replayed": letter.entry_id, "why": "already replayed or empty"}))
        else:
            print(json.dumps({"replayed": letter.entry_id, "event_id": letter.event_id, "as": new_id}))
    done = sum(1 for _letter, new_id in results if new_id)
    print(f"replayed {done} of {len(chosen)} dead letter(s) to {streams.signups_stream}", file=sys.stderr)
    return 0 if done == len(chosen) else 1
