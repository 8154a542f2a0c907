"""The client: the service's Redis contract (docs/integration.md) in typed calls.

Writing: `XADD <signups> * payload <signup JSON>`.
Reading one answer: the key `<decisions>:event:<event_id>` holds it (JSON) for the
decisions stream's retention, and the service announces it on the Pub/Sub channel of the
same name, in the same atomic step. `wait` subscribes first, then reads the key: an answer
published before the call is read, one published after arrives on the channel. The answer
is a decision (decision.v1.json), or a refusal (refusal.v1.json, `kind: "refusal"`: the
listener dead-lettered the signup), which `get` and `wait` raise as `Refused`. A `review`
is provisional (`final: false`): the reviewer's final decision later overwrites the key and
is announced on the channel (`wait(..., until_final=True)` waits for it).
Reading all decisions: the `<decisions>` stream through the app's own consumer group; it
holds decisions only (a `review` and, later, its final decision; never a refusal). An app on
its own user also has a refusals feed `<decisions>:app:<name>:refusals`; `answers` reads
both of its streams (decisions and refusals) through its consumer groups.
Per-app users (`app=`, docs/integration.md): an app with its own Redis user `app-<name>`
submits to its own intake stream `<signups>:app:<name>` and the service decides the signup as
`<name>:<event_id>`: the answer is under `<decisions>:event:<name>:<event_id>` (key and
channel), the only answers that user may read; `Decision.event_id` is that service id. Its
feed reads the app's own decision stream `<decisions>:app:<name>` (its signups' decisions
only). Without `app=` the client uses the shared stream and the deprecated shared `app` user.
Validating: `submit` checks the signup against the signup schema shipped in this package
(`schemas/signup.v1.json`, a copy of the service's) before sending, unless `validate=False`.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, Literal

import redis
import redis.asyncio as aioredis
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from redis.typing import KeyT, StreamIdT

SCHEMA_VERSION = 1
OUTCOMES = ("approve", "review", "decline")
# `\Z`, not `$`: Python's `$` also matches before a final newline ("evt-1\n").
EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:~+-]{0,127}\Z")
REFUSAL = "refusal"
# A refusal found under the key whose `refused_at` is this much older than this client's
# latest XADD of the same event id answers an earlier send (the app fixed the signup and
# sent it again with the same id; its decision will replace the refusal). The margin absorbs
# clock skew between the Redis server (the XADD's time) and the listener (`refused_at`).
STALE_REFUSAL_MARGIN_S = 2.0
_REMEMBERED_SENDS = 10_000

Outcome = Literal["approve", "review", "decline"]
FinalOutcome = Literal["approve", "decline"]


class OnboardingClientError(Exception):
    """Base of the errors this package raises (Redis errors are not wrapped, but for a full
    Redis: `ServiceFull`)."""


class ContractError(OnboardingClientError, ValueError):
    """A signup the service would refuse, caught before sending, or an answer this client
    cannot read: a mistake in the app or a version mismatch, not an outcome."""


class Refused(OnboardingClientError):
    """The service refused the signup (it was dead-lettered, never assessed): an outcome,
    not a client bug. `refusal` says why; if `refusal.retryable` is false, fix the
    signup and send it again (the same event id may be reused)."""

    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal
        super().__init__(f"signup {refusal.event_id} refused ({refusal.reason}): {refusal.message}")


class ServiceFull(OnboardingClientError):
    """Redis refused the signup because it is full (its `maxmemory`, policy noeviction):
    nothing was accepted. Retry later with the same event id; the service keeps running."""


@contextmanager
def _full_as_service_full() -> Iterator[None]:
    try:
        yield
    except redis.exceptions.OutOfMemoryError as err:
        raise ServiceFull(
            f"Redis is full: maxmemory reached; the signup was not accepted, retry later ({err})"
        ) from err


def new_event_id() -> str:
    """A fresh event id. Store it with the application before submitting: a retry with the
    same id is recognised and decided once."""
    return f"evt-{uuid.uuid4().hex}"


APP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def intake_stream(signups_stream: str, app: str) -> str:
    """An app's own intake stream (its per-app Redis user may append only there)."""
    return f"{signups_stream}:app:{app}"


def service_event_id(app: str | None, event_id: str) -> str:
    """The id the service decides an app's signup under: `<app>:<event_id>` (no app can use
    another's ids); without an app, the event id itself."""
    return f"{app}:{event_id}" if app else event_id


