"""Errors shared by every component.

OnboardingError
 ├── ConfigError     an environment variable has a value that cannot be used
 └── InvalidEvent    a signup event breaks its contract (the reason says how)
"""

from __future__ import annotations


class OnboardingError(Exception):
    """Base class of the shared errors."""


class ConfigError(OnboardingError):
    """A setting is invalid; the message names the variable and its value."""


class InvalidEvent(OnboardingError):
    """A signup event was rejected. `reason` is a short code, `detail` says what to fix."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")
