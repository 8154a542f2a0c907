"""`onboarding-stack`: run the service on this machine.

onboarding-stack demo     up, then publish a sample signup and print its decision
onboarding-stack up       Redis (if none answers), realtime and batch Airflow, the listeners,
                          rq worker and rq cron, metrics endpoints, the SLA and review pages:
                          under a supervisor
onboarding-stack status [--json]
                          which parts are up: exit 0 only when every part runs and answers its
                          health check now, else 3; --json: one JSON document, a list with one
                          object per service (name, pid, running, healthy, port, uptime_s,
                          restarts, state)
onboarding-stack restart NAME
                          restart one service of the running stack without losing work: SIGTERM
                          to its processes, wait for them to finish what they hold (its stop
                          timeout), start it again, wait until it is healthy; the others run on
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
from collections.abc import Callable
from pathlib import Path

from onboarding.console import add_version, environment_epilog
from onboarding.decision import wait_for_decision
from onboarding.errors import OnboardingError
from onboarding.publisher import publish_signup
from onboarding.redis_clients import Role, connect
from onboarding.settings import StreamSettings
from risk.samples import new_signup
from stack.errors import StackError
from stack.local import Stack, step
from stack.logtail import follow, last_lines
from stack.review import DEMO_REVIEWER
from stack.settings import StackSettings

# What `Stack` and the commands read (stack/settings.py, onboarding/settings.py StreamSettings,
# risk/settings.py for the model the stack trains when none is in service).
ENVIRONMENT = (
    "ONBOARDING_HOME", "REDIS_URL", "ONBOARDING_METADATA_DB", "ONBOARDING_BATCH_METADATA_DB",
    "REALTIME_API_PORT", "REALTIME_SCHEDULER_HEALTH_PORT", "REALTIME_LOG_SERVER_PORT", "REALTIME_DAGS_FOLDER",
    "BATCH_API_PORT", "BATCH_SCHEDULER_HEALTH_PORT", "BATCH_LOG_SERVER_PORT", "BATCH_DAGS_FOLDER",
    "ONBOARDING_LISTENERS", "LISTENER_METRICS_PORT", "INTAKE_METRICS_PORT", "ARCHIVE_METRICS_PORT", "SLA_PORT",
    "REVIEW_PORT", "ONBOARDING_LOG_MAX_BYTES", "ONBOARDING_LOG_BACKUPS", "SIGNUPS_STREAM", "DECISIONS_STREAM",
    "DEAD_LETTER_STREAM", "ONBOARDING_APPS", "ONBOARDING_DATASET", "RISK_MODEL_DIR",
)  # fmt: skip


def demo(stack: Stack) -> int:
    stack.up()
    streams = StreamSettings.from_env()
    client = connect(streams.redis_url, Role.CLI)
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
        f"Review page:    {stack.review_url}/ (user {DEMO_REVIEWER}, password in "
        f"{stack.review_logins.password_file});\n"
        "                the queue by hand: .venv/bin/onboarding-review list\n"
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
        prog="onboarding-stack",
        description=__doc__,
        epilog=environment_epilog(ENVIRONMENT),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    parser.add_argument("command", choices=list(COMMANDS))
    parser.add_argument(
        "name", nargs="?", help="for logs and restart: listener-1, realtime-scheduler, sla, ... (see status)"
    )
    parser.add_argument("--json", action="store_true", help="status: one JSON document instead of the table")
    parser.add_argument("-f", "--follow", action="store_true", help="logs: keep printing lines as they are written")
    parser.add_argument("-n", "--lines", type=int, default=40, metavar="N", help="logs: the last N lines (40)")
    args = parser.parse_intermixed_args(argv)  # `logs -f NAME` as well as `logs NAME -f`
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        stack = Stack(StackSettings.from_env())
        return COMMANDS[args.command](stack, args, parser)
    except (StackError, OnboardingError) as err:
        print(f"onboarding-stack: {err}", file=sys.stderr)
        return 1


def _demo(stack: Stack, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Start the stack, publish a sample signup and print its decision."""
    return demo(stack)


def _up(stack: Stack, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Start every service under the supervisor."""
    stack.up()
    return 0


def _down(stack: Stack, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Stop everything, whole process trees."""
    stack.down()
    return 0


def _status(stack: Stack, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print each service's state (a table, or JSON with --json); 0 only when every one is up, else 3."""
    statuses = stack.statuses()
    if args.json:
        print(json.dumps([s.to_dict() for s in statuses], indent=1))
    else:
        for service in statuses:
            print(f"{service.name:26} {service.text}")
    return 0 if all(s.text.startswith("up") for s in statuses) else 3


def _restart(stack: Stack, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Restart the one service NAME; the others run on."""
    if args.name is None:
        parser.error("restart needs the NAME of a service (see `onboarding-stack status`)")
    stack.restart(args.name)
    return 0


def _logs(stack: Stack, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print (or follow, with -f) the last lines of one log or all."""
    return logs(stack, args.name, args.follow, args.lines)


# Each command's handler, in the order `--help` lists them.
COMMANDS: dict[str, Callable[[Stack, argparse.Namespace, argparse.ArgumentParser], int]] = {
    "demo": _demo,
    "up": _up,
    "down": _down,
    "status": _status,
    "restart": _restart,
    "logs": _logs,
}


if __name__ == "__main__":
    raise SystemExit(main())
