"""Real Airflow metadata databases for the archiver: migrated once per session by `airflow db
migrate`, then copied per test (a file copy on SQLite, `CREATE DATABASE ... TEMPLATE` on
PostgreSQL), so every test starts from an empty, current schema."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from archiver.archive import make_engine
from stack.instance import AirflowInstance, InstanceSpec, drop_postgres_database
from testkit.postgres import PG, postgres_available, postgres_copy
from testkit.services import free_port, require

TEMPLATE_DB = f"onboarding_archive_template_{os.getpid()}"


def _instance(home: Path, database_url: str | None) -> AirflowInstance:
    spec = InstanceSpec.from_deploy("realtime", home, free_port(), free_port(), database_url, name="archive-test")
    return AirflowInstance(spec, dict(os.environ))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    instance = _instance(tmp_path_factory.mktemp("archive-template-sqlite"), None)
    instance.prepare()
    instance.migrate()
    return instance.home / "airflow.db"


@pytest.fixture(scope="session")
def postgres_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require(postgres_available(), "PostgreSQL on 127.0.0.1:5432")
    url = f"{PG}/{TEMPLATE_DB}"
    drop_postgres_database(url)
    instance = _instance(tmp_path_factory.mktemp("archive-template-pg"), url)
    instance.prepare()
    instance.migrate()
    yield url
    drop_postgres_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated, empty Airflow metadata database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "airflow.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = postgres_copy(request.getfixturevalue("postgres_template"))
    yield url
    drop_postgres_database(url)


@pytest.fixture
def engine(metadata_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(metadata_url)
    yield engine
    engine.dispose()
