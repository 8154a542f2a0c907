"""Erasure reaches every copy (issue 28, item 5): a real realtime Airflow on PostgreSQL and a
real listener decide signups of two users, A and B (for each an ordinary one and a review one,
and for A a refused one); the weekly archive (cut-off 0) moves those runs to the archive
store; then each user signs up once more, so their latest runs are live, and once through
app `web`'s intake (the intake process and the listener with ONBOARDING_APPS=web), so a copy
of their decision is in web's feed `<decisions>:app:web` too (and, for A, a refusal in web's
refusals feed `<decisions>:app:web:refusals`). `places_of(user)`
looks in every place a user's data can be, each found non-empty for A; `onboarding-erase
--user-id A` runs as the operator's command with the stack's admin credential, metadata
database URL and folders; afterwards every place is empty for A and B's are as they were,
except A's decision records (issue 29, item 1): inside their 25-month retention erasure
refuses to change them (DECISION_RECORD_ERASURE=refuse, the default legal basis), so they
are looked at apart (`Places.records_of`) and must be there, unchanged.

Not looked in (docs/security.md, "Personal data"): the processes' own logs (listener,
scheduler, api-server), which carry ids only and live on the log platform's retention.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from archiver.jobs import archive_all
from archiver.settings import ArchiveSettings, InstanceDatabase
from onboarding import keys
from onboarding.decision import wait_for_decision
from onboarding.publisher import publish_raw, publish_signup
from onboarding.streams import text
from risk.samples import new_signup
from testkit.realtime import RealtimeStack, running_realtime
from tests.e2e.test_answers import refused_application, review_band

pytestmark = pytest.mark.e2e

WAIT_S = 120.0


def eventually(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Places:
    """Where a user's data can be, on this stack: each place's view of one user's data."""

    def __init__(self, stack: RealtimeStack, archive_dir: Path) -> None:
        self.stack = stack
        self.archive_dir = archive_dir
        self.engine = sa.create_engine(stack.instance.database_url)
        self.logs_dir = stack.instance.home / "logs"

    # -- helpers -----------------------------------------------------------------------------

    def _stream(self, stream: str, needles: list[str]) -> list[str]:
        return [
            text(entry_id)
            for entry_id, fields in self.stack.redis.xrange(stream)
            if any(n in json.dumps({text(k): text(v) for k, v in fields.items()}) for n in needles)
        ]

    def _keys(self, make: Callable[[str, str], str], stream: str, events: list[str]) -> list[str]:
        return [k for k in (make(stream, e) for e in events) if self.stack.redis.exists(k)]

    def _redis_anywhere(self, needles: list[str]) -> list[str]:
        """Every key of this stack's streams whose name or value mentions the user (catch-all)."""
        r, hits = self.stack.redis, []
        prefix = self.stack.streams.signups_stream.split(":")[0]
        records = keys.decision_records_stream(self.stack.streams.decisions_stream)
        for raw in r.scan_iter(f"{prefix}:*", count=1000):
            key = text(raw)
            if key == records:  # kept by rule: `records_of`
                continue
            kind = text(r.type(key))
            value: Any = {
                "string": lambda: r.get(key),
                "hash": lambda: r.hgetall(key),
                "zset": lambda: r.zrange(key, 0, -1),
                "set": lambda: r.smembers(key),
                "list": lambda: r.lrange(key, 0, -1),
                "stream": lambda: r.xrange(key),
            }.get(kind, lambda: b"")()
            blob = key + repr(value)
            if any(n in blob or json.dumps(n)[1:-1] in blob for n in needles):
                hits.append(key)
        return sorted(hits)

    def _sql(self, query: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(query), params))

    def _tables_mentioning(self, needles: list[str]) -> dict[str, int]:
        """Every table of the metadata database, rows whose text mentions the user (catch-all)."""
        found = {}
        tables = [r[0] for r in self._sql("select tablename from pg_tables where schemaname = 'public'")]
        for table in tables:
            condition = " or ".join(f"strpos(x::text, :n{i}) > 0" for i in range(len(needles)))
            params = {f"n{i}": n for i, n in enumerate(needles)}
            count = self._sql(f'select count(*) from "{table}" as x where {condition}', **params)[0][0]
            if count:
                found[table] = count
        return found

    def _task_logs(self, runs: list[str], needles: list[str]) -> list[str]:
        folder = self.logs_dir / f"dag_id={keys.ONBOARDING_DAG_ID}"
        files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        return [
            str(p.relative_to(self.logs_dir))
            for p in files
            if any(f"run_id={r}" in str(p) for r in runs) or any(n in p.read_text(errors="replace") for n in needles)
        ]

    def _archive(self, needles: list[str]) -> dict[str, int]:
        """Archived rows (any table, any instance) and any other archive file mentioning the user."""
        found: dict[str, int] = {}
        if not self.archive_dir.is_dir():
            return found
        for path in sorted(self.archive_dir.rglob("*")):
            if not path.is_file():
                continue
            relative = str(path.relative_to(self.archive_dir))
            if relative.startswith("_records/"):  # the decision records, kept by rule: `records_of`
                continue
            if path.suffix == ".parquet":
                rows = pq.read_table(path).to_pylist()
                count = sum(1 for row in rows if any(n in json.dumps(row, default=str) for n in needles))
            else:
                count = int(any(n in path.read_text(errors="replace") for n in needles))
            if count:
                found[relative] = count
        return found

    def records_of(self, user: str) -> list[dict[str, Any]]:
        """The user's decision records, in Redis and the archive (archiver/decision_records.py)."""
        from archiver.decision_records import all_records
        from archiver.store import ArchiveStore

        every = all_records(self.stack.redis, ArchiveStore(self.archive_dir), self.stack.streams.decisions_stream)
        return [r for r in every if r["user_id"] == user]

    # -- the places --------------------------------------------------------------------------

    def of(self, user: str, events: list[str]) -> dict[str, Any]:
        """Each place's findings for `user`, whose signups had `events` (event ids)."""
        s = self.stack.streams
        needles = [user, *events]
        runs = [keys.run_id_for(e) for e in events]
        api = f"{self.stack.instance.spec.api_url}/api/v2/dags/{keys.ONBOARDING_DAG_ID}/dagRuns"
        conf_runs = [
            r["dag_run_id"]
            for r in self.stack.dag_runs()
            if (r.get("conf") or {}).get("user_id") == user or r["dag_run_id"] in runs
        ]
        reachable = [
            run
            for run in runs
            if httpx.get(f"{api}/{run}", headers=self.stack.admin_headers(), timeout=30).status_code == 200
        ]
        awaiting = [e for e in events if self.stack.redis.zscore(keys.awaiting_key(s.signups_stream), e) is not None]
        conf_hash = self.stack.redis.hgetall(keys.awaiting_conf_key(s.signups_stream))
        in_runs = "run_id = any(:runs)"
        return {
            "signups stream": self._stream(s.signups_stream, needles),
            "decisions stream": self._stream(s.decisions_stream, needles),
            "dead letters": self._stream(s.dead_letter_stream, needles),
            "decision keys (decisions and refusals)": self._keys(keys.decision_key, s.decisions_stream, events),
            "fingerprint keys": self._keys(keys.fingerprint_key, s.signups_stream, events),
            "publish markers": self._keys(keys.marker_key, s.decisions_stream, events),
            "awaiting set": awaiting,
            "awaiting conf hash": sorted(text(k) for k, v in conf_hash.items() if text(k) in events or user in text(v)),
            "review cases": self._keys(keys.review_case_key, s.decisions_stream, events),
            "review queue": [
                e for e in events if self.stack.redis.zscore(keys.review_queue_key(s.decisions_stream), e) is not None
            ],
            "review history": self._stream(keys.review_history_key(s.decisions_stream), needles),
            "app web's decision feed": self._stream(keys.app_feed_stream(s.decisions_stream, "web"), needles),
            "app web's refusals feed": self._stream(keys.app_refusals_stream(s.decisions_stream, "web"), needles),
            "redis, any key (catch-all)": self._redis_anywhere(needles),
            "airflow dag runs (REST)": sorted(set(conf_runs) | set(reachable)),
            "airflow task instances": self._sql(
                f"select run_id, task_id from task_instance where {in_runs}", runs=runs
            ),
            "airflow xcoms": self._sql(f"select run_id, key from xcom where {in_runs}", runs=runs),
            "airflow audit log rows": self._sql(
                f"select id, event from log where {in_runs} or strpos(extra, :u) > 0", runs=runs, u=user
            ),
            "airflow metadata, any table (catch-all)": self._tables_mentioning(needles),
            "task log files": self._task_logs(runs, needles),
            "archive store": self._archive(needles),
        }


