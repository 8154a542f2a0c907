"""The review queue's errors.

ReviewError            anything the review queue refuses (derives from OnboardingError)
 ├── CaseNotFound      no such case (never opened, or expired after its retention)
 └── CaseConflict      the case is held or was decided by someone else
"""

from __future__ import annotations

from onboarding.errors import OnboardingError


class ReviewError(OnboardingError):
    """The review queue refused a request; the message says why."""


class CaseNotFound(ReviewError):
    """No review case with this id."""

    def __init__(self, case_id: str) -> None:
        self.case_id = case_id
        super().__init__(f"no review case {case_id!r}")


class CaseConflict(ReviewError):
    """Another reviewer holds or decided the case."""

    def __init__(self, case_id: str, why: str) -> None:
        self.case_id = case_id
        super().__init__(f"case {case_id!r} {why}")
