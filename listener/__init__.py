"""The signup listener: consumes the signups stream and triggers one onboarding run per event."""

from listener.consumer import Listener
from listener.errors import ListenerError
from listener.metrics import ListenerMetrics
from listener.settings import ListenerSettings

__all__ = [
    "Listener",
    "ListenerError",
    "ListenerMetrics",
    "ListenerSettings",
]
