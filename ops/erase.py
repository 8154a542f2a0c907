"""Erase one user's data: `onboarding-erase --user-id U [--dry-run]`.

Where a user's data lives, and what is removed (docs/security.md, "Personal data"):

- the signups stream: their signup events (XDEL);
- the decisions stream: their decisions (XDEL), the once-only markers and per-event decision keys of those events;
- the dead letters: letters whose original payload names them (XDEL);
- each app's intake stream `<signups>:app:<name>` (ONBOARDING_APPS, as the listener reads it):
  their signups not forwarded yet (XDEL);
- each app's decision feed `<decisions>:app:<name>` and refusals feed
  `<decisions>:app:<name>:refusals` (ONBOARDING_APPS): the copies of their decisions and
  refusals (XDEL), whose event ids' keys and markers go as the decisions stream's;
- the listener's fingerprint keys of their events (DEL);
- the SLA service's awaiting signups (`<signups>:awaiting` ZREM) and their run conf
  (`<signups>:awaiting:conf` HDEL): their event ids, and every conf there that names them;
- their review cases: the case hashes, queue members and final-decision markers, and every
  history entry of those cases (XDEL), in Redis and in the archive (archiver/review_history.py);
- the realtime Airflow: their DAG runs, with task instances, XComs and rendered fields
  (the REST API's DELETE, with an admin credential; skipped without --airflow-url);
- the realtime Airflow's audit `log` rows of those runs and every row whose `extra` names
  them (the trigger's row holds the whole conf): deleted in its metadata database
  (`--airflow-db-url`, default ARCHIVE_REALTIME_DB_URL; archiver/live_erase.py), after the
  REST deletes, so the erasure's own `delete_dag_run` rows go too;
- the runs' task log files (`--airflow-logs-dir`: `<dir>/dag_id=onboarding/run_id=<run>/`);
- the metadata archive: every archived row of their runs (archiver/erase.py);
- their decision records (`<decisions>:records` and the archive's `_records`): kept for
  DECISION_RECORD_RETENTION_MONTHS (25) as the legal-basis switch DECISION_RECORD_ERASURE says:
  `refuse` (default) keeps them unchanged and reports until when, `pseudonymise` replaces
  their user id, event id and run id with keyed pseudonyms (DECISION_RECORD_PSEUDONYM_KEY)
  (archiver/decision_records.py, docs/security.md).

The report names what was removed (stream entry ids, keys, runs, archived rows); with
--dry-run nothing changes. The user id is looked up as an exact match of the `user_id`
field; a dead letter whose payload is not JSON is matched on the JSON-encoded id.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa

from archiver.decision_records import erase_user_records
from archiver.erase import erase_user
from archiver.live_erase import LogErasure, delete_log_rows, open_engine, user_log_rows
from archiver.review_history import erase_archived_history, live_entry_ids, user_cases_in_redis
from archiver.settings import ArchiveSettings
from archiver.store import ArchiveStore
from onboarding import keys
from onboarding.airflow import AirflowClient, AirflowSettings
from onboarding.console import add_version, environment_epilog
from onboarding.errors import AirflowError, InvalidEvent, OnboardingError
from onboarding.redis_clients import Role, connect
from onboarding.settings import StreamSettings, default_home, redacted_url, stack_defaults_for
from onboarding.streams import live_entries, text
from onboarding.untrusted import loads_untrusted


@dataclass
class StreamErasure:
    signups: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    review_cases: list[str] = field(default_factory=list)  # their review cases (case hash, queue, final marker)
    review_history: list[str] = field(default_factory=list)  # history stream entries of those cases
    awaiting: list[str] = field(default_factory=list)  # event ids in the awaiting set / conf hash
    intakes: dict[str, list[str]] = field(default_factory=dict)  # per-app intake stream: entry ids (XDEL)
    app_feeds: dict[str, list[str]] = field(default_factory=dict)  # per-app decision feed: entry ids (XDEL)


def _field(fields: dict[Any, Any], name: str) -> str:
    return text(fields.get(name.encode()) or fields.get(name) or b"")


def _payload_user(raw: str, user_id: str) -> tuple[bool, str | None]:
    """(whether this payload is the user's, its event id if readable)."""
    try:
        data = loads_untrusted(raw, max_bytes=len(raw.encode("utf-8", errors="surrogatepass")) + 1)
    except InvalidEvent:
        return json.dumps({"user_id": user_id})[1:-1] in raw, None
    if not isinstance(data, dict):
        return False, None
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    return data.get("user_id") == user_id, event_id


def _scan(client: redis.Redis, stream: str, payload_field: str, user_id: str) -> tuple[list[str], set[str]]:
    ids: list[str] = []
    events: set[str] = set()
    last = "-"
    while True:
        entries = live_entries(client.xrange(stream, min=last, count=1000))
        if last != "-" and entries and entries[0][0] == last:
            entries = entries[1:]
        if not entries:
            return ids, events
        for entry_id, fields in entries:
            mine, event_id = _payload_user(_field(fields, payload_field), user_id)
            if mine:
                ids.append(entry_id)
                if event_id:
                    events.add(event_id)
        last = entries[-1][0]


def _awaiting(client: redis.Redis, streams: StreamSettings, user_id: str, event_ids: set[str]) -> list[str]:
    """Event ids in the awaiting set or its conf hash that are the user's (known, or named by the conf)."""
    found = set()
    conf_key = keys.awaiting_conf_key(streams.signups_stream)
    for event_id, raw in client.hscan_iter(conf_key, count=1000):
        if _payload_user(text(raw), user_id)[0]:
            found.add(text(event_id))
    awaiting_key = keys.awaiting_key(streams.signups_stream)
    for event_id in sorted(event_ids - found):
        if client.hexists(conf_key, event_id) or client.zscore(awaiting_key, event_id) is not None:
            found.add(event_id)
    return sorted(found)


def erase_from_streams(
    client: redis.Redis, streams: StreamSettings, user_id: str, dry_run: bool = False
) -> StreamErasure:
    report = StreamErasure()
    report.signups, events = _scan(client, streams.signups_stream, "payload", user_id)
    report.decisions, decided = _scan(client, streams.decisions_stream, "payload", user_id)
    report.dead_letters, dead = _scan(client, streams.dead_letter_stream, "original.payload", user_id)
    # Each app's intake (ONBOARDING_APPS): signups not forwarded yet; their service event ids
    # carry the app's prefix (keys.app_event_id), as the listener gives them.
    for app in streams.apps:
        intake = keys.intake_stream(streams.signups_stream, app)
        ids, app_events = _scan(client, intake, "payload", user_id)
        if ids:
            report.intakes[intake] = ids
            events |= {keys.app_event_id(app, e) for e in app_events}
        # ... and its decision and refusals feeds: copies of answers (their event ids are the
        # service's already).
        for feed in (
            keys.app_feed_stream(streams.decisions_stream, app),
            keys.app_refusals_stream(streams.decisions_stream, app),
        ):
            ids, fed = _scan(client, feed, "payload", user_id)
            if ids:
                report.app_feeds[feed] = ids
                decided |= fed
    report.awaiting = _awaiting(client, streams, user_id, events | decided | dead)
    report.event_ids = sorted(events | decided | dead | set(report.awaiting))
    candidates = [keys.fingerprint_key(streams.signups_stream, e) for e in report.event_ids]
    candidates += [keys.marker_key(streams.decisions_stream, e) for e in report.event_ids]
    candidates += [keys.decision_key(streams.decisions_stream, e) for e in report.event_ids]
    cases = user_cases_in_redis(client, streams.decisions_stream, user_id)
    report.review_cases = sorted(cases)
    report.review_history = live_entry_ids(client, streams.decisions_stream, cases)
    candidates += [keys.review_case_key(streams.decisions_stream, c) for c in report.review_cases]
    candidates += [keys.final_marker_key(streams.decisions_stream, c) for c in report.review_cases]
    report.keys = [key for key in candidates if client.exists(key)]
    if not dry_run:
        _erase(client, streams, report)
    return report


def _erase(client: redis.Redis, streams: StreamSettings, report: StreamErasure) -> None:
    """Remove what `report` found: the stream entries (500 per XDEL), the keys, the review
    cases from the queue and the awaiting signups with their run conf."""
    for stream, ids in (
        (streams.signups_stream, report.signups),
        (streams.decisions_stream, report.decisions),
        (streams.dead_letter_stream, report.dead_letters),
        (keys.review_history_key(streams.decisions_stream), report.review_history),
        *report.intakes.items(),
        *report.app_feeds.items(),
    ):
        for start in range(0, len(ids), 500):
            client.xdel(stream, *ids[start : start + 500])
    if report.keys:
        client.delete(*report.keys)
    if report.review_cases:
        client.zrem(keys.review_queue_key(streams.decisions_stream), *report.review_cases)
    for start in range(0, len(report.awaiting), 500):
        chunk = report.awaiting[start : start + 500]
        client.zrem(keys.awaiting_key(streams.signups_stream), *chunk)
        client.hdel(keys.awaiting_conf_key(streams.signups_stream), *chunk)


def erase_airflow_runs(client: AirflowClient, run_ids: list[str], dry_run: bool = False) -> list[str]:
    """Delete the user's runs from the live Airflow (those not archived yet); returns the run ids found."""
    found = []
    for run_id in run_ids:
        if client.get_run(run_id) is None:
            continue
        found.append(run_id)
        if not dry_run:
            client.delete_run(run_id)
    return found


def erase_task_logs(logs_dir: Path, run_ids: list[str], dry_run: bool = False) -> list[str]:
    """Remove the runs' task log folders (Airflow's default `log_filename_template`:
    `dag_id=<dag>/run_id=<run>/...`); returns the folders found, relative to `logs_dir`."""
    dag_dir = logs_dir / f"dag_id={keys.ONBOARDING_DAG_ID}"
    found = []
    for run_id in run_ids:
        folder = dag_dir / f"run_id={run_id}"
        if folder.parent != dag_dir or not folder.is_dir():  # a run id is one path segment
            continue
        found.append(str(folder.relative_to(logs_dir)))
        if not dry_run:
            shutil.rmtree(folder)
    return found


def erase_log_rows(url: str, user_id: str, run_ids: list[str], dry_run: bool = False) -> LogErasure | None:
    """The audit-log rows (None: a SQLite database that does not exist, nothing to erase)."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    engine = open_engine(url)
    try:
        found = user_log_rows(engine, user_id, run_ids)
        if not dry_run and found.rows:
            delete_log_rows(engine, found.rows)
        return found
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onboarding-erase",
        description=__doc__.split("\n\n")[0],
        epilog=environment_epilog(
            (
                "REDIS_URL",
                "SIGNUPS_STREAM",
                "DECISIONS_STREAM",
                "DEAD_LETTER_STREAM",
                "AIRFLOW_API_URL",
                "AIRFLOW_ADMIN_USERNAME",
                "AIRFLOW_ADMIN_PASSWORD[_FILE]",
                "AIRFLOW_LOGS_DIR",
                "ARCHIVE_DIR",
                "ARCHIVE_REALTIME_DB_URL",
                "ARCHIVE_BATCH_DB_URL",
                "ONBOARDING_HOME",
            )
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    parser.add_argument("--user-id", required=True)
    parser.add_argument("--dry-run", action="store_true", help="report what would be removed, change nothing")
    parser.add_argument("--archive-dir", type=Path, help="the metadata archive (default: ARCHIVE_DIR)")
    parser.add_argument(
        "--airflow-url",
        help="the realtime Airflow API, to delete the user's live runs too (default: AIRFLOW_API_URL; skipped "
        "without either); credential from AIRFLOW_ADMIN_USERNAME (default admin) and AIRFLOW_ADMIN_PASSWORD "
        "(or _FILE)",
    )
    parser.add_argument(
        "--airflow-db-url",
        help="the realtime Airflow's metadata database, for its audit `log` rows (default: "
        "ARCHIVE_REALTIME_DB_URL, as the archiver; the local stack's when run by hand)",
    )
    parser.add_argument(
        "--airflow-logs-dir",
        type=Path,
        help="the realtime Airflow's task log folder (default: AIRFLOW_LOGS_DIR, else the local stack's "
        "<ONBOARDING_HOME>/realtime/logs; skipped where it does not exist)",
    )
    args = parser.parse_args(argv)
    stack_defaults_for("onboarding-erase")
    args.airflow_url = args.airflow_url or os.environ.get("AIRFLOW_API_URL")
    logs_dir = args.airflow_logs_dir or Path(
        os.environ.get("AIRFLOW_LOGS_DIR") or default_home(os.environ) / "realtime" / "logs"
    )

    try:
        streams = StreamSettings.from_env()
        airflow = AirflowSettings.from_env(os.environ, credentials="AIRFLOW_ADMIN", username="admin")
        archive_settings = ArchiveSettings.from_env()
        archive_dir = args.archive_dir or archive_settings.archive_dir
        db_url = args.airflow_db_url or archive_settings.instance("realtime").url
    except OnboardingError as err:
        print(f"onboarding-erase: {err}", file=sys.stderr)
        return 2
    client = connect(streams.redis_url, Role.CLI)
    try:
        stream_report = erase_from_streams(client, streams, args.user_id, args.dry_run)
        # Runs named only by the audit log (their signup trimmed from the stream) are the user's too.
        known = erase_log_rows(db_url, args.user_id, [], dry_run=True)
        run_ids = {keys.run_id_for(e) for e in stream_report.event_ids} | set(known.runs if known else [])
        archive_report = erase_user(ArchiveStore(archive_dir), args.user_id, args.dry_run, run_ids=sorted(run_ids))
        archived_history = erase_archived_history(
            ArchiveStore(archive_dir), args.user_id, stream_report.review_cases, args.dry_run
        )
        records = erase_user_records(
            client,
            ArchiveStore(archive_dir),
            streams.decisions_stream,
            args.user_id,
            archive_settings.record_erasure,
            archive_settings.record_retention_months,
            archive_settings.record_pseudonym_key,
            args.dry_run,
        )
    except redis.RedisError as err:
        print(f"onboarding-erase: Redis at {redacted_url(streams.redis_url)} failed: {err}", file=sys.stderr)
        return 1
    except sa.exc.SQLAlchemyError as err:
        print(f"onboarding-erase: the metadata database {redacted_url(db_url)} failed: {err}", file=sys.stderr)
        return 1
    except OnboardingError as err:
        print(f"onboarding-erase: {err}", file=sys.stderr)
        return 1
    runs = sorted(run_ids | {r.rsplit("/", 1)[1] for r in archive_report.runs})
    airflow_runs: list[str] | None = None
    if args.airflow_url:
        api = AirflowClient(replace(airflow, url=args.airflow_url.rstrip("/")))
        try:
            airflow_runs = erase_airflow_runs(api, runs, dry_run=args.dry_run)
        except AirflowError as err:
            print(f"onboarding-erase: Airflow at {args.airflow_url} failed: {err}", file=sys.stderr)
            return 1
        finally:
            api.close()
    try:  # after the REST deletes: their own audit rows name the runs too
        log_rows = erase_log_rows(db_url, args.user_id, runs, args.dry_run)
    except sa.exc.SQLAlchemyError as err:
        print(f"onboarding-erase: the metadata database {redacted_url(db_url)} failed: {err}", file=sys.stderr)
        return 1
    task_logs = erase_task_logs(logs_dir, runs, args.dry_run) if logs_dir.is_dir() else None
    report = {
        "dry_run": args.dry_run,
        "streams": asdict(stream_report),
        "airflow_runs": airflow_runs if airflow_runs is not None else "skipped (no --airflow-url)",
        "airflow_log_rows": len(log_rows.rows) if log_rows else f"skipped (no database at {redacted_url(db_url)})",
        "airflow_task_logs": task_logs if task_logs is not None else f"skipped (no folder {logs_dir})",
        "archive": asdict(archive_report),
        "archive_review_history_entries": archived_history,
        "decision_records": {
            **records.to_dict(),
            "action": (
                "kept unchanged: a legal obligation to keep them (DECISION_RECORD_ERASURE=refuse)"
                if records.mode == "refuse"
                else "identifiers replaced by pseudonyms (DECISION_RECORD_ERASURE=pseudonymise)"
            )
            if records.redis or records.archived
            else "none found",
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
