"""Operator and demo commands around the listener's streams (not the listener process itself,
whose entry point, `listener.cli`, loads only what consuming needs).

onboarding-publish [--count N] [--file F|-] [--wait S]
onboarding-decisions [--event-id ID] [--wait S] [--follow] [--last N]
onboarding-deadletters list|show|replay
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from listener.deadletters import DeadLetter, get_dead_letter, list_dead_letters, replay
from onboarding.console import add_version, environment_epilog
from onboarding.decision import DecisionEvent, get_decision, read_decisions, wait_for_decision
from onboarding.errors import InvalidEvent
from onboarding.publisher import publish_signup
from onboarding.redis_clients import Role, connect
from onboarding.settings import StreamSettings, stack_defaults_for
from onboarding.streams import live_entries

# What the three tools read: the streams (StreamSettings); outside a deployment, the local
# stack's settings file under ONBOARDING_HOME fills what is unset (stack_defaults_for).
ENVIRONMENT = (
    "REDIS_URL",
    "SIGNUPS_STREAM",
    "DECISIONS_STREAM",
    "DEAD_LETTER_STREAM",
    "ONBOARDING_APPS",
    "ONBOARDING_DATASET",
    "ONBOARDING_HOME",
)


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=environment_epilog(ENVIRONMENT),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    return parser


def publish_main(argv: list[str] | None = None) -> int:
    parser = _parser(
        "onboarding-publish", "Publish signup events to the signups stream (sample applicants by default)."
    )
    parser.add_argument("--count", type=int, default=1, help="how many sample signups to publish")
    parser.add_argument("--file", help="a JSON file with one signup event (or a list); '-' reads stdin")
    parser.add_argument("--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for each decision")
    args = parser.parse_args(argv)
    stack_defaults_for(parser.prog)
    streams = StreamSettings.from_env()
    client = connect(streams.redis_url, Role.CLI)
    if args.file:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        loaded = json.loads(text)
        events = loaded if isinstance(loaded, list) else [loaded]
    else:
        # The sample applicants come from the training data, which loads scikit-learn: only
        # when asked for.
        from risk.samples import new_signup

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
    parser = _parser("onboarding-decisions", "Read decision events.")
    parser.add_argument("--event-id", help="only this signup's decision: one key lookup; with --wait S, wait for it")
    parser.add_argument("--wait", type=float, default=0.0, metavar="S", help="with --event-id: wait up to S seconds")
    parser.add_argument("--follow", action="store_true", help="keep printing new decisions")
    parser.add_argument("--last", type=int, default=20, help="how many recent decisions to show")
    args = parser.parse_args(argv)
    stack_defaults_for(parser.prog)
    streams = StreamSettings.from_env()
    client = connect(streams.redis_url, Role.CLI)
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
    parser = _deadletters_parser()
    args = parser.parse_args(argv)
    stack_defaults_for(parser.prog)
    streams = StreamSettings.from_env()
    client = connect(streams.redis_url, Role.CLI)
    if args.command == "replay" and not args.ids and not args.reason:
        parser.error("replay needs dead-letter ids or --reason")
    return DEADLETTER_COMMANDS[args.command](args, client, streams)


def _deadletters_parser() -> argparse.ArgumentParser:
    """The command line of onboarding-deadletters: list, show and replay."""
    parser = _parser(
        "onboarding-deadletters",
        "List, inspect and replay dead-lettered signups (replayed ones are validated again).",
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
    return parser


def _list_letters(args: argparse.Namespace, client: redis.Redis, streams: StreamSettings) -> int:
    """Print one JSON line per dead letter (of a reason, the newest N), and how many on stderr."""
    dead = streams.dead_letter_stream
    letters = list_dead_letters(client, dead, args.reason, args.count)
    for listed in letters:
        print(json.dumps(listed.to_dict()))
    print(f"{len(letters)} dead letter(s) in {dead}", file=sys.stderr)
    return 0


def _show_letter(args: argparse.Namespace, client: redis.Redis, streams: StreamSettings) -> int:
    """Print one dead letter with its original payload; 1 if there is none with that id."""
    dead = streams.dead_letter_stream
    letter = get_dead_letter(client, dead, args.id)
    if letter is None:
        print(f"no dead letter {args.id} in {dead}", file=sys.stderr)
        return 1
    print(json.dumps(letter.to_dict(with_payload=True), indent=2))
    return 0


def _replay_letters(args: argparse.Namespace, client: redis.Redis, streams: StreamSettings) -> int:
    """Replay the chosen dead letters (or show them, with --dry-run); 0 only when every one
    of them was replayed."""
    dead = streams.dead_letter_stream
    chosen, missing = _chosen_letters(client, dead, args.reason, args.ids)
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


def _chosen_letters(
    client: redis.Redis, dead: str, reason: str | None, ids: list[str]
) -> tuple[list[DeadLetter], list[str]]:
    """The dead letters to replay: every one of `reason`, then those of `ids`; and the ids
    that name no dead letter."""
    chosen = list_dead_letters(client, dead, reason) if reason else []
    missing: list[str] = []
    for entry_id in ids:
        letter = get_dead_letter(client, dead, entry_id)
        if letter is None:
            missing.append(entry_id)
        else:
            chosen.append(letter)
    return chosen, missing


# onboarding-deadletters: each subcommand's handler.
DEADLETTER_COMMANDS: dict[str, Callable[[argparse.Namespace, redis.Redis, StreamSettings], int]] = {
    "list": _list_letters,
    "show": _show_letter,
    "replay": _replay_letters,
}
