"""onboarding-review: the review queue from a terminal, and its page.

onboarding-review list [--json]                   open and claimed cases, earliest deadline first
onboarding-review show CASE [--json]              a case and its history
onboarding-review claim CASE --reviewer ID        take a case (nobody else can decide it)
onboarding-review release CASE --reviewer ID [--force]   give it back (--force: someone else's)
onboarding-review decide CASE --reviewer ID --outcome approve|decline --reason TEXT
                                                  decide; the app receives the final decision once
onboarding-review history [--case CASE]           who did what, when (as far as Redis keeps it)
onboarding-review serve                           the review page, behind a login
onboarding-review check                           health probe of a running `serve`: exit 0 or 1
onboarding-review add-reviewer NAME [--password-file FILE]   a page login (REVIEW_USERS_FILE)

Exit status: 0 done, 1 refused or failed (the message says why), 2 the case is held or
decided by someone else.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import sys
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import redis

from onboarding.errors import ConfigError, OnboardingError
from onboarding.http import probe
from onboarding.logs import configure_logging
from onboarding.redis_clients import Role, connect
from onboarding.settings import redacted_url, stack_defaults_for
from review.auth import Reviewers, Sessions, add_reviewer, check_name
from review.errors import CaseConflict
from review.settings import ENVIRONMENT, ReviewSettings
from review.store import Case, HistoryEntry, ReviewQueue
from review.web import ReviewApp, redis_ready, serve_review

logger = logging.getLogger("review.cli")
PROG = "onboarding-review"


def _version() -> str:
    try:
        return version("onboarding-decisions")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    epilog = "environment variables:\n" + "\n".join(f"  {name:<27} {what}" for name, what in ENVIRONMENT)
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="open and claimed cases, earliest deadline first")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = sub.add_parser("show", help="a case's details and history")
    show.add_argument("case")
    show.add_argument("--json", action="store_true", help="one JSON object")
    for name, what in (("claim", "take a case"), ("release", "give a claimed case back")):
        cmd = sub.add_parser(name, help=what)
        cmd.add_argument("case")
        cmd.add_argument("--reviewer", required=True, help="your reviewer id")
        if name == "release":
            cmd.add_argument("--force", action="store_true", help="release someone else's claim (a lead)")
    decide = sub.add_parser("decide", help="decide a case; publishes the final decision")
    decide.add_argument("case")
    decide.add_argument("--reviewer", required=True, help="your reviewer id")
    decide.add_argument("--outcome", required=True, choices=("approve", "decline"))
    decide.add_argument("--reason", required=True, help="why (the applicant's file and the audit keep it)")
    history = sub.add_parser("history", help="the cases' history, oldest first")
    history.add_argument("--case", help="only this case")
    sub.add_parser("serve", help="serve the review page, /metrics, /livez and /readyz")
    sub.add_parser("check", help="health probe of a running `serve`")
    add = sub.add_parser("add-reviewer", help="add or replace a page login in REVIEW_USERS_FILE")
    add.add_argument("name")
    add.add_argument("--password-file", type=Path, help="read the password from this file (else: prompted)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command not in ("serve", "check"):  # run by hand; `serve` gets its settings from its host
        stack_defaults_for(PROG)
    try:
        settings = ReviewSettings.from_env()
        if args.command == "serve":
            return _serve(settings)
        if args.command == "check":
            return probe(f"http://{settings.host}:{settings.port}/readyz")
        if args.command == "add-reviewer":
            return _add_reviewer(settings, args.name, args.password_file)
        client = connect(settings.streams.redis_url, Role.CLI)
        try:
            return _queue_command(_queue(client, settings), args)
        finally:
            client.close()
    except CaseConflict as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except OnboardingError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    except redis.RedisError as err:
        print(f"{PROG}: Redis at {redacted_url(settings.streams.redis_url)} failed: {err}", file=sys.stderr)
        return 1


def _queue(client: redis.Redis, settings: ReviewSettings) -> ReviewQueue:
    """The queue of the settings' decisions stream; a final decision of an app's case also goes
    to the app's feed, capped at APP_FEED_MAXLEN as the publish step caps it."""
    return ReviewQueue(client, settings.streams.decisions_stream, app_feed_maxlen=settings.streams.app_feed_maxlen)


