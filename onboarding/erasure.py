"""Erase one user's data: `onboarding-erase --user-id U [--dry-run]`.

Where a user's data lives, and what is removed (docs/security.md, "Personal data"):

- the signups stream: their signup events (XDEL);
- the decisions stream: their decisions (XDEL), and the once-only markers of those events;
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from onboarding.decision import marker_key
from onboarding.settings import StreamSettings, redacted_url

FINGERPRINT = "{stream}:fingerprint:{event_id}"


@dataclass
class StreamErasure:
    signups: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _field(fields: dict[Any, Any], name: str) -> str:
    return _text(fields.get(name.encode()) or fields.get(name) or b"")


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
        entries = client.xrange(stream, min=last, count=1000)
        if last != "-" and entries and _text(entries[0][0]) == last:
            entries = entries[1:]
        if not entries:
            return ids, events
        for entry_id, fields in entries:
            mine, event_id = _payload_user(_field(fields, payload_field), user_id)
            if mine:
                ids.append(_text(entry_id))
                if event_id:
                    events.add(event_id)
        last = _text(entries[-1][0])


def erase_from_streams(
    client: redis.Redis, streams: StreamSettings, user_id: str, dry_run: bool = False
) -> StreamErasure:
    report = StreamErasure()
    report.signups, events = _scan(client, streams.signups_stream, "payload", user_id)
    report.decisions, decided = _scan(client, streams.decisions_stream, "payload", user_id)
    report.dead_letters, dead = _scan(client, streams.dead_letter_stream, "original.payload", user_id)
    report.event_ids = sorted(events | decided | dead)
    candidates = [FINGERPRINT.format(stream=streams.signups_stream, event_id=e) for e in report.event_ids]
    candidates += [marker_key(streams.decisions_stream, e) for e in report.event_ids]
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


def erase_airflow_runs(
    url: str, username: str, password: str, run_ids: list[str], dag_id: str = "onboarding", dry_run: bool = False
) -> list[str]:
    """Delete the user's runs from the live Airflow (those not archived yet); returns the run ids found."""
    import httpx

    with httpx.Client(base_url=url.rstrip("/"), timeout=30) as http:
        response = http.post("/auth/token", json={"username": username, "password": password})
        response.raise_for_status()
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        found = []
        for run_id in run_ids:
            path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
            if http.get(path, headers=headers).status_code != 200:
                continue
            found.append(run_id)
            if not dry_run:
                http.delete(path, headers=headers).raise_for_status()
        return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onboarding-erase", description=__doc__.split("\n\n")[0])
    parser.add_argument("--user-id", required=True)
    parser.add_argument("--dry-run", action="store_true", help="report what would be removed, change nothing")
    parser.add_argument("--archive-dir", type=Path, help="the metadata archive (default: ARCHIVE_DIR)")
    parser.add_argument("--airflow-url", help="the realtime Airflow API; admin password from AIRFLOW_ADMIN_PASSWORD")
    args = parser.parse_args(argv)

    from archiver.erase import erase_user
    from archiver.settings import ArchiveSettings
    from archiver.store import ArchiveStore
    from listener.airflow import run_id_for

    streams = StreamSettings.from_env()
    client = redis.Redis.from_url(streams.redis_url)
    try:
        stream_report = erase_from_streams(client, streams, args.user_id, args.dry_run)
        archive_dir = args.archive_dir or ArchiveSettings.from_env().archive_dir
        archive_report = erase_user(ArchiveStore(archive_dir), args.user_id, args.dry_run)
    except redis.RedisError as err:
        print(f"onboarding-erase: Redis at {redacted_url(streams.redis_url)} failed: {err}", file=sys.stderr)
        return 1
    run_ids = sorted(
        {run_id_for(e) for e in stream_report.event_ids} | {r.rsplit("/", 1)[1] for r in archive_report.runs}
    )
    airflow_runs: list[str] | None = None
    if args.airflow_url:
        password = os.environ.get("AIRFLOW_ADMIN_PASSWORD", "")
        if not password and os.environ.get("AIRFLOW_ADMIN_PASSWORD_FILE"):
            password = Path(os.environ["AIRFLOW_ADMIN_PASSWORD_FILE"]).read_text().strip()
        username = os.environ.get("AIRFLOW_ADMIN_USERNAME", "admin")
        airflow_runs = erase_airflow_runs(args.airflow_url, username, password, run_ids, dry_run=args.dry_run)
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
