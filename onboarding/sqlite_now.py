"""`now()` on SQLite to the millisecond, so a triggered run is scheduled without waiting for the next second.

Airflow's scheduler picks the runs it may start, and the running runs it examines, with
`DagRun.run_after <= func.now()` (airflow/models/dagrun.py, 3.3.2; also the DAGs due to be
created, airflow/models/dag.py). SQLAlchemy renders `now()` on SQLite as `CURRENT_TIMESTAMP`,
which SQLite gives to the second ('2026-11-30 14:29:10'), while Airflow stores timestamps as
text to the microsecond ('2026-11-30 14:29:10.300000'). SQLite compares them as text, and a
string is greater than its own prefix: a run created at 14:29:10.300 is "after now" until the
clock reaches 14:29:11. On the local stack's default SQLite metadata every triggered run
waited for the next full second, twice (to start, then to have its task scheduled): the
scheduler queued tasks exactly once a second and a decision took 1.2 s at the median against
0.23 s on PostgreSQL, whose `now()` has microseconds (docs/benchmarks.md).

`install()` makes SQLAlchemy render `now()` on SQLite as
`strftime('%Y-%m-%d %H:%M:%f', 'now')`: the same UTC clock and text format, to the millisecond.
It changes nothing on PostgreSQL. `deploy/realtime/airflow_local_settings.py` installs it in
every process of the realtime instance unless ONBOARDING_SQLITE_NOW_MS is false;
tests/unit/test_sqlite_now.py shows the comparison before and after.
"""

from __future__ import annotations

from typing import Any

ENV_VAR = "ONBOARDING_SQLITE_NOW_MS"
NOW_MS = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
_installed = False


def install() -> bool:
    """Render `now()` on SQLite to the millisecond in this process from now on. Idempotent."""
    global _installed
    if _installed:
        return True
    from sqlalchemy.ext.compiler import compiles
    from sqlalchemy.sql import functions

    @compiles(functions.now, "sqlite")
    def _now_to_the_millisecond(element: Any, compiler: Any, **kw: Any) -> str:
        return NOW_MS

    _installed = True
    return True