def _decide(stack: RealtimeStack, events: list[dict[str, Any]]) -> None:
    for event in events:
        publish_signup(stack.redis, stack.streams.signups_stream, event)
    for event in events:
        found = wait_for_decision(stack.redis, stack.streams.decisions_stream, event["event_id"], WAIT_S)
        assert found is not None, f"no decision for {event['event_id']}"
    eventually(lambda: {r["state"] for r in stack.dag_runs()} == {"success"}, "every run to end")


def _decide_through_web(stack: RealtimeStack, events: list[dict[str, Any]]) -> list[str]:
    """As app `web` submits (its intake); the service ids `web:<event id>`, once decided."""
    intake = keys.intake_stream(stack.streams.signups_stream, "web")
    for event in events:
        publish_signup(stack.redis, intake, event)
    ids = [keys.app_event_id("web", e["event_id"]) for e in events]
    for event_id in ids:
        found = wait_for_decision(stack.redis, stack.streams.decisions_stream, event_id, WAIT_S)
        assert found is not None, f"no decision for {event_id}"
    eventually(lambda: {r["state"] for r in stack.dag_runs()} == {"success"}, "every run to end")
    return ids


def _refuse(stack: RealtimeStack, user: str) -> str:
    event = new_signup(user_id=user, application=refused_application())
    publish_raw(stack.redis, stack.streams.signups_stream, json.dumps(event))
    key = keys.decision_key(stack.streams.decisions_stream, event["event_id"])
    eventually(lambda: stack.redis.exists(key), f"the refusal of {event['event_id']}")
    return str(event["event_id"])


