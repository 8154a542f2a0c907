"""The consumer loop: signups stream -> validation -> exactly one Airflow run per event.

Guarantees (docs/delivery.md has the reasoning):
- At least once: an entry is acknowledged only when its fate is settled: Airflow accepted
  the run (created, or a 409 confirmed by reading the run back), or the entry is on the
  dead-letter stream. Dead-lettering and the acknowledgement are one MULTI transaction.
- Exactly-once effect: the run id is derived from the event id, so a redelivery finds the
  existing run instead of creating a second one; an event id reused with other content is
  dead-lettered (`event_id_reused`), never decided on the wrong data.
- Crash recovery: entries a dead consumer left pending are claimed after `claim_idle_ms`
  (XAUTOCLAIM); one delivered more than `max_deliveries` times is dead-lettered as
  `max_deliveries` instead of crashing consumers forever. A live consumer keeps its own
  unsettled entries fresh while it waits for Airflow, so nobody claims them from it.
- Bounded work in flight: at most `batch_size` entries per process are read and unsettled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol, cast

import redis
from redis.typing import EncodableT, FieldT

from listener.metrics import ListenerMetrics
from listener.settings import ListenerSettings
from onboarding import keys
from onboarding.airflow import DagRun, TriggerOutcome
from onboarding.awaiting import record_accepted
from onboarding.backoff import Backoff
from onboarding.decision import utc_now
from onboarding.errors import AirflowRejected, AirflowUnavailable, InvalidEvent
from onboarding.functions import FunctionsNotLoaded, not_loaded
from onboarding.keys import DECISION_KEY_TTL_S, run_id_for
from onboarding.logs import keys as log_keys
from onboarding.outages import through_redis_outages
from onboarding.refusal import Refusal, answer_refusal, message_for
from onboarding.schema import SignupEvent, parse_signup
from onboarding.settings import APP_NAME
from onboarding.streams import Entry, Fields, deleted_ids, ensure_group, live_entries, text, xread_entries
from onboarding.untrusted import field_of

logger = logging.getLogger(__name__)


class Trigger(Protocol):
    def trigger(self, run_id: str, conf: dict[str, Any]) -> TriggerOutcome: ...

    def get_run(self, run_id: str) -> DagRun | None: ...


def fingerprint(event: dict[str, Any]) -> str:
    """A stable hash of an event's content (without what the listener adds: `accepted_at`, and
    `app`, which the namespaced event id `<app>:<id>` implies; a run triggered before the
    listener passed `app` is still recognised as this event's run)."""
    content = {k: v for k, v in event.items() if k not in ("accepted_at", "app")}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class _Settled(Exception):
    """Internal: the entry was dead-lettered while being handled."""


