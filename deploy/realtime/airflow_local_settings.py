"""Realtime instance: faster Param checks, a warm execution API, the audit log off the event
loop, `now()` to the millisecond on SQLite, warm task forks.

Airflow imports this module once in every process of the instance (`airflow.settings` finds
it in `$AIRFLOW_HOME/config/`, where stack/instance.py and the image copy it). The logic,
and the one check of which Airflow releases each adjustment was proven on, is the
`airflow_adapter` package (`airflow_adapter.local_settings`): this file stays where Airflow
looks for it and only calls it.

Airflow copies every name of this module not starting with `__` into `airflow.settings` (and
treats cluster-policy names as policies) unless `__all__` names them; `__all__` is empty so
that none of ours can shadow its own.
"""

import sys

from airflow_adapter.local_settings import configure

__all__: list[str] = []

configure(sys.argv)
