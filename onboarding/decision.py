"""Decision events: what the app reads back on the `decisions` stream, and the one way to write one.

Publishing is idempotent per event id: a Lua script sets a marker key and appends to the
stream in one atomic step, so a retried task or a failure handler racing the normal path
can never produce a second decision for the same signup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from onboarding.keys import MARKER_TTL_S, marker_key
from onboarding.streams import live_entries, payload, xread_entries

DECISION_SCHEMA_VERSION = 1

# The marker is set only after XADD succeeded: a failed append leaves no marker behind
# that would make every later attempt think the decision was out.
_PUBLISH_ONCE = """
local existing = redis.call('GET', KEYS[2])
if existing then
  return {0, existing}
end
local id = redis.call('XADD', KEYS[1], '*', 'event_id', ARGV[3], 'payload', ARGV[1])
redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
return {1, id}
"""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass
class DecisionEvent:
    """One decision for one signup. Timestamps are RFC 3339 strings, one per stage."""

    event_id: str
    user_id: str
    decision: str
    score: float | None
    reason_codes: list[dict[str, Any]]
    model_version: str | None
    run_id: str | None
    timestamps: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    schema_version: int = DECISION_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "event_id": self.event_id,
            "user_id": self.user_id,
            "decision": self.decision,
            "score": self.score,
            "reason_codes": self.reason_codes,
            "model_version": self.model_version,
            "run_id": self.run_id,
            "error": self.error,
            "timestamps": self.timestamps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecisionEvent:
        return cls(
            event_id=data["event_id"],
            user_id=data["user_id"],
            decision=data["decision"],
            score=data.get("score"),
            reason_codes=list(data.get("reason_codes") or []),
            model_version=data.get("model_version"),
            run_id=data.get("run_id"),
            timestamps=dict(data.get("timestamps") or {}),
            error=data.get("error"),
            schema_version=int(data.get("schema_version", DECISION_SCHEMA_VERSION)),
        )

    def latency_s(self, start: str = "accepted_at", end: str = "published_at") -> float | None:
        """Seconds between two stage timestamps, if both are present."""
        if start not in self.timestamps or end not in self.timestamps:
            return None
        t0 = datetime.fromisoformat(self.timestamps[start])
        t1 = datetime.fromisoformat(self.timestamps[end])
        return (t1 - t0).total_seconds()


def publish_decision(
    client: redis.Redis,
    stream: str,
    event: DecisionEvent,
    marker_ttl_s: int = MARKER_TTL_S,
) -> tuple[bool, str]:
    """Append the decision unless one was already published for this event id.

    Returns (published_now, stream_entry_id). Sets `published_at` just before writing.
    """
    event.timestamps.setdefault("published_at", utc_now())
    payload = json.dumps(event.to_dict(), separators=(",", ":"))
    created, entry_id = client.eval(
        _PUBLISH_ONCE, 2, stream, marker_key(stream, event.event_id), payload, marker_ttl_s, event.event_id
    )
    entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return bool(created), entry


def read_decisions(
    client: redis.Redis, stream: str, after: str = "0-0", count: int = 1000
) -> list[tuple[str, DecisionEvent]]:
    """Decision events after a stream id, oldest first."""
    entries = live_entries(client.xrange(stream, min=f"({after}" if after != "0-0" else "-", count=count))
    out: list[tuple[str, DecisionEvent]] = []
    for entry_id, fields in entries:
        out.append((entry_id, DecisionEvent.from_dict(json.loads(payload(fields)))))
    return out


def wait_for_decision(
    client: redis.Redis, stream: str, event_id: str, timeout_s: float, start_id: str = "0-0"
) -> DecisionEvent | None:
    """Block until the decision for `event_id` appears on the stream, or time out."""
    import time

    deadline = time.monotonic() + timeout_s
    last = start_id
    while True:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            return None
        reply = client.xread({stream: last}, count=100, block=min(remaining_ms, 1000))
        for entry_id, fields in live_entries(xread_entries(reply)):
            last = entry_id
            event = DecisionEvent.from_dict(json.loads(payload(fields)))
            if event.event_id == event_id:
                return event
