"""Errors of the local stack.

StackError (an `onboarding.errors.OnboardingError`)
    a component could not be prepared, started or reached; the message says which
"""

from onboarding.errors import OnboardingError


class StackError(OnboardingError):
    """A part of the local stack failed; the message includes what to look at."""
