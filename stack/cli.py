"""`onboarding-stack`: run the service on this machine.

onboarding-stack demo     up, then publish a sample signup and print its decision
onboarding-stack up       Redis (if none answers), realtime and batch Airflow, the listeners,
                          rq worker and rq cron, metrics endpoints: under a supervisor
onboarding-stack status   which parts are up: exit 0 only when every part runs and answers its
                          health check now, else 3
onboarding-stack down     stop everything (SIGTERM, wait, SIGKILL; reverse start order), whole process
                          trees, also those a killed supervisor left
onboarding-stack logs [-f] [-n N] [NAME]
                          the last N lines (40) of one component's log or all; -f follows them
                          (one log: its lines; all: each line prefixed with its component)
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

import redis

from onboarding.decision import wait_for_decision
from onboarding.errors import OnboardingError
from onboarding.publisher import publish_signup
from onboarding.settings import StreamSettings
from risk.samples import new_signup
from stack.errors import StackError
from stack.local import Stack, step
from stack.logtail import follow, last_lines
from stack.settings import StackSettings


def demo(stack: Stack) -> int:
    stack.up()
    streams = StreamSettings.from_env()
    client = redis.Redis.from_url(streams.redis_url)
    event = new_signup()
    publish_signup(client, streams.signups_stream, event)
    step(f"published sample signup {event['event_id']} for {event['user_id']}; waiting for its decision")
    decision = wait_for_decision(client, streams.decisions_stream, event["event_id"], 60)
    if decision is None:
        print("no decision within 60 s; see `onboarding-stack logs`", file=sys.stderr)
        return 1
    print(json.dumps(decision.to_dict(), indent=2))
    latency = decision.latency_s("accepted_at", "published_at")
    step(
        f"decision: {decision.decision.upper()} (score {decision.score}) "
        f"in {latency:.2f} s after the listener accepted it"
    )
    print(
        "\nSend more:      .venv/bin/onboarding-publish --count 5 --wait 30\n"
        "Read decisions: .venv/bin/onboarding-decisions --follow\n"
        "Status / logs:  scripts/demo status | scripts/demo logs listener-1 | scripts/demo logs -f\n"
        f"Airflow UI:     {stack.realtime.spec.api_url} (realtime), {stack.batch.spec.api_url} (batch);\n"
        f"                user admin, passwords in {stack.realtime.home / 'passwords.json'} and "
        f"{stack.batch.home / 'passwords.json'}\n"
        "Stop:           scripts/demo down"
    )
    return 0


def logs(stack: Stack, name: str | None, follow_them: bool, lines: int) -> int:
    """The last lines of one component's log or all of them; with `follow_them`, until Ctrl-C
    or SIGTERM."""
    known = [path.stem for path in stack.log_files()]
    if name is not None and name not in known:
        print(
            f"onboarding-stack: no log named {name!r} in {stack.log_dir}; known: {', '.join(known) or 'none yet'}",
            file=sys.stderr,
        )
        return 1

    def chosen() -> list[Path]:
        return [path for path in stack.log_files() if name in (None, path.stem)]

    if not follow_them:
        for path in chosen():
            print(f"--- {path.stem} ({path}) ---")
            print("\n".join(last_lines(path, lines)))
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    follow(chosen, sys.stdout, stop, backlog=lines, prefix=name is None)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onboarding-stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["demo", "up", "down", "status", "logs"])
    parser.add_argument("name", nargs="?", help="for logs: listener-1, realtime-scheduler, supervisor, ...")
    parser.add_argument("-f", "--follow", action="store_true", help="logs: keep printing lines as they are written")
    parser.add_argument("-n", "--lines", type=int, default=40, metavar="N", help="logs: the last N lines (40)")
    args = parser.parse_intermixed_args(argv)  # `logs -f NAME` as well as `logs NAME -f`
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        stack = Stack(StackSettings.from_env())
        if args.command == "demo":
            return demo(stack)
        if args.command == "up":
            stack.up()
        elif args.command == "down":
            stack.down()
        elif args.command == "status":
            status = stack.status()
            for name, state in status.items():
                print(f"{name:26} {state}")
            return 0 if all(s.startswith("up") for s in status.values()) else 3
        elif args.command == "logs":
            return logs(stack, args.name, args.follow, args.lines)
    except (StackError, OnboardingError) as err:
        print(f"onboarding-stack: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
