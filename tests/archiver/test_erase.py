"""Erasing one user from the metadata archive: their runs' rows leave every Parquet file, all
other rows stay, and the journal still verifies every file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from archiver.audit import find_runs
from archiver.erase import erase_user
from testkit.seed import seed_runs
from tests.archiver.test_archive import OLD, archived, make_archiver


def test_erase_rewrites_only_the_users_rows_and_keeps_the_journal_true(
    metadata_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    runs = seed_runs(engine, 240, OLD, step=timedelta(hours=2))  # spans three weeks
    archiver = make_archiver(metadata_url, engine, tmp_path / "archive", batch_size=100)
    archiver.run()
    store = archiver.store
    user = runs[3].user_id
    theirs = {r.run_id for r in runs if r.user_id == user}
    assert len(find_runs(store, user_id=user)) == len(theirs) >= 1
    before = {table: len(rows) for table, rows in archived(store).items()}

    dry = erase_user(store, user, dry_run=True)
    assert {r.rsplit("/", 1)[1] for r in dry.runs} == theirs
    assert {table: len(rows) for table, rows in archived(store).items()} == before, "a dry run changes nothing"

    report = erase_user(store, user)
    assert report.rows == dry.rows and report.files == dry.files
    assert report.rows["dag_run"] == len(theirs)
    assert report.rows["task_instance"] == 4 * len(theirs)
    after = {table: len(rows) for table, rows in archived(store).items()}
    assert after == {table: count - report.rows.get(table, 0) for table, count in before.items()}
    assert find_runs(store, user_id=user) == []
    other = next(r for r in runs if r.user_id != user)
    assert [f["run_id"] for f in find_runs(store, user_id=other.user_id)]
    for record in store.batches("realtime"):
        store.verify_batch("realtime", record)  # raises if a file and its journal entry disagree
    assert list((store.instance_dir("realtime") / "_erasures").glob("*.json"))
    assert user not in "".join(p.read_text() for p in (store.instance_dir("realtime") / "_erasures").glob("*"))