def _check_app(app: str | None) -> None:
    if app is not None and not APP_NAME.fullmatch(app):
        raise ContractError(f"app {app!r} must match {APP_NAME.pattern}")


def _check_app_event_id(app: str | None, event_id: str) -> None:
    if app and len(service_event_id(app, event_id)) > 128:
        raise ContractError(f"event_id: at most {127 - len(app)} characters for app {app} (the service adds {app}:)")


def app_feed_stream(decisions_stream: str, app: str) -> str:
    """An app's own decision stream: the decisions of its signups (its per-app Redis user may
    read it through its own consumer groups, and nothing else of the decisions)."""
    return f"{decisions_stream}:app:{app}"


def app_refusals_stream(decisions_stream: str, app: str) -> str:
    """An app's own refusals stream: the refusals of its refused signups, appended by the
    service in the same step that answers them on the key (read like the decision feed)."""
    return f"{decisions_stream}:app:{app}:refusals"


def decision_key(decisions_stream: str, event_id: str) -> str:
    """The key (and Pub/Sub channel) of one event's decision."""
    return f"{decisions_stream}:event:{event_id}"


@cache
def signup_schema() -> dict[str, Any]:
    """The signup schema this client validates against: a copy of the service's
    onboarding/schemas/signup.v1.json shipped in the package (a test keeps them identical)."""
    text = resources.files("onboarding_client").joinpath("schemas", "signup.v1.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    # JSON Schema patterns are ECMA-262, where `$` is the end of the text; Python's `$` also
    # matches before a final newline, so "u-1\n" would pass `^...$` here and be refused by
    # the service (which reads the patterns the same way as this).
    if isinstance(instance, str) and not _python_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _python_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"(?<!\\)\$$", r"\\Z", pattern))


_Validator = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})


@cache
def _validator() -> Any:
    return _Validator(signup_schema())


def validate_signup(event: Mapping[str, Any]) -> None:
    """Check a whole signup event against the shipped signup schema; raises `ContractError`
    naming the field and the rule it breaks (the first problem, and how many more)."""
    errors = sorted(
        _validator().iter_errors(dict(event)), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))
    )
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "signup"
        message = first.message if len(first.message) <= 200 else first.message[:200] + "..."
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ContractError(f"{where}: {message} (rule: {first.validator}){more}")
    _check_text(event, "signup")


def _check_text(value: Any, where: str) -> None:
    """Text must be encodable as UTF-8: a lone surrogate is JSON-escaped but the service refuses it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ContractError(f"{where}: text that is not valid Unicode (lone surrogate)") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_text(key, where)
            _check_text(item, str(key) if where == "signup" else f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _check_text(item, where)


def signup_payload(
    application: Mapping[str, Any],
    user_id: str,
    event_id: str,
    occurred_at: datetime | None = None,
    *,
    validate: bool = True,
) -> str:
    """The signup event as the stream carries it (signup.v1.json). The ids, the time zone and
    JSON (no NaN or infinity) are always checked; with `validate` (the default) the whole
    event is checked against the shipped signup schema too. Raises `ContractError`."""
    if not isinstance(event_id, str) or not EVENT_ID.match(event_id):
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
        payload = json.dumps(event, separators=(",", ":"), allow_nan=False)
    except ValueError as err:
        raise ContractError(f"application: {err}") from None
    if validate:
        validate_signup(event)
    return payload


@dataclass(frozen=True)
class ReasonCode:
    code: str
    text: str
    contribution: float | None


@dataclass(frozen=True)
class ReviewInfo:
    """The review case a reviewer's final decision closed (decision.v1.json `review`)."""

    case_id: str
    reviewer_id: str
    reason: str
    decided_at: str
    opened_at: str | None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ReviewInfo:
        try:
            return cls(
                case_id=raw["case_id"],
                reviewer_id=raw["reviewer_id"],
                reason=raw["reason"],
                decided_at=raw["decided_at"],
                opened_at=raw.get("opened_at"),
            )
        except (KeyError, TypeError) as err:
            raise ContractError(f"decision review: {err!r} missing or unreadable") from None


