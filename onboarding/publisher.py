"""Publishing signups: what a product app (or a demo) calls to ask for a decision."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import redis

from onboarding.schema import SignupEvent, validate_signup


def signup_event(
    application: dict[str, Any],
    user_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A complete signup event (as a dict) for an application, with fresh ids where none are given."""
    return {
        "schema_version": 1,
        "event_id": event_id or f"evt-{uuid.uuid4().hex}",
        "user_id": user_id or f"user-{uuid.uuid4().hex[:12]}",
        "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "application": application,
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
