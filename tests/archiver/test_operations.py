"""Scheduling, locking, metrics and settings of the archiver."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, SimpleWorker
from rq.cron import CronScheduler

from archiver.archive import make_engine
from archiver.cli import main as archive_main
from archiver.errors import ArchiveError, LockHeld
from archiver.jobs import archive_all, run_archive_job
from archiver.metrics import health, registry_for
from archiver.settings import ArchiveSettings, InstanceDatabase
from archiver.store import ArchiveStore
from archiver.tables import tree
from onboarding.errors import ConfigError
from testkit.seed import airflow_tables, seed_runs
from testkit.services import require

REDIS_URL = os.environ.get("ARCHIVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
OLD = datetime.now(UTC) - timedelta(days=10)


@pytest.fixture
def redis13() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        require(False, f"Redis at {REDIS_URL}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def seeded_sqlite(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "airflow.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    seed_runs(engine, 8, OLD)
    engine.dispose()
    return url


def _settings(url: str, tmp_path: Path, **overrides: object) -> ArchiveSettings:
    values = dict(
        archive_dir=tmp_path / "archive",
        instances=(InstanceDatabase("realtime", url),),
        redis_url=REDIS_URL,
        lock_name="test:archive:lock",
    )
    return ArchiveSettings(**{**values, **overrides})


def test_every_table_under_dag_run_and_task_instance_in_airflows_models_is_archived() -> None:
    """Airflow's own model metadata: anything with a foreign key into a run is in the tree."""
    md = sa.MetaData()
    for table in airflow_tables().values():
        table.to_metadata(md)
    names = {n.table for n in tree(md, "dag_run")}
    referencing = set()
    frontier = {"dag_run"}
    while frontier:
        frontier = {
            t.name
            for t in md.tables.values()
            if t.name not in referencing and any(fk.referred_table.name in frontier for fk in t.foreign_key_constraints)
        } - {"dag_run"}
        referencing |= frontier
    assert referencing <= names
    assert {
        "task_instance",
        "task_instance_history",
        "xcom",
        "rendered_task_instance_fields",
        "task_reschedule",
        "hitl_detail",
        "hitl_detail_history",
        "task_map",
        "dagrun_asset_event",
        "deadline",
    } <= names


def test_two_runs_never_overlap(redis13: redis.Redis, seeded_sqlite: str, tmp_path: Path) -> None:
    settings = _settings(seeded_sqlite, tmp_path)
    held = redis13.lock(settings.lock_name, timeout=60)
    assert held.acquire(blocking=False)
    with pytest.raises(LockHeld):
        archive_all(settings, redis13)
    held.release()
    [report] = archive_all(settings, redis13)
    assert report.tables["dag_run"] == 8
    assert redis13.get(settings.lock_name) is None  # released after the run


def test_weekly_cron_job_runs_on_the_maintenance_queue_worker(
    redis13: redis.Redis, seeded_sqlite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHIVE_REALTIME_DB_URL", seeded_sqlite)
    monkeypatch.setenv("ARCHIVE_DIR", str(tmp_path / "archive"))
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    scheduler = CronScheduler(connection=redis13)
    scheduler.load_config_from_file("archiver.cron")
    [job] = scheduler.get_jobs()
    assert job.queue_name == "maintenance" and job.cron == "0 3 * * 0" and job.func is run_archive_job
    assert job.get_next_enqueue_time().weekday() == 6  # Sunday

    queued = job.enqueue(redis13)
    SimpleWorker([Queue("maintenance", connection=redis13)], connection=redis13).work(burst=True)

    queued.refresh()
    assert queued.get_status() == "finished", queued.latest_result().exc_string if queued.latest_result() else None
    assert queued.return_value()["realtime"]["tables"]["dag_run"] == 8
    assert (tmp_path / "archive" / "metrics.prom").read_text().count("onboarding_archive_rows_total") > 1


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "America/Los_Angeles", "UTC"])
def test_the_weekly_archive_is_due_sunday_0300_utc_whatever_the_hosts_time_zone(zone: str) -> None:
    code = (
        "import redis\n"
        "from rq.cron import CronScheduler\n"
        f"scheduler = CronScheduler(connection=redis.Redis.from_url({REDIS_URL!r}))\n"
        "scheduler.load_config_from_file('archiver.cron')\n"
        "[job] = scheduler.get_jobs()\n"
        "print(job.get_next_enqueue_time().isoformat())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "TZ": zone}, capture_output=True, text=True, check=True
    )
    due = datetime.fromisoformat(out.stdout.strip().splitlines()[-1]).astimezone(UTC)
    assert (due.weekday(), due.hour, due.minute) == (6, 3, 0), f"under TZ={zone}: {due}"
    assert timedelta(0) < due - datetime.now(UTC) <= timedelta(days=7)


