"""Errors of the risk package.

RiskError (an `onboarding.errors.OnboardingError`)
 ├── ModelError      a model artifact is missing, damaged, untrusted or does not fit the schema
 ├── StageFailed     a step of the onboarding pipeline raised (the applicant gets `review`)
 └── MissingParams   an onboarding run was not triggered with a signup event as its conf
"""

from __future__ import annotations

from onboarding.errors import OnboardingError
from onboarding.keys import ONBOARDING_DAG_ID


class RiskError(OnboardingError):
    """Base class of every error raised by the risk package."""


class ModelError(RiskError):
    """A model artifact cannot be used; the message says which and what to do."""


class StageFailed(RiskError):
    """A step of the pipeline raised; says which one, so the applicant's `review` says why."""

    def __init__(self, stage: str, error: BaseException) -> None:
        self.stage = stage
        super().__init__(f"stage {stage!r} failed: {type(error).__name__}: {error}"[:500])


class MissingParams(RiskError, ValueError):
    """A run has no params: it was not triggered with a signup event as its conf."""

    def __init__(self, run_id: str | None) -> None:
        super().__init__(
            f"run {run_id!r} has no params: trigger the {ONBOARDING_DAG_ID} DAG "
            "with a validated signup event as its conf"
        )
