"""Erase one user's rows from a live Airflow metadata database's audit `log` table.

Airflow's REST API records every write request in `log` (the audit log): the trigger of an
onboarding run keeps the whole request body in `extra`, so the run's `conf` (the signup:
user id and the application) stays there after the run itself is deleted, and the API has no
delete for it. This module reaches that table directly, with the archiver's engine (the same
database URL the archiver is given, `ARCHIVE_REALTIME_DB_URL`).

A row is the user's when its `run_id` is one of the user's runs of the onboarding DAG (the
trigger, the task's `running`/`success` rows, a clear, the erasure's own `delete_dag_run`),
or when its `extra` names the user: candidates are found by a substring of the JSON Airflow
writes (`"user_id": "<id>"`, json.dumps with its default separators and escaping), then each
is parsed and kept only if a `user_id` value anywhere in it equals the id exactly. The run ids
of those rows are returned too, so the caller deletes runs it could not otherwise find (the
signups stream already trimmed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from archiver.archive import make_engine
from onboarding import keys

CHUNK = 500


@dataclass
class LogErasure:
    """Audit-log rows of the user (ids), and the runs they name."""

    rows: list[int] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)


def names_user(value: Any, user_id: str) -> bool:
    """Whether a `user_id` value anywhere in parsed JSON equals the id exactly."""
    if isinstance(value, dict):
        return any((k == "user_id" and v == user_id) or names_user(v, user_id) for k, v in value.items())
    if isinstance(value, list):
        return any(names_user(v, user_id) for v in value)
    return False


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def user_log_rows(engine: Engine, user_id: str, run_ids: list[str], dag_id: str = keys.ONBOARDING_DAG_ID) -> LogErasure:
    """The `log` rows of the user's runs and the rows whose `extra` names the user."""
    log = sa.table("log", sa.column("id"), sa.column("dag_id"), sa.column("run_id"), sa.column("extra"))
    found: dict[int, str | None] = {}
    needle = f'"user_id": {json.dumps(user_id)}'
    with engine.connect() as conn:
        query = sa.select(log.c.id, log.c.run_id, log.c.extra).where(
            log.c.extra.like(f"%{_like_escape(needle)}%", escape="\\")
        )
        for row_id, run_id, extra in conn.execute(query):
            try:
                data = json.loads(extra)
            except (TypeError, ValueError):
                continue
            if names_user(data, user_id):
                found[int(row_id)] = run_id
        for start in range(0, len(run_ids), CHUNK):
            chunk = run_ids[start : start + CHUNK]
            query = sa.select(log.c.id, log.c.run_id).where(log.c.dag_id == dag_id, log.c.run_id.in_(chunk))
            for row_id, run_id in conn.execute(query):
                found[int(row_id)] = run_id
    runs = sorted({r for r in found.values() if r})
    return LogErasure(rows=sorted(found), runs=runs)


def delete_log_rows(engine: Engine, row_ids: list[int]) -> None:
    log = sa.table("log", sa.column("id"))
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        for start in range(0, len(row_ids), CHUNK):
            conn.execute(sa.delete(log).where(log.c.id.in_(row_ids[start : start + CHUNK])))


def open_engine(url: str) -> Engine:
    """The archiver's engine for a metadata database URL."""
    return make_engine(url)
