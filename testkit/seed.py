"""Realistic rows in a migrated Airflow metadata database, for the archiver's tests and benchmark.

Rows are inserted with Airflow's own table definitions (`airflow.models.base.Base.metadata`),
so column types, JSON encoding and UUIDs are exactly what Airflow itself writes. Each
onboarding run gets what a real one leaves behind: the run with its signup as `conf`, four
task instances with their history, the `enrich`/`score`/`decide` XComs, rendered fields and
log rows; every tenth run also a note, a task note, a reschedule and a consumed asset event.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

TASKS = ("enrich", "score", "decide", "publish")


def airflow_tables() -> dict[str, sa.Table]:
    from airflow.models import import_all_models
    from airflow.models.base import Base

    import_all_models()
    return dict(Base.metadata.tables)


@dataclass(frozen=True)
class SeededRun:
    run_id: str
    event_id: str
    user_id: str
    dag_run_id: int
    state: str


def _signup(event_id: str, user_id: str, at: datetime) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": event_id,
        "user_id": user_id,
        "occurred_at": at.isoformat(),
        "accepted_at": (at + timedelta(milliseconds=20)).isoformat(),
        "application": {"checking_account": "under_200", "duration_months": 24, "credit_amount": 4200, "age_years": 31},
    }


def _rows(
    first_id: int, count: int, end: datetime, step: timedelta, state: str, prefix: str, dag_id: str
) -> Iterator[tuple[str, dict[str, Any]] | SeededRun]:
    for n in range(count):
        run_pk = first_id + n
        at = end - n * step
        event_id = f"{prefix}-{run_pk}"
        user_id = f"user-{run_pk % 997}"
        run_id = f"signup__{event_id}"
        finished = state in ("success", "failed")
        signup = _signup(event_id, user_id, at)
        yield SeededRun(run_id, event_id, user_id, run_pk, state)
        yield (
            "dag_run",
            dict(
                id=run_pk,
                dag_id=dag_id,
                run_id=run_id,
                run_type="manual",
                state=state,
                conf=signup,
                queued_at=at,
                start_date=at,
                end_date=at + timedelta(seconds=2) if finished else None,
                run_after=at,
                clear_number=0,
                span_status="ended",
                updated_at=at,
                created_at=at,
            ),
        )
        decided = {
            **signup,
            "score": round((run_pk % 100) / 100, 2),
            "reason_codes": [{"code": "checking_account", "text": "negative", "contribution": 0.79}],
            "model_version": "20261122T031356Z-2c0bae00",
            "decision": "decline" if run_pk % 3 else "approve",
        }
        values = {"enrich": {**signup, "derived": {"monthly_amount": 175.0}}, "score": decided, "decide": decided}
        for i, task in enumerate(TASKS):
            ti_id = uuid.uuid7() if hasattr(uuid, "uuid7") else uuid.uuid4()
            common = dict(
                task_id=task,
                dag_id=dag_id,
                run_id=run_id,
                map_index=-1,
                start_date=at + timedelta(milliseconds=100 * i),
                end_date=at + timedelta(milliseconds=100 * i + 90) if finished else None,
                duration=0.09,
                state="success" if finished else "running",
                max_tries=1,
                hostname="worker-1",
                pool="default_pool",
                pool_slots=1,
                queue="default",
                priority_weight=4 - i,
                operator="_PythonDecoratedOperator",
                span_status="ended",
                executor_config={},
            )
            yield "task_instance", dict(id=ti_id, try_number=2, **common)
            yield "task_instance_history", dict(task_instance_id=uuid.uuid4(), try_number=1, **common)
            yield (
                "rendered_task_instance_fields",
                dict(dag_id=dag_id, task_id=task, run_id=run_id, map_index=-1, rendered_fields={"op_kwargs": {}}),
            )
            yield (
                "log",
                dict(
                    dttm=at + timedelta(milliseconds=100 * i),
                    dag_id=dag_id,
                    task_id=task,
                    run_id=run_id,
                    event="running",
                    owner="airflow",
                    extra=None,
                    try_number=2,
                    map_index=-1,
                ),
            )
            if task in values:
                yield (
                    "xcom",
                    dict(
                        dag_run_id=run_pk,
                        task_id=task,
                        map_index=-1,
                        key="return_value",
                        dag_id=dag_id,
                        run_id=run_id,
                        value=values[task],
                        timestamp=at + timedelta(milliseconds=100 * i + 80),
                    ),
                )
            if n % 10 == 0 and task == "enrich":
                yield "task_instance_note", dict(ti_id=ti_id, content="checked", created_at=at, updated_at=at)
                yield "task_reschedule", dict(ti_id=ti_id, start_date=at, end_date=at, duration=0, reschedule_date=at)
        if n % 10 == 0:
            yield "dag_run_note", dict(dag_run_id=run_pk, content="audited", created_at=at, updated_at=at)
            yield "asset_event", dict(id=run_pk, asset_id=1, extra={"from": run_id}, timestamp=at)
            yield "dagrun_asset_event", dict(dag_run_id=run_pk, event_id=run_pk)


INSERT_ORDER = (
    "dag_run",
    "asset_event",
    "task_instance",
    "task_instance_history",
    "rendered_task_instance_fields",
    "log",
    "xcom",
    "task_instance_note",
    "task_reschedule",
    "dag_run_note",
    "dagrun_asset_event",
)


def seed_runs(
    engine: sa.Engine,
    count: int,
    end: datetime,
    step: timedelta = timedelta(minutes=1),
    state: str = "success",
    prefix: str = "evt",
    dag_id: str = "onboarding",
    chunk: int = 5000,
) -> list[SeededRun]:
    """Insert `count` onboarding runs, the newest at `end`, one every `step` before it."""
    tables = airflow_tables()
    with engine.begin() as conn:
        first_id = (conn.execute(sa.select(sa.func.max(tables["dag_run"].c.id))).scalar() or 0) + 1
        first_event = (conn.execute(sa.select(sa.func.max(tables["asset_event"].c.id))).scalar() or 0) + 1
    first_id = max(first_id, first_event)
    runs: list[SeededRun] = []
    pending: dict[str, list[dict[str, Any]]] = {name: [] for name in INSERT_ORDER}

    def flush() -> None:
        with engine.begin() as conn:
            for name in INSERT_ORDER:
                if pending[name]:
                    conn.execute(sa.insert(tables[name]), pending[name])
                    pending[name] = []

    for item in _rows(first_id, count, end.astimezone(UTC), step, state, prefix, dag_id):
        if isinstance(item, SeededRun):
            runs.append(item)
            if len(runs) % chunk == 0:
                flush()
            continue
        pending[item[0]].append(item[1])
    flush()
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for name in ("dag_run", "asset_event"):
                # `name` is one of the two literals above, not input.
                conn.execute(
                    sa.text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))")  # noqa: S608
                )
    return runs


def seed_jobs(engine: sa.Engine, count: int, end: datetime, state: str = "success") -> None:
    tables = airflow_tables()
    rows = [
        dict(
            state=state,
            job_type="SchedulerJob",
            start_date=end - timedelta(hours=n + 1),
            end_date=None if state == "running" else end - timedelta(hours=n),
            latest_heartbeat=end - timedelta(hours=n),
            hostname="scheduler-0",
            executor_class="LocalExecutor",
        )
        for n in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(tables["job"]), rows)
