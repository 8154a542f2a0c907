"""Erase one user's data: `onboarding-erase --user-id U [--dry-run]`.

Where a user's data lives, and what is removed (docs/security.md, "Personal data"):

- the signups stream: their signup events (XDEL);
- the decisions stream: their decisions (XDEL), the once-only markers and per-event decision keys of those events;
- the dead letters: letters whose original payload names them (XDEL);
- the listener's fingerprint keys of their events (DEL);
- the realtime Airflow: their DAG runs, with task instances, XComs and rendered fields
  (the REST API's DELETE, with an admin credential; skipped without --airflow-url);
- the metadata archive: every archived row of their runs (archiver/erase.py).

The report names what was removed (stream entry ids, keys, runs, archived rows); with
--dry-run nothing changes. The user id is looked up as an exact match of the `user_id`
field; a dead letter whose payload is not JSON is matched on the JSON-encoded id.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import redis

from archiver.erase import erase_user
from archiver.settings import ArchiveSettings
from archiver.store import ArchiveStore
from onboarding import keys
from onboarding.airflow import AirflowClient, AirflowSettings
from onboarding.errors import AirflowError, OnboardingError
from onboarding.settings import StreamSettings, redacted_url, stack_defaults_for
from onboarding.streams import live_entries, text


@dataclass
class StreamErasure:
    signups: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)


def _field(fields: dict[Any, Any], name: str) -> str:
    return text(fields.get(name.encode()) or fields.get(name) or b"")


def _payload_user(raw: str, user_id: str) -> tuple[bool, str | None]:
    """(whether this payload is the user's, its event id if readable)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
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


def erase_from_streams(
    client: redis.Redis, streams: StreamSettings, user_id: str, dry_run: bool = False
) -> StreamErasure:
    report = StreamErasure()
    report.signups, events = _scan(client, streams.signups_stream, "payload", user_id)
    report.decisions, decided = _scan(client, streams.decisions_stream, "payload", user_id)
    report.dead_letters, dead = _scan(client, streams.dead_letter_stream, "original.payload", user_id)
    report.event_ids = sorted(events | decided | dead)
    candidates = [keys.fingerprint_key(streams.signups_stream, e) for e in report.event_ids]
    candidates += [keys.marker_key(streams.decisions_stream, e) for e in report.event_ids]
    candidates += [keys.decision_key(streams.decisions_stream, e) for e in report.event_ids]
    report.keys = [key for key in candidates if client.exists(key)]
    if not dry_run:
        for stream, ids in (
            (streams.signups_stream, report.signups),
            (streams.decisions_stream, report.decisions),
            (streams.dead_letter_stream, report.dead_letters),
        ):
            for start in range(0, len(ids), 500):
                client.xdel(stream, *ids[start : start + 500])
        if report.keys:
            client.delete(*report.keys)
    return report


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onboarding-erase", description=__doc__.split("\n\n")[0])
    parser.add_argument("--user-id", required=True)
    parser.add_argument("--dry-run", action="store_true", help="report what would be removed, change nothing")
    parser.add_argument("--archive-dir", type=Path, help="the metadata archive (default: ARCHIVE_DIR)")
    parser.add_argument(
        "--airflow-url",
        help="the realtime Airflow API, to delete the user's live runs too (default: AIRFLOW_API_URL; skipped "
        "without either); credential from AIRFLOW_ADMIN_USERNAME (default admin) and AIRFLOW_ADMIN_PASSWORD "
        "(or _FILE)",
    )
    args = parser.parse_args(argv)
    stack_defaults_for("onboarding-erase")
    args.airflow_url = args.airflow_url or os.environ.get("AIRFLOW_API_URL")

    try:
        streams = StreamSettings.from_env()
        airflow = AirflowSettings.from_env(os.environ, credentials="AIRFLOW_ADMIN", username="admin")
        archive_dir = args.archive_dir or ArchiveSettings.from_env().archive_dir
    except OnboardingError as err:
        print(f"onboarding-erase: {err}", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(streams.redis_url)
    try:
        stream_report = erase_from_streams(client, streams, args.user_id, args.dry_run)
        archive_report = erase_user(ArchiveStore(archive_dir), args.user_id, args.dry_run)
    except redis.RedisError as err:
        print(f"onboarding-erase: Redis at {redacted_url(streams.redis_url)} failed: {err}", file=sys.stderr)
        return 1
    except OnboardingError as err:
        print(f"onboarding-erase: {err}", file=sys.stderr)
        return 1
    run_ids = sorted(
        {keys.run_id_for(e) for e in stream_report.event_ids} | {r.rsplit("/", 1)[1] for r in archive_report.runs}
    )
    airflow_runs: list[str] | None = None
    if args.airflow_url:
        api = AirflowClient(replace(airflow, url=args.airflow_url.rstrip("/")))
        try:
            airflow_runs = erase_airflow_runs(api, run_ids, dry_run=args.dry_run)
        except AirflowError as err:
            print(f"onboarding-erase: Airflow at {args.airflow_url} failed: {err}", file=sys.stderr)
            return 1
        finally:
            api.close()
    report = {
        "dry_run": args.dry_run,
        "streams": asdict(stream_report),
        "airflow_runs": airflow_runs if airflow_runs is not None else "skipped (no --airflow-url)",
        "archive": asdict(archive_report),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
