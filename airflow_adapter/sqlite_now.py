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
It changes nothing on PostgreSQL, and installs only on an Airflow release it was proven on
(airflow_adapter/versions.py: the comparison it fixes is in Airflow's scheduler queries).
`airflow_adapter.local_settings` installs it in every process of the realtime instance unless
ONBOARDING_SQLITE_NOW_MS is false; tests/unit/test_sqlite_now.py shows the comparison before
and after.
"""

from __future__ import annotations

from typing import Any

from airflow_adapter.versions import ADJUSTMENTS, proven

ENV_VAR = ADJUSTMENTS[__name__].switch  # ONBOARDING_SQLITE_NOW_MS
NOW_MS = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
_installed = False


def install(airflow: str | None = None) -> bool:
    """Render `now()` on SQLite to the millisecond in this process from now on. Idempotent.
    False, and nothing changed, on an Airflow release it was not proven on."""
    global _installed
    if _installed:
        return True
    if not proven(__name__, airflow):
        return False
    from sqlalchemy.ext.compiler import compiles
    from sqlalchemy.sql import functions

    @compiles(functions.now, "sqlite")
    def _now_to_the_millisecond(element: Any, compiler: Any, **kw: Any) -> str:
        return NOW_MS

    _installed = True
    return True