def test_metrics_and_health_tell_on_call_what_happened(seeded_sqlite: str, tmp_path: Path) -> None:
    settings = _settings(seeded_sqlite, tmp_path)
    store = ArchiveStore(settings.archive_dir)
    assert health(store, settings) == (False, "realtime: no successful archive run yet")
    archive_all(settings, None)
    metrics = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry_for(store)).decode())
        for s in family.samples
    }
    assert metrics[("onboarding_archive_rows_total", (("instance", "realtime"), ("table", "dag_run")))] == 8
    assert metrics[("onboarding_archive_last_run_rows", (("instance", "realtime"), ("table", "xcom")))] == 24
    assert metrics[("onboarding_archive_runs_total", (("instance", "realtime"), ("status", "ok")))] == 1
    assert metrics[("onboarding_archive_last_run_failed", (("instance", "realtime"),))] == 0
    finished = metrics[("onboarding_archive_last_success_timestamp_seconds", (("instance", "realtime"),))]
    assert abs(finished - datetime.now(UTC).timestamp()) < 120
    assert health(store, settings) == (True, "ok")
    assert not health(store, settings, now=finished + 9 * 86400)[0]

    broken = _settings("sqlite:////nonexistent/dir/airflow.db", tmp_path)
    with pytest.raises(ArchiveError):
        archive_all(broken, None)
    ok, why = health(store, broken)
    assert not ok and "last run failed" in why
    text = generate_latest(registry_for(store)).decode()
    assert 'onboarding_archive_runs_total{instance="realtime",status="failed"} 1.0' in text


def test_settings_errors_name_the_variable_and_value() -> None:
    with pytest.raises(ConfigError, match="ARCHIVE_CUTOFF_DAYS='a week' is not a number"):
        ArchiveSettings.from_env({"ARCHIVE_CUTOFF_DAYS": "a week"})
    with pytest.raises(ConfigError, match="ARCHIVE_BATCH_DB_URL='batch-db' is not a SQLAlchemy URL"):
        ArchiveSettings.from_env({"ARCHIVE_BATCH_DB_URL": "batch-db"})
    settings = ArchiveSettings.from_env(
        {"ARCHIVE_BATCH_DB_URL": "postgresql://pg/batch", "ARCHIVE_CUTOFF_DAYS": "14", "ARCHIVE_DIR": "/srv/archive"}
    )
    assert [i.name for i in settings.instances] == ["realtime", "batch"]
    assert settings.cutoff(datetime(2026, 11, 22, tzinfo=UTC)) == datetime(2026, 11, 8, tzinfo=UTC)
    assert settings.archive_dir == Path("/srv/archive")


def test_worker_check_as_a_liveness_probe_does_not_fail_for_a_redis_outage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Redis outage must not restart every worker pod: rq reconnects by itself."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nothing = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"  # nothing listens there
    monkeypatch.setenv("REDIS_URL", nothing)
    assert archive_main(["worker-check"]) == 1
    assert "unhealthy: Redis at" in capsys.readouterr().out
    assert archive_main(["worker-check", "--liveness"]) == 0
    assert "not a reason to restart" in capsys.readouterr().out
