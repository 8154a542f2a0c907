"""Decision events: what the app reads back on the `decisions` stream, and the one way to write one.

Publishing is idempotent per event id: a Redis Function sets a marker key and appends to the
stream in one atomic step, so a retried task or a failure handler racing the normal path
can never produce a second decision for the same signup. The same step stores the decision
under a per-event key and announces it on that key's Pub/Sub channel, so an app waits for
one decision in O(1) (`wait_for_decision`) instead of scanning the stream. The contract is
onboarding/schemas/decision.v1.json; docs/integration.md says how apps read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import redis

from onboarding.functions import fcall
from onboarding.keys import (
    APP_FEED_MAXLEN,
    DECISION_KEY_TTL_S,
    MARKER_TTL_S,
    REVIEW_DEADLINE_S,
    app_feed_stream,
    decision_key,
    decision_records_stream,
    marker_key,
    review_case_key,
    review_history_key,
    review_queue_key,
)
from onboarding.settings import APP_NAME
from onboarding.streams import live_entries, payload

DECISION_SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).parent / "schemas"

# The marker is set only after XADD succeeded: a failed append leaves no marker behind
# that would make every later attempt think the decision was out. The per-event key and
# the announcement follow in the same step (the `publish_decision` Redis Function,
# onboarding/functions/onboarding.lua): nobody sees one without the others. A `review`
# opens its review case in the same step (review/store.py works the queue).


@cache
def decision_schema(version: int = DECISION_SCHEMA_VERSION) -> dict[str, Any]:
    """The JSON Schema of a decision event of this version (onboarding/schemas/decision.v1.json)."""
    return json.loads((SCHEMA_DIR / f"decision.v{version}.json").read_text(encoding="utf-8"))


def _rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True  # `type` reports it
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def decision_errors(data: Any, version: int = DECISION_SCHEMA_VERSION) -> list[str]:
    """Where `data` breaks the decision contract (empty: it keeps it), date-times checked."""
    from jsonschema import Draft202012Validator, FormatChecker

    checker = FormatChecker(formats=())
    checker.checks("date-time")(_rfc3339)
    validator = Draft202012Validator(decision_schema(version), format_checker=checker)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(event)'}: {e.message}" for e in validator.iter_errors(data)]


# A decision's `error` starts with this when the task refused the model version in service
# (risk.integrity: unsigned, another key, or a file changed after signing); the SLA service
# counts them (onboarding_model_integrity_failures_total) and an alert fires.
MODEL_INTEGRITY_ERROR_PREFIX = "model integrity:"


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
    # None: derived (a `review` is provisional, approve/decline final). A reviewer's final
    # decision sets both (decision.v1.json: final, review).
    final: bool | None = None
    review: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.final is None:
            self.final = self.decision != "review"

    @property
    def is_final(self) -> bool:
        return bool(self.final)

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
            "final": self.is_final,
            **({"review": self.review} if self.review is not None else {}),
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
            final=data.get("final"),
            review=data.get("review"),
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
    decision_ttl_s: int = DECISION_KEY_TTL_S,
    review_deadline_s: float = REVIEW_DEADLINE_S,
    record: dict[str, Any] | None = None,
    app: str | None = None,
    app_feed_maxlen: int = APP_FEED_MAXLEN,
) -> tuple[bool, str]:
    """Append the decision unless one was already published for this event id, store it
    under its per-event key (`decision_ttl_s`) and announce it on that key's channel; a
    `review` opens its review case, due `review_deadline_s` from now; `record` (the decision
    record, risk/evidence.py) is appended to `<decisions>:records` in the same atomic step,
    with the decision's `published_at`. `app`: the signup came from that app's intake (the
    run's `app` param, set by the listener from the forwarded entry): the decision is also
    appended to the app's feed `<decisions>:app:<app>` (`MAXLEN ~ app_feed_maxlen`), and a
    `review`'s case keeps the app for the reviewer's final decision, in the same step.

    Returns (published_now, stream_entry_id). Sets `published_at` just before writing.
    """
    if app is not None and not APP_NAME.fullmatch(app):
        raise ValueError(f"app {app!r} must match {APP_NAME.pattern}")
    published_at = event.timestamps.setdefault("published_at", utc_now())
    payload = json.dumps(event.to_dict(), separators=(",", ":"))
    keys = (
        stream,
        marker_key(stream, event.event_id),
        decision_key(stream, event.event_id),
        review_case_key(stream, event.event_id),
        review_queue_key(stream),
        review_history_key(stream),
        *((decision_records_stream(stream),) if record is not None or app is not None else ()),
        *((app_feed_stream(stream, app),) if app is not None else ()),
    )
    deadline = datetime.fromisoformat(published_at).timestamp() + review_deadline_s
    why = f"automated assessment unavailable: {event.error}" if event.error else f"borderline score {event.score}"
    args: list[Any] = [
        payload,
        marker_ttl_s,
        event.event_id,
        decision_ttl_s,
        event.decision,
        event.user_id,
        published_at,
        repr(deadline),
        why[:500],
    ]
    if record is not None:
        args.append(
            json.dumps({**record, "timestamps": {**record.get("timestamps", {}), "published_at": published_at}})
        )
    if app is not None:  # the feed's arguments follow the record's place ('' for no record)
        args += [*(() if record is not None else ("",)), app_feed_maxlen, app]
    created, entry_id = fcall(client, "publish_decision", keys, args)
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


def get_decision(client: redis.Redis, stream: str, event_id: str) -> DecisionEvent | None:
    """The decision of one event, if published within the per-event key's lifetime: one GET."""
    value = client.get(decision_key(stream, event_id))
    return DecisionEvent.from_dict(json.loads(value)) if value else None


def wait_for_decision(client: redis.Redis, stream: str, event_id: str, timeout_s: float) -> DecisionEvent | None:
    """Block until the decision for `event_id` is published, or time out (None).

    Subscribes to the event's channel first, then reads its key: a decision published
    before the call is found by the read, one published after it arrives on the channel,
    and none falls between the two. Costs O(1) whatever the stream holds."""
    import time

    channel = decision_key(stream, event_id)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(channel)
        deadline = time.monotonic() + timeout_s
        found = get_decision(client, stream, event_id)
        while found is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # A message lost to a reconnect would still have left the key behind.
                return get_decision(client, stream, event_id)
            message = pubsub.get_message(timeout=min(remaining, 1.0))
            if message is not None and message.get("type") == "message":
                found = DecisionEvent.from_dict(json.loads(message["data"]))
        return found
    finally:
        pubsub.close()
