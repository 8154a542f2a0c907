"""What is archived: the tables that grow per run, and how their rows hang off a root row.

A *root* is a row whose age decides when it leaves the database: a finished DAG run, an
asset event, a job, a log entry. Its *tree* is every table that references it by a foreign
key, transitively (task instances and their history, XComs, rendered fields, notes,
reschedules, human-in-the-loop details, asset-event links, deadlines, ...). The tree is
discovered from the live database's foreign keys, so a table a future Airflow adds under
`dag_run` or `task_instance` is archived without a code change, and nothing is ever left
for `ON DELETE CASCADE` to remove unarchived: children are deleted before their parents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

# Only these are final; queued, running, and anything a future Airflow adds, are left alone.
TERMINAL_STATES = ("success", "failed")
# Scheduled DAGs need their latest non-manual run to compute the next one (`airflow db
# clean` keeps it for the same reason); onboarding runs are all manual and all archived.
KEEP_LAST_EXCLUDED_RUN_TYPES = ("manual",)


@dataclass(frozen=True)
class Node:
    """A table of a root's tree and the foreign key linking it to its parent table."""

    table: str
    parent: str | None = None
    columns: tuple[str, ...] = ()  # in this table ...
    parent_columns: tuple[str, ...] = ()  # ... referencing these of the parent


@dataclass(frozen=True)
class Root:
    """A kind of root row: which are old enough (and finished), and the tree under them."""

    table: str
    age: Callable[[sa.Table], sa.ColumnElement]
    eligible: Callable[[sa.Table, sa.MetaData, datetime], sa.ColumnElement]
    keep_last: bool = False


def _coalesce(*names: str) -> Callable[[sa.Table], sa.ColumnElement]:
    return lambda t: sa.func.coalesce(*(t.c[name] for name in names))


def _dag_run_eligible(t: sa.Table, md: sa.MetaData, cutoff: datetime) -> sa.ColumnElement:
    # end_date first; a run that never started (no start_date, which `airflow db clean`
    # never cleans) still has run_after, which Airflow 3 always sets.
    return sa.and_(t.c.state.in_(TERMINAL_STATES), _coalesce("end_date", "start_date", "run_after")(t) < cutoff)


def _asset_event_eligible(t: sa.Table, md: sa.MetaData, cutoff: datetime) -> sa.ColumnElement:
    # An event a newer run consumed stays until that run is archived: deleting it would
    # cascade into that run's dagrun_asset_event row.
    link = md.tables["dagrun_asset_event"]
    return sa.and_(t.c.timestamp < cutoff, ~sa.exists().where(link.c.event_id == t.c.id))


def _job_eligible(t: sa.Table, md: sa.MetaData, cutoff: datetime) -> sa.ColumnElement:
    return sa.and_(
        sa.or_(t.c.state.is_(None), t.c.state != "running"),
        _coalesce("latest_heartbeat", "end_date", "start_date")(t) < cutoff,
    )


def _time_eligible(column: str) -> Callable[[sa.Table, sa.MetaData, datetime], sa.ColumnElement]:
    return lambda t, md, cutoff: t.c[column] < cutoff


# Order matters: DAG runs first, so the asset events they consumed become free to go.
ROOTS: tuple[Root, ...] = (
    Root("dag_run", _coalesce("end_date", "start_date", "run_after"), _dag_run_eligible, keep_last=True),
    Root("asset_event", lambda t: t.c.timestamp, _asset_event_eligible),
    Root("partitioned_asset_key_log", lambda t: t.c.created_at, _time_eligible("created_at")),
    Root("job", _coalesce("latest_heartbeat", "end_date", "start_date"), _job_eligible),
    Root("log", lambda t: t.c.dttm, _time_eligible("dttm")),
)


def tree(md: sa.MetaData, root: str) -> tuple[Node, ...]:
    """The root table and every table that references it, transitively; parents first."""
    nodes = [Node(root)]
    seen = {root}
    index = 0
    while index < len(nodes):
        parent = nodes[index].table
        index += 1
        for table in sorted(md.tables.values(), key=lambda t: t.name):
            if table.name in seen:
                continue
            for fk in sorted(table.foreign_key_constraints, key=lambda f: f.name if isinstance(f.name, str) else ""):
                if fk.referred_table.name != parent:
                    continue
                nodes.append(
                    Node(
                        table.name,
                        parent,
                        tuple(c.name for c in fk.columns),
                        tuple(e.column.name for e in fk.elements),
                    )
                )
                seen.add(table.name)
                break
    return tuple(nodes)
