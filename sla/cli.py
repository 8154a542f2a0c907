"""onboarding-sla: the SLA service and its on-call commands.

onboarding-sla serve                 observe decisions; serve /metrics, /healthz, the SLA page
onboarding-sla check                 health probe of a running `serve`: exit 0 healthy, 1 not
onboarding-sla overdue [--json]      accepted signups without a decision after the SLA, and where stuck
onboarding-sla redrive EVENT_ID...|--all [--dry-run]   push overdue signups forward (idempotent)
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

import redis

from archiver.metrics import StoreCollector
from archiver.store import ArchiveStore
from onboarding.airflow import AirflowClient
from onboarding.console import add_version, environment_epilog
from onboarding.errors import OnboardingError
from onboarding.http import loop_health, loop_liveness, probe
from onboarding.logs import configure_logging
from onboarding.redis_clients import Role, connect
from onboarding.settings import stack_defaults_for
from sla.metrics import SchedulerCollector, SlaMetrics, StreamCollector
from sla.observer import DecisionObserver
from sla.overdue import list_overdue, redrive
from sla.page import snapshot
from sla.review import ReviewQueueCollector
from sla.server import serve
from sla.settings import SlaSettings
from sla.snapshot import Snapshot

logger = logging.getLogger("sla.cli")
PAGE_OVERDUE_LIMIT = 50


# sla/settings.py, with the streams' and the Airflow client's settings (user `sla`).
ENVIRONMENT = (
    "REDIS_URL", "SIGNUPS_STREAM", "DECISIONS_STREAM", "DEAD_LETTER_STREAM", "ONBOARDING_APPS",
    "AIRFLOW_API_URL", "AIRFLOW_USERNAME", "AIRFLOW_PASSWORD[_FILE]", "AIRFLOW_TIMEOUT_S",
    "SLA_AIRFLOW_INSTANCES", "SLO_TARGET", "SLO_THRESHOLD_S", "SLA_GROUP", "SLA_CONSUMER", "LISTENER_GROUP",
    "SLA_OVERDUE_AFTER_S", "SLA_PAGE_WINDOW_S", "SLA_BLOCK_MS", "SLA_HOST", "SLA_PORT", "SLA_PAGE_TOKEN[_FILE]",
    "ARCHIVE_DIR", "DECISIONS_RETENTION_S", "LOG_FORMAT", "ONBOARDING_HOME",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onboarding-sla",
        description="SLA metrics, page and overdue decisions.",
        epilog=environment_epilog(ENVIRONMENT),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("serve", help="observe decisions and serve /metrics, /healthz and the SLA page")
    run.add_argument("--burst", action="store_true", help="observe what is queued, then exit")
    sub.add_parser("check", help="health probe of a running server")
    over = sub.add_parser("overdue", help="list accepted signups without a decision after the SLA")
    over.add_argument("--json", action="store_true", help="one JSON object per line")
    drive = sub.add_parser("redrive", help="re-trigger or clear the runs of overdue signups")
    drive.add_argument("event_ids", nargs="*", metavar="EVENT_ID")
    drive.add_argument("--all", action="store_true", help="every overdue signup")
    drive.add_argument("--dry-run", action="store_true", help="show what would be done")
    args = parser.parse_args(argv)
    if args.command in ("overdue", "redrive"):  # run by hand; `serve` gets its settings from its host
        stack_defaults_for("onboarding-sla")
    try:
        settings = SlaSettings.from_env()
    except OnboardingError as err:
        print(f"onboarding-sla: {err}", file=sys.stderr)
        return 2
    command = args.command or "serve"
    if command == "check":
        return _check(settings)
    if command == "serve":
        try:
            settings.serving_token()
        except OnboardingError as err:
            print(f"onboarding-sla: {err}", file=sys.stderr)
            return 2
        return _serve(settings, burst=getattr(args, "burst", False))
    client = connect(settings.streams.redis_url, Role.CLI)
    airflow = AirflowClient(settings.airflow)
    try:
        if command == "overdue":
            return _overdue(client, settings, airflow, args.json)
        if not args.event_ids and not args.all:
            parser.error("redrive needs event ids or --all")
        return _redrive(client, settings, airflow, args.event_ids, args.all, args.dry_run)
    finally:
        airflow.close()


def _overdue(client: redis.Redis, settings: SlaSettings, airflow: AirflowClient, as_json: bool) -> int:
    items = list_overdue(client, settings, airflow)
    for item in items:
        data = item.to_dict()
        if as_json:
            print(json.dumps(data))
        else:
            print(
                f"{data['event_id']}  accepted {data['accepted_at']}  {data['age_s']:>8.1f} s  "
                f"{data['stuck']:<16} {data['run_state'] or '-'} {data['detail']}".rstrip()
            )
    print(
        f"{len(items)} overdue decision(s) (accepted more than {settings.overdue_after_s:g} s ago)",
        file=sys.stderr,
    )
    return 0


def _redrive(
    client: redis.Redis,
    settings: SlaSettings,
    airflow: AirflowClient,
    event_ids: list[str],
    everything: bool,
    dry_run: bool,
) -> int:
    items = list_overdue(client, settings, airflow)
    if not everything:
        known = {item.event_id: item for item in items}
        missing = [event_id for event_id in event_ids if event_id not in known]
        if missing:
            print(f"not overdue (decided, unknown or too recent): {', '.join(missing)}", file=sys.stderr)
            return 1
        items = [known[event_id] for event_id in event_ids]
    failures = 0
    for item in items:
        if dry_run:
            print(json.dumps({"would_redrive": item.event_id, "stuck": item.stuck.value}))
            continue
        try:
            done = redrive(client, settings, airflow, item)
        except Exception as err:  # report and go on with the others
            failures += 1
            done = f"failed: {type(err).__name__}: {err}"
        print(json.dumps({"event_id": item.event_id, "stuck": item.stuck.value, "action": done}))
    print(f"re-drove {len(items) - failures} of {len(items)} overdue decision(s)", file=sys.stderr)
    return 1 if failures else 0


def _serve(settings: SlaSettings, burst: bool) -> int:
    configure_logging("sla", settings.log_format)
    client = connect(settings.streams.redis_url, Role.LISTENER, block_s=settings.block_ms / 1000)
    metrics = SlaMetrics(settings)
    metrics.registry.register(StreamCollector(client, settings))
    metrics.registry.register(ReviewQueueCollector(client, settings.streams.decisions_stream))
    schedulers = SchedulerCollector(settings.airflow_instances)
    metrics.registry.register(schedulers)
    archive = ArchiveStore(settings.archive_dir) if settings.archive_dir else None
    if archive is not None:
        metrics.registry.register(StoreCollector(archive))
    observer = DecisionObserver(client, settings, metrics)
    airflow = AirflowClient(settings.airflow) if settings.airflow.password else None
    stale_after_s = max(10.0, 3 * settings.block_ms / 1000)

    # Readiness pings Redis with short timeouts: it answers before a prober gives up.
    ready_client = connect(settings.streams.redis_url, Role.PROBE)
    healthy = loop_health("decision observer", observer.seconds_since_loop, stale_after_s, ready_client)
    live = loop_liveness("decision observer", observer.seconds_since_loop, stale_after_s)

    def page() -> Snapshot:
        return snapshot(
            client,
            settings,
            observer,
            lambda: list_overdue(client, settings, airflow, limit=PAGE_OVERDUE_LIMIT),
            archive,
        )

    server = serve(settings.host, settings.port, metrics.registry, healthy, page, live, settings.serving_token())
    stop_polling = threading.Event()
    schedulers.run_polling(stop_polling)

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("sla: received %s; stopping", signal.Signals(signum).name)
        observer.stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info(
        "sla: observing %s as group %s; SLO %.1f%% within %g s; page and metrics on http://%s:%s/",
        settings.streams.decisions_stream,
        settings.group,
        100 * settings.slo_target,
        settings.slo_threshold_s,
        settings.host,
        server.server_address[1],
    )
    try:
        observed = observer.run(burst=burst)
    except redis.RedisError as err:
        logger.error("sla: redis failed: %s", err)
        return 1
    finally:
        stop_polling.set()
        server.shutdown()
        if airflow is not None:
            airflow.close()
    logger.info("sla: stopped after observing %d decisions", observed)
    return 0


def _check(settings: SlaSettings) -> int:
    url = f"http://{settings.host}:{settings.port}/healthz"
    return probe(url)
