"""The review queue in Redis: list, claim, release and decide cases, atomically.

A case is opened by the publish step, in the same atomic step as its `review` decision
(onboarding.decision). Every change of a case is one Redis Function (review_claim,
review_release, review_decide in onboarding/functions/onboarding.lua) that checks the case's
state and writes the case, the queue, the history and (when deciding) the final decision
together:

    open --claim--> claimed --decide--> decided
      ^               |
      +---release-----+

- A claimed case can be decided only by the reviewer who holds it; deciding an open case
  claims it in the same step. Two reviewers racing: one wins, the other is told who did.
- A decided case cannot be decided again or overwritten: the function finds it decided and
  returns who decided it. Deciding again with the same outcome by the same reviewer is a
  no-op that reports the first result (a retry after a lost reply is safe).
- The final decision (decision.v1 with `final: true` and `review`) is appended to the
  decisions stream (and, for an app's signup, to the app's feed `<decisions>:app:<app>`),
  stored under the event's decision key and announced on its channel in the same function
  that marks the case decided, guarded by a once-only marker: it is published exactly once,
  whatever crashes around it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, cast

import redis

from onboarding import keys
from onboarding.decision import DecisionEvent, utc_now
from onboarding.functions import fcall
from onboarding.streams import live_entries, text
from review.errors import CaseConflict, CaseNotFound, ReviewError

MAX_REASON_CHARS = 1000
OUTCOMES = ("approve", "decline")


class State(Enum):
    OPEN = "open"
    CLAIMED = "claimed"
    DECIDED = "decided"


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a case's history."""

    case_id: str
    action: str  # opened, claimed, released, decided
    actor: str
    at: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "case_id": self.case_id,
            "action": self.action,
            "actor": self.actor,
            "at": self.at,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Case:
    """A review case: one applicant whose provisional decision was `review`."""

    case_id: str
    user_id: str
    state: State
    score: float | None
    reason_codes: tuple[dict[str, Any], ...]
    model_version: str | None
    error: str | None
    run_id: str | None
    opened_at: str
    deadline_epoch: float
    assignee: str | None
    claimed_at: str | None
    decided_by: str | None
    outcome: str | None
    reason: str | None
    decided_at: str | None
    version: int
    provisional: dict[str, Any] = field(repr=False)
    # The app whose intake the signup came from (stored on the case by the publish step): the
    # final decision goes to that app's feed too. None for a signup from the shared stream.
    app: str | None = None

    @property
    def deadline_at(self) -> str:
        return datetime.fromtimestamp(self.deadline_epoch, UTC).isoformat(timespec="seconds")

    def overdue(self, now: float | None = None) -> bool:
        return self.state is not State.DECIDED and (now or time.time()) > self.deadline_epoch

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (now or time.time()) - datetime.fromisoformat(self.opened_at).timestamp())

    def why(self) -> str:
        """Why a person must decide: the pipeline's error, or the borderline score."""
        if self.error:
            return f"automated assessment unavailable: {self.error}"
        return f"borderline score {self.score:.3f}" if self.score is not None else "borderline score"

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "user_id": self.user_id,
            "state": self.state.value,
            "why": self.why(),
            "score": self.score,
            "reason_codes": list(self.reason_codes),
            "model_version": self.model_version,
            "error": self.error,
            "run_id": self.run_id,
            "opened_at": self.opened_at,
            "deadline_at": self.deadline_at,
            "overdue": self.overdue(),
            "assignee": self.assignee,
            "claimed_at": self.claimed_at,
            "decided_by": self.decided_by,
            "outcome": self.outcome,
            "reason": self.reason,
            "decided_at": self.decided_at,
        }

    @classmethod
    def from_hash(cls, case_id: str, raw: dict[Any, Any]) -> Case:
        data = {text(k): text(v) for k, v in raw.items()}
        provisional = json.loads(data.get("decision") or "{}")

        def opt(name: str) -> str | None:
            return data.get(name) or None

        return cls(
            case_id=case_id,
            user_id=data.get("user_id", ""),
            state=State(data.get("state", "open")),
            score=provisional.get("score"),
            reason_codes=tuple(provisional.get("reason_codes") or ()),
            model_version=provisional.get("model_version"),
            error=provisional.get("error"),
            run_id=provisional.get("run_id"),
            opened_at=data.get("opened_at", ""),
            deadline_epoch=float(data.get("deadline", "0") or 0),
            assignee=opt("assignee"),
            claimed_at=opt("claimed_at"),
            decided_by=opt("decided_by"),
            outcome=opt("outcome"),
            reason=opt("reason"),
            decided_at=opt("decided_at"),
            version=int(data.get("version", "0") or 0),
            provisional=provisional,
            app=opt("app"),
        )


