"""Command-line entry point.

onboarding-archive run [--instance NAME]... [--no-lock]   archive everything older than the cut-off
onboarding-archive dry-run [--instance NAME]...           print what would move, per table
onboarding-archive audit (--user-id ID | --event-id ID)   a user's archived runs and decision inputs, and
                                                          (--user-id) their review cases' history
onboarding-archive serve-metrics                          /metrics and /healthz from the archive store
onboarding-archive check                                  exit 0 if the last runs succeeded recently, else 1
onboarding-archive worker-check [--liveness]              exit 0 if a maintenance worker and the rq cron scheduler run
                                                          (--liveness: also 0 while Redis is unreachable)
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable

import redis

from archiver.archive import Archiver
from archiver.audit import find_runs
from archiver.errors import ArchiveError
from archiver.jobs import archive_all
from archiver.metrics import health, registry_for
from archiver.review_history import user_history
from archiver.settings import ArchiveSettings
from archiver.store import ArchiveStore
from onboarding.console import add_version, environment_epilog
from onboarding.errors import OnboardingError
from onboarding.logs import configure_logging
from onboarding.redis_clients import Role, connect
from onboarding.settings import redacted_url, stack_defaults_for

logger = logging.getLogger("archiver.cli")


# archiver/settings.py.
ENVIRONMENT = (
    "ARCHIVE_REALTIME_DB_URL", "ARCHIVE_BATCH_DB_URL", "ARCHIVE_DIR", "ARCHIVE_CUTOFF_DAYS", "ARCHIVE_BATCH_SIZE",
    "ARCHIVE_WORKERS", "ARCHIVE_NICE", "ARCHIVE_QUEUE", "ARCHIVE_LOCK_NAME", "ARCHIVE_LOCK_TTL_S",
    "ARCHIVE_METRICS_HOST", "ARCHIVE_METRICS_PORT", "ARCHIVE_MAX_AGE_DAYS", "REDIS_URL", "DECISIONS_STREAM",
    "DECISION_RECORD_RETENTION_MONTHS", "DECISION_RECORD_ERASURE", "DECISION_RECORD_PSEUDONYM_KEY", "LOG_FORMAT",
    "ONBOARDING_HOME",
)  # fmt: skip


def main(argv: list[str] | None = None, *, after_copy: Callable[[], None] | None = None) -> int:
    """`after_copy`: called after each batch is copied, before its rows are deleted; the
    fault tests inject a kill there (testkit), production passes nothing."""
    parser = argparse.ArgumentParser(
        prog="onboarding-archive",
        description="Archive old Airflow metadata to Parquet and query the archive.",
        epilog=environment_epilog(ENVIRONMENT),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="archive everything older than the cut-off, then delete it")
    run.add_argument("--instance", action="append", help="only this instance (realtime, batch); repeatable")
    run.add_argument("--no-lock", action="store_true", help="skip the Redis run lock (only if runs cannot overlap)")
    dry = sub.add_parser("dry-run", help="print what a run would move, per table")
    dry.add_argument("--instance", action="append")
    audit = sub.add_parser("audit", help="find a user's archived onboarding runs and decision inputs")
    who = audit.add_mutually_exclusive_group(required=True)
    who.add_argument("--user-id")
    who.add_argument("--event-id")
    sub.add_parser("serve-metrics", help="serve /metrics and /healthz (Prometheus) from the archive store")
    sub.add_parser("check", help="health probe: exit 0 if every instance's last run succeeded recently")
    check = sub.add_parser("worker-check", help="exit 0 if a worker serves the maintenance queue and rq cron runs")
    check.add_argument(
        "--liveness",
        action="store_true",
        help="as a liveness probe: a Redis outage is not the worker's fault, so answer 0 (restarting it cannot help)",
    )
    args = parser.parse_args(argv)
    stack_defaults_for("onboarding-archive")
    try:
        settings = ArchiveSettings.from_env()
    except OnboardingError as err:
        print(f"onboarding-archive: {err}", file=sys.stderr)
        return 2
    store = ArchiveStore(settings.archive_dir)
    try:
        if args.command == "run":
            return _run(settings, args.instance, args.no_lock, after_copy)
        if args.command == "dry-run":
            return _dry_run(settings, store, args.instance)
        if args.command == "audit":
            runs = find_runs(store, user_id=args.user_id, event_id=args.event_id)
            for found in runs:
                print(json.dumps(found))
            print(f"{len(runs)} archived run(s) in {settings.archive_dir}", file=sys.stderr)
            cases = _review_history(settings, store, args.user_id) if args.user_id else 0
            return 0 if runs or cases else 1
        if args.command == "serve-metrics":
            return _serve(settings, store)
        if args.command == "check":
            ok, why = health(store, settings)
            print(why)
            return 0 if ok else 1
        return _worker_check(settings, args.liveness)
    except (ArchiveError, OnboardingError) as err:
        print(f"onboarding-archive: {err}", file=sys.stderr)
        return 1


def _run(
    settings: ArchiveSettings, instances: list[str] | None, no_lock: bool, after_copy: Callable[[], None] | None
) -> int:
    configure_logging("archiver", settings.log_format)
    client = None if no_lock else connect(settings.redis_url, Role.CLI)
    try:
        reports = archive_all(settings, client, instances, after_copy=after_copy)
    except redis.RedisError as err:
        where = redacted_url(settings.redis_url)
        print(f"onboarding-archive: Redis at {where} (the run lock) failed: {err}", file=sys.stderr)
        return 1
    for report in reports:
        print(
            json.dumps(
                {
                    "instance": report.instance,
                    "rows": report.rows,
                    "tables": report.tables,
                    "duration_s": round(report.duration_s, 2),
                    "cutoff": report.cutoff,
                }
            )
        )
    return 0


def _review_history(settings: ArchiveSettings, store: ArchiveStore, user_id: str) -> int:
    """Print the history of the user's review cases (Redis and the archive, oldest first)
    under its heading, one JSON object per entry; returns the entries printed."""
    try:
        entries = user_history(connect(settings.redis_url, Role.CLI), store, settings.decisions_stream, user_id)
    except redis.RedisError as err:
        where = redacted_url(settings.redis_url)
        print(f"onboarding-archive: Redis at {where} failed ({err}): archived review history only", file=sys.stderr)
        entries = user_history(None, store, settings.decisions_stream, user_id)
    live = sum(1 for e in entries if e["source"] == "redis")
    sys.stdout.flush()
    print(
        f"== review case history of user {user_id}, oldest first: {len(entries)} entries "
        f"({live} from Redis, {len(entries) - live} from the archive) ==",
        file=sys.stderr,
    )
    for entry in entries:
        print(json.dumps({"review_history": entry}))
    return len(entries)


def _dry_run(settings: ArchiveSettings, store: ArchiveStore, instances: list[str] | None) -> int:
    for name in instances or [i.name for i in settings.instances]:
        archiver = Archiver(settings.instance(name), store, settings)
        try:
            report = archiver.run(dry_run=True)
        finally:
            archiver.engine.dispose()
        print(f"{name}: rows older than {report.cutoff} that a run would move:")
        for table, rows in sorted(report.tables.items()):
            print(f"  {table:32} {rows:>12,}")
        print(f"  {'total':32} {report.rows:>12,}")
    return 0


def _serve(settings: ArchiveSettings, store: ArchiveStore) -> int:
    from onboarding.http import serve_http

    configure_logging("archiver", settings.log_format)
    server = serve_http(
        settings.metrics_host, settings.metrics_port, registry_for(store), lambda: health(store, settings)
    )
    logger.info("archive metrics on http://%s:%s/metrics", settings.metrics_host, server.server_address[1])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


def _worker_check(settings: ArchiveSettings, liveness: bool = False) -> int:
    from rq import Queue, Worker
    from rq.cron import CronScheduler

    client = connect(settings.redis_url, Role.CLI)  # timeouts: a partition answers in seconds, not never
    try:
        workers = Worker.all(queue=Queue(settings.queue, connection=client))
        schedulers = CronScheduler.all(client)
    except redis.RedisError as err:
        if liveness:  # rq reconnects by itself; a restart of every worker pod would not help
            print(f"ok: Redis at {redacted_url(settings.redis_url)} is unreachable ({err}); not a reason to restart")
            return 0
        print(f"unhealthy: Redis at {redacted_url(settings.redis_url)}: {err}")
        return 1
    problems = []
    if not workers:
        problems.append(f"no rq worker serves the {settings.queue!r} queue")
    if not schedulers:
        problems.append("no rq cron scheduler is running")
    if problems:
        print("unhealthy: " + "; ".join(problems))
        return 1
    print(f"ok: {len(workers)} worker(s) on {settings.queue!r}, {len(schedulers)} cron scheduler(s)")
    return 0
