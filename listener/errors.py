"""Errors of the listener.

ListenerError
 └── AirflowError
      ├── AirflowUnavailable   refused, timed out, 5xx, auth or DAG not ready: retry later
      └── AirflowRejected      Airflow refused this run's input (400/422): retrying cannot help
"""

from __future__ import annotations


class ListenerError(Exception):
    """Base class of every error raised by the listener."""


class AirflowError(ListenerError):
    """A call to the realtime Airflow's REST API failed."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


class AirflowUnavailable(AirflowError):
    """The call may succeed later; the entry stays pending and is retried with backoff."""


class AirflowRejected(AirflowError):
    """Airflow rejected the run's input; the event goes to the dead-letter stream."""