def _queue_command(queue: ReviewQueue, args: argparse.Namespace) -> int:
    if args.command == "list":
        _list(queue.pending(limit=10_000), args.json)
    elif args.command == "show":
        case = queue.get(args.case)
        history = queue.history(args.case)
        if args.json:
            print(json.dumps({**case.to_dict(), "history": [h.to_dict() for h in history]}))
        else:
            _show(case, history)
    elif args.command == "claim":
        case = queue.claim(args.case, args.reviewer)
        print(f"{case.case_id}: claimed by {case.assignee}; due {case.deadline_at}")
    elif args.command == "release":
        case = queue.release(args.case, args.reviewer, force=args.force)
        print(f"{case.case_id}: open again")
    elif args.command == "decide":
        decided = queue.decide(args.case, args.reviewer, args.outcome, args.reason)
        done = "decided" if decided.now else "was already decided so (nothing changed)"
        print(f"{decided.case}: {done}: {decided.outcome} by {args.reviewer}; final decision {decided.entry_id}")
    elif args.command == "history":
        for entry in queue.history(args.case):
            print(_history_line(entry))
    return 0


def _list(cases: list[Case], as_json: bool) -> None:
    for case in cases:
        data = case.to_dict()
        if as_json:
            print(json.dumps(data))
            continue
        score = "n/a" if case.score is None else f"{case.score:.3f}"
        print(
            f"{case.case_id:<28} {case.user_id:<20} {case.state.value:<8} {case.assignee or '-':<12} "
            f"{score:>6}  due {case.deadline_at}{'  OVERDUE' if data['overdue'] else ''}  {case.why()}"
        )
    overdue = sum(1 for c in cases if c.overdue())
    print(f"{len(cases)} case(s) waiting, {overdue} overdue", file=sys.stderr)


def _show(case: Case, history: list[HistoryEntry]) -> None:
    data = case.to_dict()
    for key in ("case_id", "user_id", "state", "why", "score", "model_version", "opened_at", "deadline_at",
                "overdue", "assignee", "claimed_at", "decided_by", "outcome", "reason", "decided_at"):  # fmt: skip
        if data[key] not in (None, ""):
            print(f"{key:<14} {data[key]}")
    for code in case.reason_codes:
        print(f"{'reason code':<14} {code.get('code')}: {code.get('text')} ({code.get('contribution')})")
    print("history:")
    for entry in history:
        print(f"  {_history_line(entry)}")


def _history_line(entry: HistoryEntry) -> str:
    return f"{entry.at}  {entry.case_id}  {entry.action:<8} {entry.actor}  {entry.detail}".rstrip()


def _read_password(path: Path | None) -> str:
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ConfigError(f"--password-file {str(path)!r} cannot be read: {err}") from None
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the two passwords differ")
    return first


def _add_reviewer(settings: ReviewSettings, name: str, password_file: Path | None) -> int:
    users = settings.require_users_file()
    check_name(name)
    new = add_reviewer(users, name, _read_password(password_file))
    print(f"{'added' if new else 'replaced the password of'} reviewer {name} in {users}")
    return 0


def _serve(settings: ReviewSettings) -> int:
    configure_logging("review", settings.log_format)
    reviewers = Reviewers(settings.require_users_file())
    reviewers.entries()  # a broken file is an error now, not at the first login
    sessions = Sessions(settings.require_session_secret(), settings.session_ttl_s)
    client = connect(settings.streams.redis_url, Role.CLI)
    ready = redis_ready(connect(settings.streams.redis_url, Role.PROBE))
    app = ReviewApp(_queue(client, settings), reviewers, sessions, ready, settings.deadline_s)
    server = serve_review(app, settings.host, settings.port)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("review: received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info(
        "review: the page of %s's review queue on http://%s:%s/ (%d reviewer(s))",
        settings.streams.decisions_stream,
        settings.host,
        server.server_address[1],
        len(reviewers.entries()),
    )
    stop.wait()
    server.shutdown()
    server.server_close()
    client.close()
    logger.info("review: stopped")
    return 0