@dataclass(frozen=True)
class Decided:
    """The result of deciding a case: the final decision's stream entry, and whether this
    call made it (False: it was already decided by this reviewer with this outcome)."""

    case: str
    entry_id: str
    outcome: str
    now: bool


class _Function:
    """One of the library's functions, called like redis-py's Script (keys=, args=)."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        self.name = name

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        return fcall(self.client, self.name, keys, args)


class ReviewQueue:
    """The review queue of one decisions stream."""

    def __init__(
        self,
        client: redis.Redis,
        decisions_stream: str = keys.DECISIONS_STREAM,
        decision_ttl_s: int = keys.DECISION_KEY_TTL_S,
        marker_ttl_s: int = keys.MARKER_TTL_S,
        app_feed_maxlen: int = keys.APP_FEED_MAXLEN,
    ) -> None:
        self.redis = client
        self.stream = decisions_stream
        self.decision_ttl_s = decision_ttl_s
        self.marker_ttl_s = marker_ttl_s
        self.app_feed_maxlen = app_feed_maxlen
        self._claim: Callable[..., Any] = _Function(client, "review_claim")
        self._release: Callable[..., Any] = _Function(client, "review_release")
        self._decide: Callable[..., Any] = _Function(client, "review_decide")

    # -- reading -------------------------------------------------------------------------

    def get(self, case_id: str) -> Case:
        raw = self.redis.hgetall(keys.review_case_key(self.stream, case_id))
        if not raw:
            raise CaseNotFound(case_id)
        return Case.from_hash(case_id, raw)

    def pending(self, limit: int = 500) -> list[Case]:
        """Open and claimed cases, earliest deadline first."""
        members = cast("list[bytes]", self.redis.zrange(keys.review_queue_key(self.stream), 0, limit - 1))
        ids = [text(i) for i in members]
        if not ids:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for case_id in ids:
                pipe.hgetall(keys.review_case_key(self.stream, case_id))
            replies = pipe.execute()
        return [Case.from_hash(i, raw) for i, raw in zip(ids, replies, strict=True) if raw]

    def stats(self, now: float | None = None) -> QueueStats:
        """Depth, age and overdue count of the queue (what the metrics and the SLA page show)."""
        now = now or time.time()
        cases = self.pending(limit=100_000)
        overdue = sum(1 for c in cases if c.overdue(now))
        return QueueStats(
            open=sum(1 for c in cases if c.state is State.OPEN),
            claimed=sum(1 for c in cases if c.state is State.CLAIMED),
            overdue=overdue,
            oldest_age_s=max((c.age_s(now) for c in cases), default=0.0),
            next_deadline_s=min((c.deadline_epoch - now for c in cases), default=None),
        )

    def history(self, case_id: str | None = None, count: int = 10_000) -> list[HistoryEntry]:
        """The history of one case (or of all cases), oldest first, as far as Redis keeps it
        (older history is in the archive: `onboarding-archive audit`)."""
        out = []
        for _entry_id, fields in live_entries(self.redis.xrange(keys.review_history_key(self.stream), count=count)):
            row = {text(k): text(v) for k, v in fields.items()}
            if case_id is None or row.get("case_id") == case_id:
                out.append(HistoryEntry(row["case_id"], row["action"], row["actor"], row["at"], row.get("detail", "")))
        return out

    # -- changing ------------------------------------------------------------------------

    def _keys3(self, case_id: str) -> list[str]:
        return [
            keys.review_case_key(self.stream, case_id),
            keys.review_queue_key(self.stream),
            keys.review_history_key(self.stream),
        ]

    def claim(self, case_id: str, reviewer: str) -> Case:
        _check_reviewer(reviewer)
        reply = self._claim(keys=self._keys3(case_id), args=[reviewer, utc_now(), case_id])
        _raise_for(case_id, reply)
        return self.get(case_id)

    def release(self, case_id: str, reviewer: str, force: bool = False) -> Case:
        _check_reviewer(reviewer)
        reply = self._release(keys=self._keys3(case_id), args=[reviewer, utc_now(), case_id, "1" if force else "0"])
        _raise_for(case_id, reply)
        return self.get(case_id)

    def decide(self, case_id: str, reviewer: str, outcome: str, reason: str) -> Decided:
        """Decide a case (claiming it if open) and publish the final decision, once."""
        _check_reviewer(reviewer)
        if outcome not in OUTCOMES:
            raise ReviewError(f"outcome {outcome!r}: a reviewer decides one of {', '.join(OUTCOMES)}")
        reason = reason.strip()
        if not reason:
            raise ReviewError("a reason is required: it goes to the applicant's file and the audit")
        if len(reason) > MAX_REASON_CHARS:
            raise ReviewError(f"the reason has {len(reason)} characters; at most {MAX_REASON_CHARS}")
        for _attempt in range(5):  # another change between the read and the function: read again
            case = self.get(case_id)
            now = utc_now()
            payload = json.dumps(final_decision(case, reviewer, outcome, reason, now).to_dict(), separators=(",", ":"))
            # An app's case: its final decision goes to the app's feed too, in the same step
            # (the function checks the key against the app stored on the case).
            feed = [keys.app_feed_stream(self.stream, case.app)] if case.app else []
            reply = self._decide(
                keys=[
                    *self._keys3(case_id),
                    self.stream,
                    keys.decision_key(self.stream, case_id),
                    keys.final_marker_key(self.stream, case_id),
                    *feed,
                ],
                args=[
                    reviewer,
                    now,
                    case_id,
                    outcome,
                    reason,
                    payload,
                    self.decision_ttl_s,
                    self.marker_ttl_s,
                    case.version,
                    keys.REVIEW_CASE_TTL_S,
                    *([self.app_feed_maxlen] if feed else []),
                ],
            )
            status = text(reply[0])
            if status == "ok":
                return Decided(case_id, text(reply[1]), outcome, now=True)
            if status == "decided":
                by, decided_outcome, entry = (text(x) for x in reply[1:4])
                if by == reviewer and decided_outcome == outcome:
                    return Decided(case_id, entry, outcome, now=False)
                raise CaseConflict(case_id, f"was already decided ({decided_outcome}) by {by}; it cannot be changed")
            if status != "stale":
                _raise_for(case_id, reply)
        raise CaseConflict(case_id, "kept changing while being decided; try again")


@dataclass(frozen=True)
class QueueStats:
    open: int
    claimed: int
    overdue: int
    oldest_age_s: float
    next_deadline_s: float | None

    @property
    def depth(self) -> int:
        return self.open + self.claimed


def final_decision(case: Case, reviewer: str, outcome: str, reason: str, now: str) -> DecisionEvent:
    """The final decision that supersedes a case's provisional `review`."""
    provisional = case.provisional
    timestamps = dict(provisional.get("timestamps") or {})
    timestamps.pop("published_at", None)
    timestamps["reviewed_at"] = now
    return DecisionEvent(
        event_id=case.case_id,
        user_id=case.user_id,
        decision=outcome,
        score=provisional.get("score"),
        reason_codes=[] if outcome == "approve" else list(provisional.get("reason_codes") or []),
        model_version=provisional.get("model_version"),
        run_id=provisional.get("run_id"),
        timestamps={**timestamps, "published_at": now},
        error=None,
        final=True,
        review={
            "case_id": case.case_id,
            "reviewer_id": reviewer,
            "reason": reason,
            "decided_at": now,
            "opened_at": case.opened_at,
        },
    )


def _check_reviewer(reviewer: str) -> None:
    if not reviewer or len(reviewer) > 128 or any(ch.isspace() and ch != " " for ch in reviewer):
        raise ReviewError(f"reviewer id {reviewer!r}: 1-128 characters, no tabs or newlines")


def _raise_for(case_id: str, reply: list[Any]) -> None:
    status = text(reply[0])
    if status == "ok":
        return
    if status == "no_case":
        raise CaseNotFound(case_id)
    if status == "claimed":
        raise CaseConflict(case_id, f"is claimed by {text(reply[1])}")
    if status == "decided":
        raise CaseConflict(case_id, f"was already decided by {text(reply[1])}")
    raise CaseConflict(case_id, f"changed meanwhile ({status}); try again")
