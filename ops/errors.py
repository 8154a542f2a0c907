"""Errors of the operator tools.

OpsError (an `onboarding.errors.OnboardingError`)
    an operator command could not do what was asked; the message says what to fix
"""

from __future__ import annotations

from onboarding.errors import OnboardingError


class OpsError(OnboardingError):
    """An operator command failed; the message names what to check."""