class Listener:
    """Consumes the signups stream as one member of the listener consumer group."""

    def __init__(
        self,
        client: redis.Redis,
        airflow: Trigger,
        settings: ListenerSettings,
        metrics: ListenerMetrics | None = None,
    ) -> None:
        self.redis = client
        self.airflow = airflow
        self.settings = settings
        self.metrics = metrics or ListenerMetrics()
        self._stopping = threading.Event()
        # Full jitter: listeners retrying after the same Airflow outage spread out.
        self._backoff = Backoff(min(settings.retry_initial_s, settings.retry_max_s), settings.retry_max_s, jitter=True)
        self._held: list[str] = []  # read by this consumer, not yet settled
        self._last_claim = float("-inf")
        self._last_keep_alive = time.monotonic()
        self.last_loop_at = time.monotonic()
        self._settled = 0

    @property
    def stream(self) -> str:
        return self.settings.streams.signups_stream

    def stop(self) -> None:
        """Finish the entry in hand, then return from run(). Safe from a signal handler."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def ensure_group(self) -> None:
        """Create the consumer group if needed, from the start of the stream so nothing
        published before the first listener started is missed."""
        ensure_group(self.redis, self.stream, self.settings.group, start="0")

    # -- the loop ---------------------------------------------------------------------

    def run(self, burst: bool = False, max_messages: int | None = None) -> int:
        """Process entries until stopped (or, in burst mode, until none are waiting).

        Returns the number of entries settled (acknowledged). Outside burst mode a Redis
        outage does not end it: the loop waits for Redis and starts over (onboarding.outages);
        the entries in hand stay pending and are read again.
        """
        self._settled = 0
        if burst:
            self._loop(burst, max_messages)
        else:
            through_redis_outages(lambda: self._loop(burst, max_messages), self._stopping, self._tick, "listener")
        return self._settled

    def _loop(self, burst: bool, max_messages: int | None) -> None:
        self.ensure_group()
        own_pending = True  # first re-read what this consumer left unacknowledged
        while not self.stopping:
            self._tick()
            budget = self.settings.batch_size
            if max_messages is not None:
                budget = min(budget, max_messages - self._settled)
                if budget <= 0:
                    break
            if time.monotonic() - self._last_claim >= self.settings.claim_interval_s:
                self._last_claim = time.monotonic()
                claimed = self._claim(budget)
                if claimed:
                    self._settled += self._process(claimed, count_deliveries=True)
                    continue
            if own_pending:
                entries = self._read("0", budget, block=False)
                if len(entries) < budget:
                    own_pending = False
                self._settled += self._process(entries, count_deliveries=True)
                continue
            entries = self._read(">", budget, block=not burst)
            if not entries:
                if burst:
                    break
                continue
            self._settled += self._process(entries, count_deliveries=False)

    def _tick(self) -> None:
        self.last_loop_at = time.monotonic()
        self.metrics.loop_tick()

    def seconds_since_loop(self) -> float:
        return time.monotonic() - self.last_loop_at

    def _read(self, start: str, count: int, block: bool) -> list[Entry]:
        block_ms = self.settings.block_ms
        reply = self.redis.xreadgroup(
            self.settings.group,
            self.settings.consumer,
            {self.stream: start},
            count=count,
            block=block_ms if block else None,
        )
        entries = xread_entries(reply)
        gone = deleted_ids(entries)
        if gone:
            self._lost(gone)
        return live_entries(entries)

    def _claim(self, count: int) -> list[Entry]:
        """Take over entries another consumer left pending for longer than claim_idle_ms."""
        reply = self.redis.xautoclaim(
            self.stream,
            self.settings.group,
            self.settings.consumer,
            min_idle_time=self.settings.claim_idle_ms,
            start_id="0-0",
            count=count,
        )
        claimed = [(text(eid), fields) for eid, fields in reply[1] if fields is not None]
        if len(reply) > 2 and reply[2]:
            self._lost([text(eid) for eid in reply[2]])
        if claimed:
            self.metrics.reclaimed.inc(len(claimed))
            logger.warning(
                "listener: claimed %d entries idle past the claim time "
                "(another consumer's, or ours from before an outage)",
                len(claimed),
            )
        return claimed

    def _lost(self, ids: Sequence[str]) -> None:
        # Only possible if something trimmed the stream below a pending entry.
        self.metrics.events.labels("lost_trimmed").inc(len(ids))
        for entry_id in ids:
            logger.error("listener: a pending entry was trimmed unsettled", extra=log_keys(entry_id=entry_id))
        self.redis.xack(self.stream, self.settings.group, *ids)

    def _process(self, entries: list[Entry], count_deliveries: bool) -> int:
        deliveries = self._deliveries([eid for eid, _ in entries]) if count_deliveries else {}
        self._held = [eid for eid, _ in entries]
        self._last_keep_alive = time.monotonic()
        settled = 0
        try:
            for entry_id, fields in entries:
                if self.stopping:
                    break
                # A slow batch must not look abandoned to the other listeners.
                if time.monotonic() - self._last_keep_alive > self.settings.claim_idle_ms / 3000:
                    self._keep_alive()
                if self._handle(entry_id, fields, deliveries.get(entry_id, 1)):
                    settled += 1
                self._held.remove(entry_id)
        finally:
            self._held = []
        return settled

    def _deliveries(self, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xpending_range(self.stream, self.settings.group, min=entry_id, max=entry_id, count=1)
            replies = pipe.execute()
        return {
            entry_id: int(reply[0]["times_delivered"]) for entry_id, reply in zip(ids, replies, strict=True) if reply
        }

    def _keep_alive(self) -> None:
        """Reset the idle time of the entries we hold (JUSTID: no delivery is counted)."""
        self._last_keep_alive = time.monotonic()
        if self._held:
            self.redis.xclaim(
                self.stream,
                self.settings.group,
                self.settings.consumer,
                min_idle_time=0,
                message_ids=[*self._held],  # redis-py wants a list[StreamIdT]; a list[str] is not one (invariance)
                justid=True,
            )

    # -- one entry ----------------------------------------------------------------------

    def _handle(self, entry_id: str, fields: Fields, deliveries: int) -> bool:
        """Settle one entry. Returns False if it was left pending (shutdown during retry)."""
        self.metrics.in_flight.inc()
        try:
            return self._settle(entry_id, fields, deliveries)
        except redis.RedisError:
            raise  # nothing can be settled without Redis; the entry stays pending
        except Exception as err:
            # A bug or an input nobody foresaw must not take the listener (and, through
            # redelivery, every listener) down: park the entry with the error.
            logger.exception("listener: unexpected error on an entry", extra=log_keys(entry_id=entry_id))
            self._dead_letter(entry_id, fields, "internal_error", f"{type(err).__name__}: {err}"[:500])
            return True
        finally:
            self.metrics.in_flight.dec()

    def _settle(self, entry_id: str, fields: Fields, deliveries: int) -> bool:
        started = time.monotonic()
        if deliveries > self.settings.max_deliveries:
            self._dead_letter(
                entry_id,
                fields,
                "max_deliveries",
                f"delivered {deliveries} times without being settled (limit "
                f"{self.settings.max_deliveries}); inspect it, then replay it with onboarding-deadletters",
            )
            return True
        payload = fields.get(b"payload", fields.get("payload"))
        if payload is None:
            self._dead_letter(entry_id, fields, "missing_payload", "the stream entry has no 'payload' field")
            return True
        try:
            refused_at_intake = fields.get(b"intake_refused", fields.get("intake_refused"))
            if refused_at_intake is not None:
                raise InvalidEvent("oversize", f"the intake entry has {text(refused_at_intake)}")
            event = self._namespaced(
                parse_signup(payload, self.settings.max_payload_bytes, self.settings.streams.dataset), fields
            )
            self._check_fingerprint(event, entry_id)
        except InvalidEvent as err:
            self._dead_letter(entry_id, fields, err.reason, err.detail)
            return True
        if self.redis.exists(keys.marker_key(self.settings.streams.decisions_stream, event.event_id)):
            # Its decision is out (the publish marker outlives the run, which the weekly
            # archive removes after 7 days): a resend gets neither a run nor a decision.
            self.redis.xack(self.stream, self.settings.group, entry_id)
            self.metrics.events.labels("already_decided").inc()
            logger.info(
                "listener: already decided, no run",
                extra=log_keys(event_id=event.event_id, run_id=run_id_for(event.event_id), entry_id=entry_id),
            )
            return True
        # The app travels with the run (the DAG's `app` param): the forwarded entry's `app`, which
        # only the forwarding function writes; never inferred from the event id. The publish step
        # then also appends the decision to that app's feed. A shared-stream signup has none.
        app = _app_of(fields)
        conf = {**event.to_dict(), "accepted_at": utc_now(), **({"app": app} if app is not None else {})}
        try:
            outcome = self._trigger(event, conf, entry_id, fields)
        except _Settled:
            return True
        if outcome is None:
            return False
        # Before the ack: a crash in between re-delivers the entry, it is never left untracked.
        record_accepted(self.redis, self.settings.streams, event.event_id, time.time(), conf)
        self.redis.xack(self.stream, self.settings.group, entry_id)
        self.metrics.trigger_seconds.observe(time.monotonic() - started)
        self.metrics.events.labels("triggered" if outcome is TriggerOutcome.CREATED else "duplicate").inc()
        logger.info(
            "listener: run %s",
            outcome.value,
            extra=log_keys(
                event_id=event.event_id,
                run_id=run_id_for(event.event_id),
                entry_id=entry_id,
                user_id=event.user_id,
                outcome=outcome.value,
            ),
        )
        return True

    def _namespaced(self, event: SignupEvent, fields: Fields) -> SignupEvent:
        """An app's forwarded signup gets the event id `<app>:<event id>` (no app can squat
        another's ids); a signup on the shared stream (the deprecated shared `app` user) may
        not use an id in a configured app's namespace."""
        app = _app_of(fields)
        if app is not None:
            event_id = keys.app_event_id(app, event.event_id)
            if len(event_id) > 128:
                raise InvalidEvent(
                    "invalid_value",
                    f"event_id: at most {127 - len(app)} characters for app {app} (the service's id is <app>:<id>)",
                )
            return replace(event, event_id=event_id)
        claimed = event.event_id.partition(":")[0]
        if ":" in event.event_id and claimed in self.settings.streams.apps:
            raise InvalidEvent("invalid_value", f"event_id: the prefix {claimed}: belongs to app {claimed}")
        return event

    def _check_fingerprint(self, event: SignupEvent, entry_id: str) -> None:
        key = keys.fingerprint_key(self.stream, event.event_id)
        mine = fingerprint(event.to_dict())
        # SET ... GET replies with the old value or nil, never the bool of a plain SET.
        first = cast(
            "bytes | str | None",
            self.redis.set(key, f"{mine} {entry_id}", nx=True, ex=self.settings.fingerprint_ttl_s, get=True),
        )
        if first is None:
            return
        seen, _, seen_entry = text(first).partition(" ")
        if seen != mine:
            raise InvalidEvent(
                "event_id_reused",
                f"event_id {event.event_id!r} was first seen with different content (stream entry {seen_entry}); "
                "a new signup needs a new event_id",
            )

    def _trigger(
        self, event: SignupEvent, conf: dict[str, Any], entry_id: str, fields: Fields
    ) -> TriggerOutcome | None:
        """Trigger until Airflow settles it. None: shutting down, entry left pending."""
        run_id = run_id_for(event.event_id)
        ids = log_keys(event_id=event.event_id, run_id=run_id, entry_id=entry_id)

        def attempt() -> TriggerOutcome:
            try:
                outcome = self.airflow.trigger(run_id, conf)
                if outcome is TriggerOutcome.ALREADY_EXISTS and not self._confirm_existing(
                    run_id, conf, entry_id, fields
                ):
                    # Conflict, yet no such run: try again, through the backoff.
                    raise AirflowUnavailable("conflict_without_run", f"409 for {run_id} but the run is not there")
            except (AirflowRejected, AirflowUnavailable) as err:
                self.metrics.airflow_errors.labels(err.kind).inc()
                raise
            return outcome

        def on_retry(err: BaseException, delay_s: float) -> None:
            logger.warning("listener: airflow unavailable (%s); retrying in %.2f s", err, delay_s, extra=ids)
            self._keep_alive()
            self._tick()

        try:
            return self._backoff.retry(attempt, (AirflowUnavailable,), stop=self._stopping, on_retry=on_retry)
        except AirflowRejected as err:
            self._dead_letter(entry_id, fields, "rejected_by_airflow", err.detail)
            raise _Settled from err
        except AirflowUnavailable as err:  # only when stopping: the backoff itself never gives up
            logger.warning("listener: leaving the entry pending at shutdown: %s", err, extra=ids)
            return None

    def _confirm_existing(self, run_id: str, conf: dict[str, Any], entry_id: str, fields: Fields) -> bool:
        """A 409: read the run back and check it is this event's run, not another's."""
        run = self.airflow.get_run(run_id)
        if run is None:
            return False
        if fingerprint(run.conf) != fingerprint(conf):
            self._dead_letter(
                entry_id,
                fields,
                "event_id_reused",
                f"run {run_id} already exists for different content; a new signup needs a new event_id",
            )
            raise _Settled
        return True

    def _dead_letter(self, entry_id: str, fields: Fields, reason: str, detail: str) -> None:
        dead_at = utc_now()
        record: dict[FieldT, EncodableT] = {
            "original_id": entry_id,
            "reason": reason,
            "detail": detail,
            "consumer": self.settings.consumer,
            "dead_at": dead_at,
            # The original fields, verbatim (bytes stay bytes), so a replay sends exactly them;
            # a field over the payload limit is cut (it could never be accepted anyway).
            **_bounded_fields(fields, self.settings.max_payload_bytes),
        }
        event_id = self._answer_id(fields)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.settings.streams.dead_letter_stream, record)
            pipe.xack(self.stream, self.settings.group, entry_id)
            if event_id is not None and self.settings.answer_refusals:
                # The app's answer, in the same transaction: a refused signup never waits.
                refusal = Refusal(event_id, _user_id(fields), reason, message_for(reason, detail), dead_at)
                streams = self.settings.streams
                answer_refusal(
                    pipe,
                    streams.signups_stream,
                    streams.decisions_stream,
                    refusal,
                    DECISION_KEY_TTL_S,
                    app=_app_of(fields),
                    feed_maxlen=streams.app_feed_maxlen,
                )
            try:
                pipe.execute()
            except redis.ResponseError as exc:
                if not_loaded(exc):  # the server lacks the onboarding library: say how to load it
                    raise FunctionsNotLoaded("answer_refusal") from exc
                raise
        self.metrics.events.labels("dead_lettered").inc()
        self.metrics.dead_letters.labels(reason).inc()
        # The detail can quote the event's values; the log names only where the problem is
        # (personal data stays in the dead-letter stream, which has a retention and an eraser).
        logger.warning(
            "listener: dead-lettered at %s",
            json.dumps(detail.split(":")[0][:80]),
            extra=log_keys(event_id=event_id, entry_id=entry_id, reason=reason),
        )

    def _answer_id(self, fields: Fields) -> str | None:
        """The event id a refusal is answered on: an app's signup under its app's prefix, and
        none for a shared-stream signup claiming an app's namespace (that key is the app's)."""
        event_id = _event_id(fields)
        if event_id is None:
            return None
        app = _app_of(fields)
        if app is not None:
            return keys.app_event_id(app, event_id)
        if event_id.partition(":")[0] in self.settings.streams.apps and ":" in event_id:
            return None
        return event_id


