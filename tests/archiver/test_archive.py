"""The archive on real, migrated Airflow metadata databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from archiver.archive import Archiver
from archiver.audit import find_runs
from archiver.settings import ArchiveSettings, InstanceDatabase
from archiver.store import ArchiveStore, rows_of
from stack.settings import PROJECT_ROOT
from testkit.seed import seed_jobs, seed_runs

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=10)


def make_archiver(url: str, engine: sa.Engine, archive_dir: Path, batch_size: int = 7) -> Archiver:
    settings = ArchiveSettings(archive_dir=archive_dir, batch_size=batch_size)
    return Archiver(InstanceDatabase("realtime", url), ArchiveStore(archive_dir), settings, engine=engine)


def snapshot(archiver: Archiver) -> dict[str, Counter]:
    """Every row of every archived table, as the archive keeps it."""
    archiver._reflect()
    out = {}
    with archiver.engine.connect() as conn:
        for name, shape in archiver.shapes.items():
            rows = conn.execute(sa.select(*shape.columns(conn.dialect.name))).all()
            out[name] = Counter(rows_of(shape.arrow_table(rows)))
    return out


def archived(store: ArchiveStore, instance: str = "realtime") -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for path in sorted(store.instance_dir(instance).glob("*/week=*/*.parquet")):
        out.setdefault(path.parent.parent.name, []).extend(store.read_rows(path))
    return out


def assert_moved_exactly(before: dict[str, Counter], after: dict[str, Counter], store: ArchiveStore) -> int:
    """Every removed row is in the archive once, and the archive holds nothing else."""
    in_archive = archived(store)
    moved = 0
    for table in before:
        removed = before[table] - after[table]
        got = Counter(in_archive.get(table, []))
        assert got == removed, f"{table}: archive differs from the rows removed"
        assert max(got.values(), default=1) == 1, f"{table}: a row is archived twice"
        moved += sum(removed.values())
    assert set(in_archive) <= set(before)
    return moved


def test_archive_moves_old_finished_runs_verified_and_leaves_the_rest(
    metadata_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    old = seed_runs(engine, 30, OLD)
    failed = seed_runs(engine, 4, OLD, state="failed", prefix="failed")
    running = seed_runs(engine, 3, OLD, state="running", prefix="running")
    recent = seed_runs(engine, 5, NOW - timedelta(hours=1), prefix="recent")
    seed_jobs(engine, 3, OLD)
    seed_jobs(engine, 1, OLD, state="running")  # a scheduler whose heartbeat stopped long ago: left alone
    archiver = make_archiver(metadata_url, engine, tmp_path / "archive")
    before = snapshot(archiver)

    report = archiver.run()

    after = snapshot(archiver)
    moved = assert_moved_exactly(before, after, archiver.store)
    assert report.status == "ok" and report.rows == moved
    with engine.connect() as conn:
        left = set(conn.execute(sa.text("SELECT run_id FROM dag_run")).scalars())
        orphans = conn.execute(
            sa.text(
                "SELECT count(*) FROM task_instance ti LEFT JOIN dag_run dr USING (dag_id, run_id) WHERE dr.id IS NULL"
            )
        ).scalar()
        jobs = Counter(conn.execute(sa.text("SELECT state FROM job")).scalars())
    assert left == {r.run_id for r in running + recent}
    assert not {r.run_id for r in old + failed} & left
    assert orphans == 0
    assert jobs == Counter({"running": 1})
    # Running runs are untouched, with every row under them.
    for table in ("dag_run", "task_instance", "xcom", "task_instance_history", "rendered_task_instance_fields"):
        kept = [r for r in before[table] if any(run.run_id in repr(r) for run in running)]
        assert kept and all(after[table][r] == 1 for r in kept), table
    assert report.tables["dag_run"] == 34 and report.tables["task_instance"] == 34 * 4
    assert {"xcom", "log", "task_instance_history", "job", "asset_event", "dagrun_asset_event"} <= set(report.tables)

    manifest = archiver.store.run_manifests("realtime")[-1]
    assert manifest["status"] == "ok" and manifest["cutoff"] == report.cutoff
    assert manifest["airflow_version"] == "3.3.2" and manifest["alembic_revision"]
    files = [f for b in manifest["batches"] for f in b["files"].values()]
    for entry in files:
        path = archiver.store.instance_dir("realtime") / entry["path"]
        # The manifest's checksum is the file's own sha256 (`sha256sum` checks it).
        assert len(archiver.store.read_rows(path)) == entry["rows"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert sum(f["rows"] for f in files) == moved
    # Files are laid out by table and week (batches finish in any order with 2 workers).
    assert all(f["path"].startswith(f"{name}/week=") for b in manifest["batches"] for name, f in b["files"].items())
    assert {"dag_run", "task_instance"} <= {name for b in manifest["batches"] for name in b["files"]}

    # A second run finds nothing left to move and archives nothing twice.
    assert archiver.run().rows == 0
    assert_moved_exactly(before, snapshot(archiver), archiver.store)


def test_a_run_that_never_started_is_archived_too(metadata_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    """`airflow db clean` picks runs by start_date and never cleans these."""
    seed_runs(engine, 2, OLD, state="failed", prefix="never-started")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE dag_run SET start_date = NULL, end_date = NULL"))
    archiver = make_archiver(metadata_url, engine, tmp_path / "archive")
    assert archiver.run().tables["dag_run"] == 2
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM dag_run")).scalar() == 0


def test_dry_run_counts_what_a_run_moves_and_changes_nothing(
    metadata_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    seed_runs(engine, 12, OLD)
    seed_runs(engine, 2, NOW, prefix="recent")
    archiver = make_archiver(metadata_url, engine, tmp_path / "archive")
    before = snapshot(archiver)
    planned = archiver.run(dry_run=True)
    assert snapshot(archiver) == before
    assert not list((tmp_path / "archive").rglob("*.parquet"))
    assert planned.tables == archiver.run().tables
    assert planned.tables["dag_run"] == 12


def _run_cli(
    url: str, archive_dir: Path, kill_after: int | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """`onboarding-archive run` in a subprocess; with `kill_after`, SIGKILLed after that many copied batches."""
    entry = ["archiver"] if kill_after is None else ["testkit.archive_kill", str(kill_after)]
    return subprocess.run(
        [sys.executable, "-m", *entry, "run", "--no-lock"],
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            "ARCHIVE_REALTIME_DB_URL": url,
            "ARCHIVE_DIR": str(archive_dir),
            "ARCHIVE_BATCH_SIZE": "5",
            "LOG_FORMAT": "text",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_run_killed_mid_batch_is_finished_by_the_next_without_loss_or_duplicates(
    metadata_url: str, engine: sa.Engine, tmp_path: Path, workers: str
) -> None:
    seed_runs(engine, 18, OLD)
    archive_dir = tmp_path / "archive"
    archiver = make_archiver(metadata_url, engine, archive_dir, batch_size=5)
    before = snapshot(archiver)

    killed = _run_cli(metadata_url, archive_dir, kill_after=2, ARCHIVE_WORKERS=workers)

    assert killed.returncode == -9, killed.stderr[-2000:]
    journal = list(archiver.store.batches("realtime"))
    assert "copied" in {b.state for b in journal} and {b.state for b in journal} <= {"planned", "copied", "deleted"}
    if workers == "1":
        assert sorted(b.state for b in journal) == ["copied", "deleted"]
    deleted_runs = sum(len(b.keys) for b in journal if b.state == "deleted")
    copied_runs = sum(len(b.keys) for b in journal if b.state == "copied")
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM dag_run")).scalar()
    if workers == "1":
        # The killed batch's runs were copied but are still in the database.
        assert left == 18 - deleted_runs
    else:
        # Another worker's batch may have committed its delete just before the kill, with
        # its journal entry still `copied` (the re-run settles it as deleted).
        assert 18 - deleted_runs - copied_runs <= left <= 18 - deleted_runs

    rerun = _run_cli(metadata_url, archive_dir)

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "finishing batch" in rerun.stderr
    after = snapshot(archiver)
    assert sum(after["dag_run"].values()) == 0
    assert assert_moved_exactly(before, after, archiver.store) == sum(sum(c.values()) for c in before.values())
    assert {b.state for b in archiver.store.batches("realtime")} == {"deleted"}


def test_a_batch_whose_delete_committed_before_a_crash_is_not_archived_again(
    metadata_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    seed_runs(engine, 6, OLD)
    archiver = make_archiver(metadata_url, engine, tmp_path / "archive", batch_size=3)
    before = snapshot(archiver)
    archiver.run()
    # As if the process died between the delete's commit and the journal update.
    for record in archiver.store.batches("realtime"):
        record.state = "copied"
        archiver.store.save_batch("realtime", record)
    archiver.run()
    assert {b.state for b in archiver.store.batches("realtime")} == {"deleted"}
    assert_moved_exactly(before, snapshot(archiver), archiver.store)


def test_a_run_cleared_after_it_was_copied_is_not_deleted(metadata_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    """The journal says copied, but the run was re-run since: its old copy is withdrawn."""
    runs = seed_runs(engine, 4, OLD)
    archive_dir = tmp_path / "archive"
    killed = _run_cli(metadata_url, archive_dir, kill_after=1)
    assert killed.returncode == -9, killed.stderr[-2000:]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE dag_run SET state = 'queued'"))
    archiver = make_archiver(metadata_url, engine, archive_dir)
    before = snapshot(archiver)
    archiver.run()
    after = snapshot(archiver)
    # Log rows go by their own age; everything under the runs stays, and is not in the archive.
    assert {t: c for t, c in after.items() if t != "log"} == {t: c for t, c in before.items() if t != "log"}
    assert {p.parent.parent.name for p in archive_dir.rglob("*.parquet")} == {"log"}
    assert {b.state for b in archiver.store.batches("realtime") if b.root == "dag_run"} == {"dropped"}
    assert len(runs) == 4


def test_audit_finds_a_users_past_decision_across_weeks(metadata_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    runs = seed_runs(engine, 1200, OLD, step=timedelta(minutes=30))  # spans four weeks
    archiver = make_archiver(metadata_url, engine, tmp_path / "archive", batch_size=400)
    archiver.run()
    weeks = {p.name for p in (tmp_path / "archive" / "realtime" / "dag_run").iterdir()}
    assert len(weeks) >= 4

    user = runs[5].user_id
    expected = {r.run_id for r in runs if r.user_id == user}
    found = find_runs(archiver.store, user_id=user)
    assert {f["run_id"] for f in found} == expected and len(expected) > 1
    first = next(f for f in found if f["run_id"] == runs[5].run_id)
    assert first["signup"]["user_id"] == user and first["signup"]["event_id"] == runs[5].event_id
    assert first["decision"]["decision"] in ("approve", "decline")
    assert first["decision"]["model_version"] == "20261122T031356Z-2c0bae00"
    assert set(first["decision_inputs"]) == {"enrich", "score", "decide"}
    assert [t["task_id"] for t in first["task_instances"]] == ["enrich", "score", "decide", "publish"]

    by_event = find_runs(archiver.store, event_id=runs[7].event_id)
    assert [f["run_id"] for f in by_event] == [runs[7].run_id]
    assert find_runs(archiver.store, user_id="user-that-never-signed-up") == []
    json.dumps(found)  # printable as the CLI prints it
