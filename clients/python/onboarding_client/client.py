"""The client: the service's Redis contract (docs/integration.md) in typed calls.

Writing: `XADD <signups> * payload <signup JSON>`.
Reading one decision: the key `<decisions>:event:<event_id>` holds it (JSON) for the
decisions stream's retention, and the publish step announces it on the Pub/Sub channel of
the same name, in the same atomic step. `wait` subscribes first, then reads the key: a
decision published before the call is read, one published after arrives on the channel.
Reading all decisions: the `<decisions>` stream through the app's own consumer group.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import redis
import redis.asyncio as aioredis

SCHEMA_VERSION = 1
OUTCOMES = ("approve", "review", "decline")
EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:~+-]{0,127}$")

Outcome = Literal["approve", "review", "decline"]


class ContractError(ValueError):
    """A signup the service would refuse, or a decision this client cannot read."""


def new_event_id() -> str:
    """A fresh event id. Store it with the application before submitting: a retry with the
    same id is recognised and decided once."""
    return f"evt-{uuid.uuid4().hex}"


def decision_key(decisions_stream: str, event_id: str) -> str:
    """The key (and Pub/Sub channel) of one event's decision."""
    return f"{decisions_stream}:event:{event_id}"


def signup_payload(
    application: Mapping[str, Any], user_id: str, event_id: str, occurred_at: datetime | None = None
) -> str:
    """The signup event as the stream carries it (signup.v1.json). Checks what can be checked
    without the schema; the service validates the rest and dead-letters with a reason."""
    if not EVENT_ID.match(event_id):
        raise ContractError(f"event_id {event_id!r}: 1-128 characters of letters, digits and . _ : ~ + -")
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 128:
        raise ContractError("user_id: a string of 1-128 characters")
    when = occurred_at or datetime.now(UTC)
    if when.tzinfo is None:
        raise ContractError("occurred_at: a time zone is required")
    event = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "user_id": user_id,
        "occurred_at": when.isoformat(timespec="milliseconds"),
        "application": dict(application),
    }
    try:
        return json.dumps(event, separators=(",", ":"), allow_nan=False)
    except ValueError as err:
        raise ContractError(f"application: {err}") from None


@dataclass(frozen=True)
class ReasonCode:
    code: str
    text: str
    contribution: float | None


@dataclass(frozen=True)
class Decision:
    """One decision (decision.v1.json). Unknown properties are kept in `raw`, not refused."""

    event_id: str
    user_id: str
    outcome: Outcome
    score: float | None
    reason_codes: tuple[ReasonCode, ...]
    model_version: str | None
    run_id: str | None
    error: str | None
    timestamps: Mapping[str, str]
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: str | bytes) -> Decision:
        try:
            raw = json.loads(data)
        except ValueError as err:
            raise ContractError(f"a decision that is not JSON: {err}") from None
        if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
            version = raw.get("schema_version") if isinstance(raw, dict) else None
            raise ContractError(f"decision schema_version {version!r}: this client reads {SCHEMA_VERSION}")
        if raw.get("decision") not in OUTCOMES:
            raise ContractError(f"decision {raw.get('decision')!r} is none of {OUTCOMES}")
        return cls(
            event_id=raw["event_id"],
            user_id=raw["user_id"],
            outcome=raw["decision"],
            score=raw.get("score"),
            reason_codes=tuple(
                ReasonCode(r["code"], r["text"], r.get("contribution")) for r in raw.get("reason_codes") or []
            ),
            model_version=raw.get("model_version"),
            run_id=raw.get("run_id"),
            error=raw.get("error"),
            timestamps=dict(raw.get("timestamps") or {}),
            raw=raw,
        )


@dataclass
class FeedItem:
    """A decision from the app's consumer group; `ack()` once it is handled (unacknowledged
    ones are delivered again to this consumer after a restart)."""

    entry_id: str
    decision: Decision
    _ack: Any = field(repr=False)

    def ack(self) -> None:
        self._ack(self.entry_id)


