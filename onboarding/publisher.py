"""Publishing signups: what a product app (or a demo) calls to ask for a decision."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import redis

from onboarding.errors import RedisFull
from onboarding.schema import SignupEvent, validate_signup
from onboarding.settings import DEFAULT_DATASET

FULL_MESSAGE = "Redis is full: maxmemory reached; the signup was not accepted, retry later"


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


def publish_signup(
    client: redis.Redis, stream: str, event: dict[str, Any] | SignupEvent, dataset: str = DEFAULT_DATASET
) -> str:
    """Validate and append a signup event to the stream. Returns the stream entry id.

    Validating here gives the app a clear error at the call site instead of a dead letter
    later; the listener validates again because not every producer uses this function.
    """
    data = event.to_dict() if isinstance(event, SignupEvent) else event
    validate_signup(data, dataset)
    return publish_raw(client, stream, json.dumps(data, separators=(",", ":")))


def publish_raw(client: redis.Redis, stream: str, payload: str | bytes) -> str:
    """Append a payload as is, unvalidated (for tests and replaying dead letters)."""
    with refused_when_full():
        entry_id = client.xadd(stream, {"payload": payload})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def is_out_of_memory(err: redis.RedisError) -> bool:
    """Redis' `OOM command not allowed when used memory > 'maxmemory'`, also when it reaches
    us inside a script's or a transaction's error."""
    return isinstance(err, redis.exceptions.OutOfMemoryError) or (
        isinstance(err, redis.ResponseError) and ("OOM command not allowed" in str(err) or str(err).startswith("OOM"))
    )


@contextmanager
def refused_when_full() -> Iterator[None]:
    """Turn Redis' OOM refusal of a producer's write into `RedisFull` with a clear message
    (noeviction: nothing was written, nothing else was dropped); other errors pass as they are."""
    try:
        yield
    except redis.RedisError as err:
        if is_out_of_memory(err):
            raise RedisFull(f"{FULL_MESSAGE} ({err})") from err
        raise