def _refuse_through_web(stack: RealtimeStack, user: str) -> str:
    """As app `web` submits a signup the listener refuses: its refusal, under `web:<event id>`,
    is on the key and on web's refusals feed."""
    event = new_signup(user_id=user, application=refused_application())
    publish_raw(stack.redis, keys.intake_stream(stack.streams.signups_stream, "web"), json.dumps(event))
    service_id = keys.app_event_id("web", str(event["event_id"]))
    key = keys.decision_key(stack.streams.decisions_stream, service_id)
    eventually(lambda: stack.redis.exists(key), f"the refusal of {service_id}")
    return service_id


def test_erasure_empties_every_place_of_one_user_and_leaves_the_others(
    request: pytest.FixtureRequest, tmp_path: Path, trained_model_dir: Path
) -> None:
    archive_dir = tmp_path / "archive"
    with running_realtime("postgres", tmp_path / "realtime", trained_model_dir, request.session, "erasure") as stack:
        stack.start_listener()
        places = Places(stack, archive_dir)
        review_a, review_b, review_later = review_band(trained_model_dir, 3)
        first = {
            "A": [new_signup(user_id="user-A"), new_signup(user_id="user-A", application=review_a)],
            "B": [new_signup(user_id="user-B"), new_signup(user_id="user-B", application=review_b)],
        }
        _decide(stack, [*first["A"], *first["B"]])
        refused = _refuse(stack, "user-A")
        # The weekly archive, with a cut-off that takes every finished run (and the review history).
        settings = ArchiveSettings(
            archive_dir=archive_dir,
            cutoff_days=0,
            nice=0,
            instances=(InstanceDatabase("realtime", stack.instance.database_url),),
            decisions_stream=stack.streams.decisions_stream,
        )
        reports = archive_all(settings, stack.redis)
        assert reports[0].tables["dag_run"] == 4 and reports[0].tables["log"] > 0
        assert stack.dag_runs() == []
        # Live again: A's review case is opened after the archive, so its history is in Redis.
        later = {
            "A": [new_signup(user_id="user-A"), new_signup(user_id="user-A", application=review_later)],
            "B": [new_signup(user_id="user-B")],
        }
        _decide(stack, [*later["A"], *later["B"]])
        # Through app web's intake: the run carries the app, its decision goes to web's feed too.
        stack.start_intake(ONBOARDING_APPS="web")
        for process in stack.listeners:
            process.stop(timeout_s=20)
        stack.start_listener(ONBOARDING_APPS="web")
        via_web = {u: _decide_through_web(stack, [new_signup(user_id=f"user-{u}")]) for u in ("A", "B")}

        events = {u: [e["event_id"] for e in first[u] + later[u]] + via_web[u] for u in ("A", "B")}
        events["A"] += [refused, _refuse_through_web(stack, "user-A")]
        before_a = places.of("user-A", events["A"])
        before_b = places.of("user-B", events["B"])
        for name, found in before_a.items():  # shown with -s: what each place held of A
            print(f"A before erasure, {name}: {len(found)}: {str(found)[:160]}")
        empty = [name for name, found in before_a.items() if not found]
        assert not empty, f"the test does not put A's data in: {empty}"
        live_a = [e["event_id"] for e in later["A"]] + via_web["A"]
        assert before_a["airflow dag runs (REST)"] == sorted(keys.run_id_for(e) for e in live_a)
        records_a = places.records_of("user-A")
        assert sorted(r["event_id"] for r in records_a) == sorted([e["event_id"] for e in first["A"]] + live_a)

        env = {
            **os.environ,
            **stack.stream_env,
            "ONBOARDING_HOME": str(tmp_path / "operator"),  # no other stack's settings
            "AIRFLOW_API_URL": stack.instance.spec.api_url,
            "AIRFLOW_ADMIN_USERNAME": "admin",
            "AIRFLOW_ADMIN_PASSWORD_FILE": str(stack.instance.admin_password_file),
            "ARCHIVE_DIR": str(archive_dir),
            "ARCHIVE_REALTIME_DB_URL": stack.instance.database_url,
            "AIRFLOW_LOGS_DIR": str(places.logs_dir),
            "ONBOARDING_APPS": "web",
        }
        command = Path(sys.executable).with_name("onboarding-erase")
        done = subprocess.run(
            [str(command), "--user-id", "user-A"], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["airflow_runs"] == before_a["airflow dag runs (REST)"]
        assert report["airflow_log_rows"] >= len(before_a["airflow audit log rows"])

        after_a = places.of("user-A", events["A"])
        left = {name: found for name, found in after_a.items() if found}
        assert not left, f"A's data is still here after the erasure: {left}"
        # Inside the retention period the decision records stay, unchanged, and the report says so.
        assert places.records_of("user-A") == records_a
        assert report["decision_records"]["mode"] == "refuse"
        assert len(report["decision_records"]["redis"]) + report["decision_records"]["archived"] == len(records_a)
        assert places.of("user-B", events["B"]) == before_b, "B's data changed"
        assert all(before_b[name] for name in ("airflow dag runs (REST)", "archive store", "airflow audit log rows"))
        places.engine.dispose()