@dataclass(frozen=True)
class Decision:
    """One decision (decision.v1.json). Unknown properties are kept in `raw`, not refused.

    `final` is False on a provisional `review` (a person decides; the final decision, with
    `review` set, follows on the same key, channel and stream) and True otherwise; a
    decision published before the property existed reads as `outcome != "review"`."""

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
    # After `raw`, with defaults: code that built a Decision positionally keeps working.
    final: bool = True
    review: ReviewInfo | None = None

    @classmethod
    def from_json(cls, data: str | bytes) -> Decision:
        """A decision's JSON text; raises `Refused` for a refusal, `ContractError` for anything
        this version cannot read."""
        answer = read_answer(data)
        if isinstance(answer, Refusal):
            raise Refused(answer)
        return answer

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Decision:
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise ContractError(
                f"decision schema_version {raw.get('schema_version')!r}: this client reads {SCHEMA_VERSION}"
            )
        if raw.get("decision") not in OUTCOMES:
            raise ContractError(f"decision {raw.get('decision')!r} is none of {OUTCOMES}")
        final = raw.get("final")
        if final is None:  # published before `final` existed
            final = raw["decision"] != "review"
        review = raw.get("review")
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
            final=bool(final),
            review=ReviewInfo.from_dict(review) if isinstance(review, Mapping) else None,
        )


@dataclass(frozen=True)
class Refusal:
    """The service's answer to a signup it refused (refusal.v1.json): it was dead-lettered
    and never assessed. `reason` is a stable code (docs/integration.md lists them),
    `message` a sentence for a person naming the field and the rule. `retryable`: the
    service's side failed and the operators replay it (a decision follows, keep waiting or
    `get` later); otherwise fix the signup and send it again."""

    event_id: str
    user_id: str | None
    reason: str
    message: str
    retryable: bool
    refused_at: str
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Refusal:
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise ContractError(
                f"refusal schema_version {raw.get('schema_version')!r}: this client reads {SCHEMA_VERSION}"
            )
        try:
            return cls(
                event_id=raw["event_id"],
                user_id=raw.get("user_id"),
                reason=raw["reason"],
                message=raw["message"],
                retryable=bool(raw.get("retryable", False)),
                refused_at=raw["refused_at"],
                raw=raw,
            )
        except KeyError as err:
            raise ContractError(f"refusal without {err.args[0]!r}") from None

    def refused_before(self, epoch_s: float) -> bool:
        """Whether it was refused before `epoch_s` (False when `refused_at` is unreadable)."""
        try:
            return datetime.fromisoformat(self.refused_at).timestamp() < epoch_s
        except (TypeError, ValueError):
            return False


