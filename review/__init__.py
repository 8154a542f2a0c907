"""The review queue: every `review` decision opens a case that a person decides; the final
decision reaches the app on the same key, channel and stream as the provisional one."""

from review.errors import CaseConflict, CaseNotFound, ReviewError
from review.store import Case, Decided, HistoryEntry, QueueStats, ReviewQueue, State, final_decision

__all__ = [
    "Case",
    "CaseConflict",
    "CaseNotFound",
    "Decided",
    "HistoryEntry",
    "QueueStats",
    "ReviewError",
    "ReviewQueue",
    "State",
    "final_decision",
]
