"""Sample signups for demos, tests and benchmarks: real applicants from the credit data set,
with jittered amounts, as complete signup events."""

from __future__ import annotations

import random
from functools import cache
from typing import Any

from onboarding.publisher import signup_event
from risk.model import load_dataset


@cache
def _sample_pool(dataset: str | None = None) -> tuple[dict[str, Any], ...]:
    return tuple(load_dataset(dataset).applications)


def sample_application(rng: random.Random | None = None, dataset: str | None = None) -> dict[str, Any]:
    """A realistic application: a real applicant from the credit data (of a data set's
    contract, default German credit), with jittered amounts. Both contracts have these three
    fields."""
    rng = rng or random.Random()
    application = dict(rng.choice(_sample_pool(dataset)))
    application["credit_amount"] = max(250, round(application["credit_amount"] * rng.uniform(0.9, 1.1)))
    application["duration_months"] = max(4, min(72, application["duration_months"] + rng.randint(-3, 3)))
    application["age_years"] = max(19, min(75, application["age_years"] + rng.randint(-2, 2)))
    return application


def new_signup(
    user_id: str | None = None,
    application: dict[str, Any] | None = None,
    event_id: str | None = None,
    rng: random.Random | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """A complete, valid signup event (as a dict) with fresh ids where none are given."""
    if application is None:
        application = sample_application(rng, dataset)
    return signup_event(application, user_id, event_id)