def _app_of(fields: Fields) -> str | None:
    """The app a forwarded entry came from (set by the forwarding function, never by an app);
    a malformed value is treated as no app."""
    raw = fields.get(b"app", fields.get("app"))
    if raw is None:
        return None
    app = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    return app if APP_NAME.fullmatch(app) else None


_LOGGABLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:~+-]{0,127}")


# An oversize payload is not parsed; its event id is still found at the top of the text.
_EVENT_ID_TEXT = re.compile(
    rb'^\s*\{\s*(?:"[a-z_]+"\s*:\s*(?:"[^"\\]{0,200}"|[0-9]{1,10})\s*,\s*){0,4}"event_id"\s*:\s*"([^"\\]{1,128})"'
)


def _event_id(fields: Fields) -> str | None:
    """A dead letter's event id, for its log line and the app's answer, if the entry has a
    well-formed one (a malformed entry's content never reaches the logs). Bounded like every
    parse of an entry: a hostile payload gives None, never an exception. An oversize payload
    is not parsed: its event id is read from the top-level fields at its start."""
    raw = fields.get(b"payload", fields.get("payload"))
    event_id = field_of(raw, "event_id")
    if event_id is None and raw is not None:
        head = (raw.encode("utf-8", errors="replace") if isinstance(raw, str) else raw)[:1024]
        found = _EVENT_ID_TEXT.match(head)
        event_id = found.group(1).decode("utf-8", errors="replace") if found else None
    return event_id if isinstance(event_id, str) and _LOGGABLE_ID.fullmatch(event_id) else None


def _user_id(fields: Fields) -> str | None:
    user_id = field_of(fields.get(b"payload", fields.get("payload")), "user_id")
    return user_id if isinstance(user_id, str) and 0 < len(user_id) <= 128 else None


def _bounded_fields(fields: Fields, limit: int) -> dict[FieldT, EncodableT]:
    """The original fields for a dead letter, each cut to `limit` bytes: an oversize entry
    is not copied whole (a cut one records its size and hash, and is not replayable)."""
    out: dict[FieldT, EncodableT] = {}
    for key, value in fields.items():
        name = f"original.{text(key)[:64]}"
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8", errors="surrogatepass")
        if len(raw) > limit:
            digest = hashlib.sha256(raw).hexdigest()
            out["truncated." + name.removeprefix("original.")] = f"{len(raw)} bytes sha256:{digest}"
            raw = raw[:limit]
        out[name] = raw
    return out
