"""The signup listener: consumes the signups stream and triggers one onboarding run per event."""

from listener.airflow import AirflowClient, TriggerOutcome, run_id_for
from listener.consumer import Listener
from listener.errors import AirflowError, AirflowRejected, AirflowUnavailable, ListenerError
from listener.metrics import ListenerMetrics
from listener.settings import AirflowSettings, ListenerSettings

__all__ = [
    "AirflowClient",
    "AirflowError",
    "AirflowRejected",
    "AirflowSettings",
    "AirflowUnavailable",
    "Listener",
    "ListenerError",
    "ListenerMetrics",
    "ListenerSettings",
    "TriggerOutcome",
    "run_id_for",
]