def read_answer(data: str | bytes) -> Decision | Refusal:
    """What the per-event key or channel holds: a decision, or a refusal (`kind: "refusal"`)."""
    try:
        raw = json.loads(data)
    except ValueError as err:
        raise ContractError(f"an answer that is not JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ContractError(f"an answer that is not a JSON object: {type(raw).__name__}")
    if raw.get("kind") == REFUSAL:
        return Refusal.from_dict(raw)
    return Decision.from_dict(raw)


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


@dataclass
class AnswerItem:
    """An answer from the app's consumer groups (`answers`): a `Decision` from the decision
    feed or a `Refusal` from the refusals feed (`stream` says which); `ack()` once handled."""

    entry_id: str
    stream: str
    answer: Decision | Refusal
    _ack: Any = field(repr=False)

    def ack(self) -> None:
        self._ack(self.stream, self.entry_id)


@dataclass
class AsyncAnswerItem:
    """`AnswerItem` of the asyncio client: `await item.ack()`."""

    entry_id: str
    stream: str
    answer: Decision | Refusal
    _ack: Any = field(repr=False)

    async def ack(self) -> None:
        await self._ack(self.stream, self.entry_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


Answer = Decision | Refusal


def _settled(answer: Answer | None, until_final: bool) -> bool:
    """Whether `wait` may stop: a refusal, a decision (a final one, `until_final`)."""
    if answer is None:
        return False
    return isinstance(answer, Refusal) or answer.final or not until_final


def _result(answer: Answer | None, until_final: bool) -> Decision | None:
    if isinstance(answer, Refusal):
        raise Refused(answer)
    if answer is None or (until_final and not answer.final):
        return None
    return answer


class _Sends:
    """When this client last sent each event id (the XADD entry's time, the Redis server's
    clock), for the last `_REMEMBERED_SENDS` ids: a refusal under the key from before that
    send answers an earlier one (see `STALE_REFUSAL_MARGIN_S`) and is not this send's answer."""

    def __init__(self) -> None:
        self._at: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, event_id: str, entry_id: bytes | str) -> None:
        try:
            at = int(_text(entry_id).split("-", 1)[0]) / 1000
        except ValueError:
            return
        with self._lock:
            self._at[event_id] = at
            self._at.move_to_end(event_id)
            while len(self._at) > _REMEMBERED_SENDS:
                self._at.popitem(last=False)

    def current(self, event_id: str, answer: Answer) -> Answer | None:
        with self._lock:
            sent = self._at.get(event_id)
        if isinstance(answer, Refusal) and sent is not None and answer.refused_before(sent - STALE_REFUSAL_MARGIN_S):
            return None
        return answer


def _entries(reply: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """The entries of an XREADGROUP reply on one stream (RESP2), ids as text."""
    if not reply:
        return []
    return [(_text(entry_id), fields or {}) for entry_id, fields in reply[0][1]]


def _stream_entries(reply: Any) -> list[tuple[str, str, dict[bytes, bytes]]]:
    """The entries of an XREADGROUP reply on several streams (RESP2): (stream, id, fields)."""
    return [
        (_text(stream), _text(entry_id), fields or {})
        for stream, entries in reply or []
        for entry_id, fields in entries
    ]


def _answer_of(fields: dict[bytes, bytes]) -> Answer:
    return read_answer(fields[b"payload"])


class _Names:
    """Where a client writes and reads: the streams, its app, its intake and answer keys
    (shared by the synchronous and the asyncio client)."""

    def __init__(self, signups_stream: str, decisions_stream: str, app: str | None) -> None:
        _check_app(app)
        self.signups_stream = signups_stream
        self.decisions_stream = decisions_stream
        self.app = app
        self._sends = _Sends()

    @property
    def _intake(self) -> str:
        return intake_stream(self.signups_stream, self.app) if self.app else self.signups_stream

    def _key(self, event_id: str) -> str:
        return decision_key(self.decisions_stream, service_event_id(self.app, event_id))

    @property
    def feed_stream(self) -> str:
        """The stream `feed` reads: the app's own decision stream with `app=`, else the shared one."""
        return app_feed_stream(self.decisions_stream, self.app) if self.app else self.decisions_stream

    @property
    def answer_streams(self) -> tuple[str, str]:
        """The streams `answers` reads (`app=` only): the app's decision feed and refusals feed."""
        if not self.app:
            raise ContractError("answers needs app=: refusals are fed only to an app on its own user")
        return (self.feed_stream, app_refusals_stream(self.decisions_stream, self.app))


class OnboardingClient(_Names):
    """Synchronous client. `redis_client` must use the `app` ACL user (or broader)."""

    def __init__(
        self,
        redis_client: redis.Redis,
        signups_stream: str = "signups",
        decisions_stream: str = "decisions",
        app: str | None = None,
    ) -> None:
        super().__init__(signups_stream, decisions_stream, app)
        self.redis = redis_client

    @classmethod
    def from_url(cls, url: str, **options: Any) -> OnboardingClient:
        """`options`: signups_stream, decisions_stream, app."""
        return cls(redis.Redis.from_url(url), **options)

    def close(self) -> None:
        self.redis.close()

    def submit(
        self,
        application: Mapping[str, Any],
        *,
        user_id: str,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        validate: bool = True,
    ) -> str:
        """Publish a signup; returns its event id. Submitting the same event id again is safe
        (the service decides it once), so retry with the id you stored. Checked against the
        shipped signup schema first (`ContractError`, nothing sent) unless `validate=False`
        (for an app on a newer schema than this client's copy: the service still validates,
        and answers a bad signup with a refusal)."""
        event_id = event_id or new_event_id()
        _check_app_event_id(self.app, event_id)
        payload = signup_payload(application, user_id, event_id, occurred_at, validate=validate)
        with _full_as_service_full():
            self._sends.record(event_id, self.redis.xadd(self._intake, {"payload": payload}))
        return event_id

    def _read(self, event_id: str) -> Answer | None:
        value = self.redis.get(self._key(event_id))
        return self._sends.current(event_id, read_answer(value)) if value else None

    def get(self, event_id: str) -> Decision | None:
        """The decision, if it is out (one GET); raises `Refused` if the signup was refused.
        A `review` is returned as it is (`final` False) until the reviewer's decision
        replaces it."""
        return _result(self._read(event_id), until_final=False)

    def wait(self, event_id: str, timeout_s: float, *, until_final: bool = False) -> Decision | None:
        """Block until the decision is out, or `timeout_s` passes (None). Raises `Refused` when
        the answer is a refusal. With `until_final`, a provisional `review` does not end the
        wait: the reviewer's final decision does (None if it is not out in time; `get`
        shows the `review` meanwhile)."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self._key(event_id))
            deadline = time.monotonic() + timeout_s
            found = self._read(event_id)
            while not _settled(found, until_final):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    found = self._read(event_id)  # a message lost to a reconnect left the key
                    break
                message = pubsub.get_message(timeout=min(remaining, 1.0))
                if message is not None and message["type"] == "message":
                    found = self._sends.current(event_id, read_answer(message["data"])) or found
            return _result(found, until_final)
        finally:
            pubsub.close()

    def wait_final(self, event_id: str, timeout_s: float) -> Decision | None:
        """`wait(event_id, timeout_s, until_final=True)`: approve or decline, by the model or a reviewer."""
        return self.wait(event_id, timeout_s, until_final=True)

    def feed(
        self, group: str, consumer: str, *, start: str = "$", block_s: float = 5.0, count: int = 100
    ) -> Iterator[FeedItem]:
        """Every decision published after the group was created (`start`: "$" new ones, "0"
        all the stream holds), through the app's consumer group: first what this consumer
        was given but did not acknowledge, then new ones. The group exists when this returns;
        the iterator runs until the caller stops. With `app=` it reads the app's own decision
        stream `<decisions>:app:<name>` (`feed_stream`): its signups' decisions only, a
        reviewer's final ones included; else the shared `<decisions>` stream."""
        try:
            self.redis.xgroup_create(self.feed_stream, group, id=start, mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        return self._feed(group, consumer, block_s, count)

    def _feed(self, group: str, consumer: str, block_s: float, count: int) -> Iterator[FeedItem]:
        stream = self.feed_stream

        def ack(entry_id: str) -> None:
            self.redis.xack(stream, group, entry_id)

        cursor = "0"  # own pending entries first
        while True:
            reply = self.redis.xreadgroup(group, consumer, {stream: cursor}, count=count, block=int(block_s * 1000))
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

    def answers(
        self, group: str, consumer: str, *, start: str = "$", block_s: float = 5.0, count: int = 100
    ) -> Iterator[AnswerItem]:
        """As `feed`, over both of the app's streams (`app=` only): every decision of its
        signups and every refusal (`AnswerItem.answer` is a `Decision` or a `Refusal`), through
        the app's consumer group `group` on each. First this consumer's pending entries of
        each stream, then new ones as they come. The groups exist when this returns."""
        streams = self.answer_streams
        for stream in streams:
            try:
                self.redis.xgroup_create(stream, group, id=start, mkstream=True)
            except redis.ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise
        return self._answers(streams, group, consumer, block_s, count)

    def _answers(
        self, streams: tuple[str, ...], group: str, consumer: str, block_s: float, count: int
    ) -> Iterator[AnswerItem]:
        def ack(stream: str, entry_id: str) -> None:
            self.redis.xack(stream, group, entry_id)

        cursors = dict.fromkeys(streams, "0")  # own pending entries first, stream by stream
        while True:
            pending = {stream: cursor for stream, cursor in cursors.items() if cursor != ">"}
            reply = self.redis.xreadgroup(
                group, consumer, _ids(pending or cursors), count=count, block=None if pending else int(block_s * 1000)
            )
            entries = _stream_entries(reply)
            _advance(cursors, pending, entries)
            for stream, entry_id, fields in entries:
                if not fields:  # trimmed while pending: nothing left to read
                    ack(stream, entry_id)
                    continue
                yield AnswerItem(entry_id, stream, _answer_of(fields), ack)


def _ids(cursors: dict[str, str]) -> dict[KeyT, StreamIdT]:
    """The streams and ids of an XREADGROUP call (typed as redis-py wants them)."""
    return {stream: cursor for stream, cursor in cursors.items()}


def _advance(
    cursors: dict[str, str], pending: dict[str, str], entries: list[tuple[str, str, dict[bytes, bytes]]]
) -> None:
    """After a read of pending entries: each stream's cursor moves past its last entry, or to
    new entries ('>') once its pending ones are all read."""
    last = {stream: entry_id for stream, entry_id, _fields in entries}
    for stream in pending:
        cursors[stream] = last.get(stream, ">")


class AsyncOnboardingClient(_Names):
    """The same on redis.asyncio."""

    def __init__(
        self,
        redis_client: aioredis.Redis,
        signups_stream: str = "signups",
        decisions_stream: str = "decisions",
        app: str | None = None,
    ) -> None:
        super().__init__(signups_stream, decisions_stream, app)
        self.redis = redis_client

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncOnboardingClient:
        return cls(aioredis.Redis.from_url(url), **options)

    async def close(self) -> None:
        await self.redis.aclose()

    async def submit(
        self,
        application: Mapping[str, Any],
        *,
        user_id: str,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        validate: bool = True,
    ) -> str:
        """As `OnboardingClient.submit`."""
        event_id = event_id or new_event_id()
        _check_app_event_id(self.app, event_id)
        payload = signup_payload(application, user_id, event_id, occurred_at, validate=validate)
        with _full_as_service_full():
            self._sends.record(event_id, await self.redis.xadd(self._intake, {"payload": payload}))
        return event_id

    async def _read(self, event_id: str) -> Answer | None:
        value = await self.redis.get(self._key(event_id))
        return self._sends.current(event_id, read_answer(value)) if value else None

    async def get(self, event_id: str) -> Decision | None:
        """As `OnboardingClient.get`: raises `Refused` for a refusal."""
        return _result(await self._read(event_id), until_final=False)

    async def wait(self, event_id: str, timeout_s: float, *, until_final: bool = False) -> Decision | None:
        """As `OnboardingClient.wait`: raises `Refused` for a refusal, None on timeout."""
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._key(event_id))
            deadline = time.monotonic() + timeout_s
            found = await self._read(event_id)
            while not _settled(found, until_final):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    found = await self._read(event_id)
                    break
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=min(remaining, 1.0))
                if message is not None and message["type"] == "message":
                    found = self._sends.current(event_id, read_answer(message["data"])) or found
            return _result(found, until_final)
        finally:
            await pubsub.aclose()

    async def wait_final(self, event_id: str, timeout_s: float) -> Decision | None:
        """`wait(event_id, timeout_s, until_final=True)`."""
        return await self.wait(event_id, timeout_s, until_final=True)

    async def feed(
        self, group: str, consumer: str, *, start: str = "$", block_s: float = 5.0, count: int = 100
    ) -> AsyncIterator[AsyncFeedItem]:
        """As `OnboardingClient.feed` (with `app=`, the app's own decision stream): the group
        exists when this returns."""
        try:
            await self.redis.xgroup_create(self.feed_stream, group, id=start, mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        return self._feed(group, consumer, block_s, count)

    async def _feed(self, group: str, consumer: str, block_s: float, count: int) -> AsyncIterator[AsyncFeedItem]:
        stream = self.feed_stream

        async def ack(entry_id: str) -> None:
            await self.redis.xack(stream, group, entry_id)

        cursor = "0"
        while True:
            reply = await self.redis.xreadgroup(
                group, consumer, {stream: cursor}, count=count, block=int(block_s * 1000)
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

    async def answers(
        self, group: str, consumer: str, *, start: str = "$", block_s: float = 5.0, count: int = 100
    ) -> AsyncIterator[AsyncAnswerItem]:
        """As `OnboardingClient.answers`: decisions and refusals of the app's signups."""
        streams = self.answer_streams
        for stream in streams:
            try:
                await self.redis.xgroup_create(stream, group, id=start, mkstream=True)
            except redis.ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise
        return self._answers(streams, group, consumer, block_s, count)

    async def _answers(
        self, streams: tuple[str, ...], group: str, consumer: str, block_s: float, count: int
    ) -> AsyncIterator[AsyncAnswerItem]:
        async def ack(stream: str, entry_id: str) -> None:
            await self.redis.xack(stream, group, entry_id)

        cursors = dict.fromkeys(streams, "0")
        while True:
            pending = {stream: cursor for stream, cursor in cursors.items() if cursor != ">"}
            reply = await self.redis.xreadgroup(
                group, consumer, _ids(pending or cursors), count=count, block=None if pending else int(block_s * 1000)
            )
            entries = _stream_entries(reply)
            _advance(cursors, pending, entries)
            for stream, entry_id, fields in entries:
                if not fields:
                    await ack(stream, entry_id)
                    continue
                yield AsyncAnswerItem(entry_id, stream, _answer_of(fields), ack)
