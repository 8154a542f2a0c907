"""Operator commands run by hand find the running local stack's databases and credentials
(`<ONBOARDING_HOME>/stack.env.json`, written by `onboarding-stack up`), never create a
database that is not there, and say what to set when they cannot (issue 20)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from archiver.archive import make_engine
from onboarding.settings import STACK_ENV_FILE, use_stack_defaults
from stack.local import Stack
from stack.settings import StackSettings
from testkit.seed import seed_runs

OLD = datetime.now(UTC) - timedelta(days=10)


def clean_env(home: Path) -> dict[str, str]:
    """This machine's environment without any of the service's settings, home at `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARCHIVE_", "AIRFLOW_", "REDIS_URL"))}
    return {**env, "ONBOARDING_HOME": str(home), "LOG_FORMAT": "text"}


def archive(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archiver", *args], env=clean_env(home), capture_output=True, text=True, timeout=120
    )


def test_the_stack_records_what_operators_need_with_postgres_metadata(tmp_path: Path) -> None:
    """The issue's case: a stack on PostgreSQL; the archive must go there, not to a SQLite file."""
    stack = Stack(StackSettings.from_env({"ONBOARDING_HOME": str(tmp_path), "ONBOARDING_METADATA_DB": "postgres"}))
    stack.write_operator_env()
    path = tmp_path / STACK_ENV_FILE
    assert path.stat().st_mode & 0o077 == 0  # it names credential files
    recorded = json.loads(path.read_text())
    assert recorded["ARCHIVE_REALTIME_DB_URL"].startswith("postgresql") and recorded["ARCHIVE_BATCH_DB_URL"]
    assert recorded["ARCHIVE_REALTIME_DB_URL"] == stack.realtime.database_url
    assert recorded["AIRFLOW_ADMIN_PASSWORD_FILE"] == str(stack.realtime.admin_password_file)
    assert recorded["AIRFLOW_API_URL"] == stack.realtime.spec.api_url
    # Variables set by the operator win; the rest come from the file.
    environ = {"ONBOARDING_HOME": str(tmp_path), "REDIS_URL": "redis://elsewhere:6379/0"}
    taken = use_stack_defaults(environ)
    assert "REDIS_URL" not in taken and environ["REDIS_URL"] == "redis://elsewhere:6379/0"
    assert environ["ARCHIVE_REALTIME_DB_URL"] == recorded["ARCHIVE_REALTIME_DB_URL"]
    assert use_stack_defaults({"ONBOARDING_HOME": str(tmp_path / "no-stack")}) == []


def test_without_a_stack_the_archive_says_what_to_set_and_creates_nothing(tmp_path: Path) -> None:
    result = archive(tmp_path, "dry-run")
    assert result.returncode != 0
    assert "no SQLite database at" in result.stderr and "ARCHIVE_REALTIME_DB_URL" in result.stderr
    assert not (tmp_path / "realtime" / "airflow.db").exists()
    assert list(tmp_path.rglob("*.db")) == []


def test_with_the_stacks_record_the_archive_finds_its_database_without_variables(
    tmp_path: Path, sqlite_template: Path
) -> None:
    database = tmp_path / "elsewhere" / "airflow.db"  # not where the CLI's own default would look
    database.parent.mkdir()
    shutil.copyfile(sqlite_template, database)
    engine = make_engine(f"sqlite:///{database}")
    seed_runs(engine, 3, OLD)
    engine.dispose()
    (tmp_path / STACK_ENV_FILE).write_text(
        json.dumps({"ARCHIVE_REALTIME_DB_URL": f"sqlite:///{database}", "ARCHIVE_DIR": str(tmp_path / "archive")})
    )
    result = archive(tmp_path, "dry-run")
    assert result.returncode == 0, result.stderr
    assert "the local stack's settings" in result.stderr and "ARCHIVE_REALTIME_DB_URL" in result.stderr
    assert "dag_run" in result.stdout
    assert not (tmp_path / "realtime").exists()