@dataclass
class AsyncFeedItem:
    """`FeedItem` of the asyncio client: `await item.ack()`."""

    entry_id: str
    decision: Decision
    _ack: Any = field(repr=False)

    async def ack(self) -> None:
        await self._ack(self.entry_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(reply: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """The entries of an XREADGROUP reply on one stream (RESP2), ids as text."""
    if not reply:
        return []
    return [(_text(entry_id), fields or {}) for entry_id, fields in reply[0][1]]


class OnboardingClient:
    """Synchronous client. `redis_client` must use the `app` ACL user (or broader)."""

    def __init__(
        self, redis_client: redis.Redis, signups_stream: str = "signups", decisions_stream: str = "decisions"
    ) -> None:
        self.redis = redis_client
        self.signups_stream = signups_stream
        self.decisions_stream = decisions_stream

    @classmethod
    def from_url(cls, url: str, **streams: str) -> OnboardingClient:
        return cls(redis.Redis.from_url(url), **streams)

    def close(self) -> None:
        self.redis.close()

    def submit(
        self,
        application: Mapping[str, Any],
        *,
        user_id: str,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> str:
        """Publish a signup; returns its event id. Submitting the same event id again is safe
        (the service decides it once), so retry with the id you stored."""
        event_id = event_id or new_event_id()
        self.redis.xadd(self.signups_stream, {"payload": signup_payload(application, user_id, event_id, occurred_at)})
        return event_id

    def get(self, event_id: str) -> Decision | None:
        """The decision, if it is out (one GET)."""
        value = self.redis.get(decision_key(self.decisions_stream, event_id))
        return Decision.from_json(value) if value else None

    def wait(self, event_id: str, timeout_s: float) -> Decision | None:
        """Block until the decision is out, or `timeout_s` passes (None)."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(decision_key(self.decisions_stream, event_id))
            deadline = time.monotonic() + timeout_s
            found = self.get(event_id)
            while found is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self.get(event_id)  # a message lost to a reconnect left the key
                message = pubsub.get_message(timeout=min(remaining, 1.0))
                if message is not None and message["type"] == "message":
                    found = Decision.from_json(message["data"])
            return found
        finally:
            pubsub.close()

    def feed(
        self, group: str, consumer: str, *, start: str = "$", block_s: float = 5.0, count: int = 100
    ) -> Iterator[FeedItem]:
        """Every decision published after the group was created (`start`: "$" new ones, "0"
        all the stream holds), through the app's consumer group: first what this consumer
        was given but did not acknowledge, then new ones. The group exists when this returns;
        the iterator runs until the caller stops."""
        try:
            self.redis.xgroup_create(self.decisions_stream, group, id=start, mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        return self._feed(group, consumer, block_s, count)

    def _feed(self, group: str, consumer: str, block_s: float, count: int) -> Iterator[FeedItem]:
        def ack(entry_id: str) -> None:
            self.redis.xack(self.decisions_stream, group, entry_id)

        cursor = "0"  # own pending entries first
        while True:
            reply = self.redis.xreadgroup(
                group, consumer, {self.decisions_stream: cursor}, count=count, block=int(block_s * 1000)
            )
            entries = _entries(reply)
            if cursor != ">":  # walking this consumer's pending entries, oldest first
                if not entries:
                    cursor = ">"
                    continue
                cursor = entries[-1][0]
            for entry_id, fields in entries:
                if not fields:  # trimmed while pending: nothing left to read
                    ack(entry_id)
                    continue
                yield FeedItem(entry_id, Decision.from_json(fields[b"payload"]), ack)


class AsyncOnboardingClient:
    """The same on redis.asyncio."""

    def __init__(
        self, redis_client: aioredis.Redis, signups_stream: str = "signups", decisions_stream: str = "decisions"
    ) -> None:
        self.redis = redis_client
        self.signups_stream = signups_stream
        self.decisions_stream = decisions_stream

    @classmethod
    def from_url(cls, url: str, **streams: str) -> AsyncOnboardingClient:
        return cls(aioredis.Redis.from_url(url), **streams)

    async def close(self) -> None:
        await self.redis.aclose()

    async def submit(
        self,
        application: Mapping[str, Any],
        *,
        user_id: str,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> str:
        event_id = event_id or new_event_id()
        payload = signup_payload(application, user_id, event_id, occurred_at)
        await self.redis.xadd(self.signups_stream, {"payload": payload})
        return event_id

    async def get(self, event_id: str) -> Decision | None:
        value = await self.redis.get(decision_key(self.decisions_stream, event_id))
        return Decision.from_json(value) if value else None

    async def wait(self, event_id: str, timeout_s: float) -> Decision | None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(decision_key(self.decisions_stream, event_id))
            deadline = time.monotonic() + timeout_s
            found = await self.get(event_id)
            while found is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return await self.get(event_id)
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=min(remaining, 1.0))
                if message is not None and message["type"] == "message":
                    found = Decision.from_json(message["data"])
            return found
        finally:
            await pubsub.aclose()

    async def feed(
        self, group: str, consumer: str, *, start: str = "$", block_s: float = 5.0, count: int = 100
    ) -> AsyncIterator[AsyncFeedItem]:
        """As `OnboardingClient.feed`: the group exists when this returns."""
        try:
            await self.redis.xgroup_create(self.decisions_stream, group, id=start, mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        return self._feed(group, consumer, block_s, count)

    async def _feed(self, group: str, consumer: str, block_s: float, count: int) -> AsyncIterator[AsyncFeedItem]:
        async def ack(entry_id: str) -> None:
            await self.redis.xack(self.decisions_stream, group, entry_id)

        cursor = "0"
        while True:
            reply = await self.redis.xreadgroup(
                group, consumer, {self.decisions_stream: cursor}, count=count, block=int(block_s * 1000)
            )
            entries = _entries(reply)
            if cursor != ">":
                if not entries:
                    cursor = ">"
                    continue
                cursor = entries[-1][0]
            for entry_id, fields in entries:
                if not fields:
                    await ack(entry_id)
                    continue
                yield AsyncFeedItem(entry_id, Decision.from_json(fields[b"payload"]), ack)
