"""Publishing signups: what a product app (or a demo) calls to ask for a decision."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from functools import cache
from typing import Any

import redis

from onboarding.schema import SignupEvent, validate_signup


@cache
def _sample_pool() -> tuple[dict[str, Any], ...]:
    from risk.model import load_training_data

    return tuple(load_training_data().applications)


def sample_application(rng: random.Random | None = None) -> dict[str, Any]:
    """A realistic application: a real applicant from the credit data, with jittered amounts."""
    rng = rng or random.Random()
    application = dict(rng.choice(_sample_pool()))
    application["credit_amount"] = max(250, round(application["credit_amount"] * rng.uniform(0.9, 1.1)))
    application["duration_months"] = max(4, min(72, application["duration_months"] + rng.randint(-3, 3)))
    application["age_years"] = max(19, min(75, application["age_years"] + rng.randint(-2, 2)))
    return application


def new_signup(
    user_id: str | None = None,
    application: dict[str, Any] | None = None,
    event_id: str | None = None,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """A complete, valid signup event (as a dict) with fresh ids where none are given."""
    return {
        "schema_version": 1,
        "event_id": event_id or f"evt-{uuid.uuid4().hex}",
        "user_id": user_id or f"user-{uuid.uuid4().hex[:12]}",
        "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "application": application if application is not None else sample_application(rng),
    }


def publish_signup(client: redis.Redis, stream: str, event: dict[str, Any] | SignupEvent) -> str:
    """Validate and append a signup event to the stream. Returns the stream entry id.

    Validating here gives the app a clear error at the call site instead of a dead letter
    later; the listener validates again because not every producer uses this function.
    """
    data = event.to_dict() if isinstance(event, SignupEvent) else event
    validate_signup(data)
    return publish_raw(client, stream, json.dumps(data, separators=(",", ":")))


def publish_raw(client: redis.Redis, stream: str, payload: str | bytes) -> str:
    """Append a payload as is, unvalidated (for tests and replaying dead letters)."""
    entry_id = client.xadd(stream, {"payload": payload})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
