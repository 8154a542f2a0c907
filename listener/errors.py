"""Errors of the listener.

ListenerError (an `onboarding.errors.OnboardingError`)
    the base of errors raised by the listener itself

Calls to Airflow raise the shared `onboarding.errors.AirflowError` family
(`AirflowUnavailable`: retry later; `AirflowRejected`: dead-letter), re-exported here.
"""

from __future__ import annotations

from onboarding.errors import AirflowError, AirflowRejected, AirflowUnavailable, OnboardingError

__all__ = ["AirflowError", "AirflowRejected", "AirflowUnavailable", "ListenerError"]


class ListenerError(OnboardingError):
    """Base class of every error raised by the listener."""
