"""Refusals: the answer to a signup the listener refused (refusal.v1.json).

A refused signup is dead-lettered for the operators, and answered for the app on the same
per-event key and Pub/Sub channel a decision uses, in the same MULTI transaction as the dead
letter: the app's `wait()` returns a refusal with its reason within the round trip, instead
of timing out. A refusal is never appended to the decisions stream (that stream holds
decisions only), never replaces a decision that is out (the function checks the decision's
once-only marker first), and is not written for `event_id_reused` (the key belongs to the
first signup that used the id; its decision is the answer on it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from redis.client import Pipeline

from onboarding import keys
from onboarding.functions import fcall

REFUSAL_SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).parent / "schemas"

# Refused for a reason on the service's side: operators replay it and a decision follows.
RETRYABLE = frozenset({"max_deliveries", "internal_error"})
# The key is the first signup's: no refusal is written over it.
NOT_ANSWERED = frozenset({"event_id_reused"})

# What a person should read first, by reason code; the detail (field and rule) follows.
_SUMMARY = {
    "oversize": "The signup is larger than the service accepts",
    "too_deep": "The signup is nested too deeply to be a signup event",
    "not_json": "The signup is not valid UTF-8 JSON",
    "not_an_object": "The signup is not a JSON object",
    "missing_payload": "The stream entry has no payload field",
    "unknown_schema_version": "The signup's schema_version is not supported",
    "missing_field": "A required field is missing",
    "unknown_field": "The signup has a field the contract does not define",
    "wrong_type": "A field has the wrong type",
    "out_of_range": "A number is out of its allowed range",
    "invalid_value": "A field has a value the contract does not allow",
    "invalid_timestamp": "occurred_at is not an RFC 3339 date-time with a time zone",
    "rejected_by_airflow": "The decision service refused the application's values",
    "max_deliveries": "The service could not process the signup; the operators will replay it",
    "internal_error": "The service failed on this signup; the operators will replay it",
}


@cache
def refusal_schema(version: int = REFUSAL_SCHEMA_VERSION) -> dict[str, Any]:
    """The JSON Schema of a refusal (onboarding/schemas/refusal.v1.json)."""
    return json.loads((SCHEMA_DIR / f"refusal.v{version}.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Refusal:
    """Why a signup was refused, as the app reads it."""

    event_id: str
    user_id: str | None
    reason: str
    message: str
    refused_at: str

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "refusal",
            "schema_version": REFUSAL_SCHEMA_VERSION,
            "event_id": self.event_id,
            "user_id": self.user_id,
            "reason": self.reason,
            "message": self.message,
            "retryable": self.retryable,
            "refused_at": self.refused_at,
        }


def message_for(reason: str, detail: str) -> str:
    """A sentence for a person: what is wrong, where, and what to do."""
    summary = _SUMMARY.get(reason, "The signup was refused")
    action = "" if reason in RETRYABLE else "; fix the signup and send it again (the same event_id may be reused)"
    text = f"{summary}: {detail}" if detail else summary
    return (text[: 500 - len(action)] + action)[:500]


def answer_refusal(
    pipe: Pipeline,
    signups_stream: str,
    decisions_stream: str,
    refusal: Refusal,
    ttl_s: int,
    app: str | None = None,
    feed_maxlen: int = keys.APP_FEED_MAXLEN,
) -> None:
    """Queue the refusal's answer on `pipe` (the dead letter's MULTI): written under the event's
    decision key and announced on its channel, unless a decision is out or the key belongs
    to another signup (module docstring). For an app's signup (`app`, the forwarded entry's
    app; the event id is then `<app>:<event id>`) the same answer is appended to the app's
    refusals feed `<decisions>:app:<app>:refusals`, capped at `MAXLEN ~ feed_maxlen`."""
    if refusal.reason in NOT_ANSWERED:
        return
    payload = json.dumps(refusal.to_dict(), separators=(",", ":"), ensure_ascii=False)
    # The `answer_refusal` Redis Function (onboarding/functions/onboarding.lua): nothing is
    # written when the decision is out, nor - for a refusal of the app's content - when a
    # valid signup with this id was accepted (its fingerprint exists): a malformed entry
    # carrying someone else's event id must not answer that signup's waiting app.
    feed = [keys.app_refusals_stream(decisions_stream, app)] if app else []
    fcall(
        pipe,
        "answer_refusal",
        [
            keys.marker_key(decisions_stream, refusal.event_id),
            keys.decision_key(decisions_stream, refusal.event_id),
            keys.fingerprint_key(signups_stream, refusal.event_id),
            *feed,
        ],
        [
            payload,
            ttl_s,
            "0" if refusal.retryable else "1",
            *([feed_maxlen, app, decisions_stream, refusal.event_id] if app else []),
        ],
    )
