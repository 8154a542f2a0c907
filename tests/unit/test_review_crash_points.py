"""Crash at every point: a stateful property test of the review queue's final decision.

Hypothesis' rule-based state machine drives the real `review.store.ReviewQueue` against a
real Redis. Between its steps the pipeline publishes provisional decisions (`review`, some
`approve`/`decline`, some published again as a retried task does), and reviewers claim,
release (their own claim, or another's with `force` as a lead does) and decide (approve or
decline, with a reason). Every reviewer call goes through a queue whose Redis client:
- is killed before its n-th command (`Crash`: the process dies, its state is thrown away),
- or loses the reply of its n-th command after Redis ran it (the caller sees a
  `redis.ConnectionError`, the script's effects stay),
- or lets a rival reviewer act on the same case just before its n-th command (between the
  read of the case and the script that changes it);
after a crash or a lost reply the same reviewer either clicks again (the same action,
through a fresh queue) or gives up.

After every step it checks what may never happen, even mid-crash:
- a case in no state or in two (the queue holds exactly the open and claimed cases; a
  claimed case has an assignee, a decided one its reviewer, outcome and reason, taken from
  a decide somebody asked for);
- a decided case whose outcome, reviewer, reason or time changes afterwards;
- a second final decision for an event on the decisions stream, a decided case without its
  final decision, or a final decision whose reviewer/outcome/reason differ from the case's;
  the once-only marker names the final decision's entry;
- an event's decision key holding anything but its final decision (its provisional
  decision while undecided);
- a case history that is no valid path: opened, then claimed/released alternating (a
  release by the holder, or naming whose claim a lead released), at most one decided, by
  the holder, last.
At the end of each example (teardown) every remaining case is decided and the totals are
checked: one provisional decision per published event, one final decision per case, an
empty queue.

CI runs `REVIEW_CRASH_EXAMPLES` (default 40) examples of up to 30 steps; a longer search:
`REVIEW_CRASH_EXAMPLES=2000 TEST_REDIS_URL=redis://127.0.0.1:6379/11 .venv/bin/pytest
tests/unit/test_review_crash_points.py`. `test_the_machine_finds_a_queue_that_publishes_twice`
and `test_the_machine_finds_a_queue_that_loses_the_final_decision` show it fails on a
decide split into two scripts (publish then mark, or mark then publish), which is correct
as long as nothing crashes.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import pytest
import redis
from hypothesis import Phase
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from redis.commands.core import Script

from onboarding import keys
from onboarding.decision import DecisionEvent, publish_decision, utc_now
from onboarding.streams import live_entries, text
from review import CaseConflict, CaseNotFound, ReviewError, ReviewQueue, State
from review.store import OUTCOMES
from tests.conftest import TEST_REDIS_URL
from tests.unit.crash_search import machine_settings, require_redis

STREAM = "decisions"
EXAMPLES = int(os.environ.get("REVIEW_CRASH_EXAMPLES", "40"))
REVIEWERS = ("alice", "bob", "carol")
# Events 0-3 are borderline (`review`: a case each); 4 and 5 are decided by the model.
PROVISIONAL = ("review", "review", "review", "review", "approve", "decline")
EVENTS = tuple(f"evt-rv-{i}" for i in range(len(PROVISIONAL)))
REASONS = ("documents checked", "income not verifiable", "  reference confirmed by phone  ", "Einkommen nicht prüfbar")
MODES = ("before", "after", "race")
HISTORY = keys.review_history_key(STREAM)
QUEUE = keys.review_queue_key(STREAM)
ByEvent = dict[str, list[tuple[str, dict[str, Any]]]]  # decisions on the stream: event id -> [(entry id, body)]


class Crash(BaseException):
    """The reviewer's process (the page's worker, the CLI) dies here: nothing after this point
    runs (a BaseException, so no `except Exception` can swallow it)."""

    def __init__(self, call: str) -> None:
        super().__init__(f"killed before {call}")
        self.call = call


class LostReply(redis.ConnectionError):
    """Redis ran the command, but its reply never reached the caller."""


# Which commands a reviewer was killed around, over a test run (shown with -s).
HIT: Counter[tuple[str, str]] = Counter()


class CrashPlan:
    """Counts a reviewer's commands to Redis; at the n-th one: dies before it (`before`),
    loses its reply (`after`) or lets a rival act first (`race`)."""

    def __init__(self, crash: tuple[str, int] | None, rival: Callable[[], None] | None = None) -> None:
        self.crash = crash
        self.rival = rival
        self.calls = 0
        self.hit: tuple[str, str] | None = None

    def _due(self, mode: str) -> bool:
        return self.crash is not None and self.crash == (mode, self.calls)

    def before(self, name: str) -> None:
        self.calls += 1
        if self._due("before"):
            self.hit = ("before", name)
            raise Crash(name)
        if self._due("race") and self.rival is not None:
            self.hit = ("race", name)
            self.rival()

    def after(self, name: str) -> None:
        if self._due("after"):
            self.hit = ("after", name)
            raise LostReply(f"the reply to {name} was lost")


# Client helpers that send nothing to Redis.
_NOT_COMMANDS = {"get_encoder", "get_connection_kwargs"}


class CrashingRedis:
    """The real client, with a crash point around every command the queue sends (its Lua
    scripts included: they are registered on this wrapper, so EVALSHA passes through it)."""

    def __init__(self, client: redis.Redis, plan: CrashPlan) -> None:
        self._client = client
        self._plan = plan

    def register_script(self, script: str) -> Script:
        return Script(cast(redis.Redis, self), script)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name in _NOT_COMMANDS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._plan.before(name)
            reply = attr(*args, **kwargs)
            self._plan.after(name)
            return reply

        return call


def provisional(i: int) -> DecisionEvent:
    """The pipeline's decision for event i; a retried task builds it again, new timestamps."""
    decision = PROVISIONAL[i]
    return DecisionEvent(
        event_id=EVENTS[i],
        user_id=f"user-rv-{i}",
        decision=decision,
        score=0.48 if decision == "review" else (0.1 if decision == "approve" else 0.9),
        reason_codes=[{"code": "checking_account", "text": "Checking account status", "contribution": 0.3}],
        model_version="v1",
        run_id=f"signup__{EVENTS[i]}",
        timestamps={"occurred_at": utc_now()},
    )


def _fields(raw: dict[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}


crashes = st.one_of(st.none(), st.tuples(st.sampled_from(MODES), st.integers(1, 3)))
rivals = st.tuples(st.sampled_from(REVIEWERS), st.sampled_from(["claim", "release", "decide"]))


class ReviewCrashMachine(RuleBasedStateMachine):
    queue_class: type[ReviewQueue] = ReviewQueue

    def __init__(self) -> None:
        super().__init__()
        self.redis = redis.Redis.from_url(TEST_REDIS_URL)
        self.redis.flushdb()
        self.published: set[str] = set()  # event ids whose provisional decision was published
        self.asked: set[tuple[str, str, str, str]] = set()  # (case, reviewer, outcome, reason) decides asked for
        self.made: Counter[str] = Counter()  # decides that answered "decided now", per case
        self.seen_decided: dict[str, tuple[str, ...]] = {}
        self.crashes = 0
        self.races = 0
        self._raced = False

    # -- the pipeline ----------------------------------------------------------------------

    @rule(i=st.integers(0, len(EVENTS) - 1))
    def publish(self, i: int) -> None:
        """A run publishes its decision; publishing an event again is a retried task."""
        created, _entry = publish_decision(self.redis, STREAM, provisional(i))
        assert created == (EVENTS[i] not in self.published), f"{EVENTS[i]}: published again as new"
        self.published.add(EVENTS[i])

    # -- the reviewers ---------------------------------------------------------------------

    @rule(i=st.integers(0, 3), reviewer=st.sampled_from(REVIEWERS), crash=crashes, rival=rivals, retry=st.booleans())
    def claim(self, i: int, reviewer: str, crash: tuple[str, int] | None, rival: tuple[str, str], retry: bool) -> None:
        case_id = EVENTS[i]
        done, result = self._call(case_id, crash, rival, retry, lambda q: q.claim(case_id, reviewer))
        if done and not isinstance(result, ReviewError) and not self._raced:
            assert result.state is State.CLAIMED and result.assignee == reviewer, result
        self._check_refusal(case_id, reviewer, result)

    @rule(
        i=st.integers(0, 3),
        reviewer=st.sampled_from(REVIEWERS),
        force=st.booleans(),
        crash=crashes,
        rival=rivals,
        retry=st.booleans(),
    )
    def release(
        self, i: int, reviewer: str, force: bool, crash: tuple[str, int] | None, rival: tuple[str, str], retry: bool
    ) -> None:
        case_id = EVENTS[i]
        done, result = self._call(case_id, crash, rival, retry, lambda q: q.release(case_id, reviewer, force=force))
        if done and not isinstance(result, ReviewError) and not self._raced:
            assert result.state is State.OPEN and result.assignee is None, result
        self._check_refusal(case_id, reviewer, result)

    @rule(
        i=st.integers(0, 3),
        reviewer=st.sampled_from(REVIEWERS),
        outcome=st.sampled_from(OUTCOMES),
        reason=st.sampled_from(REASONS),
        crash=crashes,
        rival=rivals,
        retry=st.booleans(),
    )
    def decide(
        self,
        i: int,
        reviewer: str,
        outcome: str,
        reason: str,
        crash: tuple[str, int] | None,
        rival: tuple[str, str],
        retry: bool,
    ) -> None:
        case_id = EVENTS[i]
        self.asked.add((case_id, reviewer, outcome, reason.strip()))
        done, result = self._call(case_id, crash, rival, retry, lambda q: q.decide(case_id, reviewer, outcome, reason))
        if done and not isinstance(result, ReviewError):
            case = self._case(case_id)
            assert case is not None and case["state"] == "decided", f"{case_id}: decide answered, case is {case}"
            assert (case["decided_by"], case["outcome"]) == (reviewer, outcome), f"{case_id}: answered {result}: {case}"
            assert result.entry_id == text(self.redis.get(keys.final_marker_key(STREAM, case_id)) or b""), result
            if result.now:
                self.made[case_id] += 1
                assert self.made[case_id] == 1, f"{case_id}: decided now {self.made[case_id]} times"
        self._check_refusal(case_id, reviewer, result)

    # -- helpers ---------------------------------------------------------------------------

    def _queue(self, plan: CrashPlan | None) -> ReviewQueue:
        client = self.redis if plan is None else cast(redis.Redis, CrashingRedis(self.redis, plan))
        return self.queue_class(client, STREAM)

    def _rival(self, case_id: str, who: str, action: str) -> Callable[[], None]:
        def act() -> None:
            queue = self._queue(None)
            try:
                if action == "claim":
                    queue.claim(case_id, who)
                elif action == "release":
                    queue.release(case_id, who, force=True)
                else:
                    self.asked.add((case_id, who, "approve", "rival"))
                    if queue.decide(case_id, who, "approve", "rival").now:
                        self.made[case_id] += 1
            except ReviewError:
                pass

        return act

    def _call(
        self,
        case_id: str,
        crash: tuple[str, int] | None,
        rival: tuple[str, str],
        retry: bool,
        action: Callable[[ReviewQueue], Any],
    ) -> tuple[bool, Any]:
        """(answered, the answer or the ReviewError refusing it); (False, None) when the
        reviewer gave up after a crash or a lost reply."""
        plan = CrashPlan(crash, self._rival(case_id, *rival))
        self._raced = False
        try:
            try:
                return True, action(self._queue(plan))
            finally:
                if plan.hit is not None:
                    HIT[plan.hit] += 1
                    self._raced = plan.hit[0] == "race"
                    self.races += self._raced
        except (Crash, LostReply):
            self.crashes += 1
            if not retry:
                return False, None
            try:
                return True, action(self._queue(None))  # the reviewer clicks again
            except ReviewError as refused:
                return True, refused
        except ReviewError as refused:
            return True, refused

    def _check_refusal(self, case_id: str, reviewer: str, result: Any) -> None:
        """A refusal says what is true now (states only move forward to `decided`)."""
        case = self._case(case_id)
        if isinstance(result, CaseNotFound):
            assert case is None, f"{case_id} exists, yet {result}"
        elif isinstance(result, CaseConflict) and "already decided" in str(result):
            assert case is not None and case["state"] == "decided", f"{result}, yet {case}"
        elif isinstance(result, CaseConflict) and "claimed by" in str(result) and not self._raced:
            assert case is not None and case["state"] == "claimed" and case["assignee"] != reviewer, (result, case)

    def _case(self, case_id: str) -> dict[str, str] | None:
        raw = self.redis.hgetall(keys.review_case_key(STREAM, case_id))
        return _fields(raw) if raw else None

    def _cases(self) -> dict[str, dict[str, str]]:
        return {e: c for e in EVENTS if (c := self._case(e)) is not None}

    def _stream(self) -> tuple[ByEvent, ByEvent]:
        """The decisions stream: (provisional decisions, final decisions), by event id."""
        provisional_: ByEvent = {}
        final: ByEvent = {}
        for entry_id, raw in live_entries(self.redis.xrange(STREAM)):
            fields = _fields(raw)
            body = json.loads(fields["payload"])
            assert body["event_id"] == fields["event_id"]
            into = final if "review" in body else provisional_
            into.setdefault(fields["event_id"], []).append((entry_id, body))
        return provisional_, final

    def _history(self) -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for _id, raw in live_entries(self.redis.xrange(HISTORY)):
            row = _fields(raw)
            out.setdefault(row["case_id"], []).append(row)
        return out

    # -- what must hold after every step ---------------------------------------------------

    @invariant()
    def each_case_is_in_exactly_one_state(self) -> None:
        cases = self._cases()
        reviews = {e for e in self.published if PROVISIONAL[EVENTS.index(e)] == "review"}
        assert set(cases) == reviews, f"cases {sorted(cases)} for the published reviews {sorted(reviews)}"
        queued = {text(m) for m in cast(list[bytes], self.redis.zrange(QUEUE, 0, -1))}
        assert queued == {c for c, case in cases.items() if case["state"] != "decided"}, (queued, cases)
        for case_id, case in cases.items():
            state = case["state"]
            assert state in ("open", "claimed", "decided"), f"{case_id}: state {state!r}"
            if state == "open":
                assert not case.get("assignee") and not case.get("decided_by"), f"{case_id}: open, {case}"
            elif state == "claimed":
                assert case.get("assignee") and not case.get("decided_by"), f"{case_id}: claimed, {case}"
            else:
                assert case["decided_by"] == case["assignee"] and case["outcome"] in OUTCOMES, case
                asked = (case_id, case["decided_by"], case["outcome"], case["reason"])
                assert asked in self.asked, f"{case_id}: decided as nobody asked: {asked}"

    @invariant()
    def a_decided_case_never_changes(self) -> None:
        for case_id, case in self._cases().items():
            if case["state"] != "decided":
                assert case_id not in self.seen_decided, f"{case_id} was decided, now {case['state']}"
                continue
            now = (case["decided_by"], case["outcome"], case["reason"], case["decided_at"])
            before = self.seen_decided.setdefault(case_id, now)
            assert now == before, f"{case_id}: decided as {before}, changed to {now}"

    @invariant()
    def one_final_decision_per_decided_case(self) -> None:
        provisional_, final = self._stream()
        cases = self._cases()
        for event_id, entries in provisional_.items():
            assert len(entries) == 1, f"{event_id}: {len(entries)} provisional decisions"
        assert set(provisional_) == self.published
        for event_id, entries in final.items():
            assert len(entries) == 1, f"{event_id}: its final decision was published {len(entries)} times"
        decided = {c for c, case in cases.items() if case["state"] == "decided"}
        assert set(final) == decided, f"final decisions for {sorted(final)}, decided cases {sorted(decided)}"
        for case_id in decided:
            case = cases[case_id]
            [(entry_id, body)] = final[case_id]
            assert body["final"] is True and body["decision"] == case["outcome"], (body, case)
            review = body["review"]
            assert (review["case_id"], review["reviewer_id"], review["reason"], review["decided_at"]) == (
                case_id,
                case["decided_by"],
                case["reason"],
                case["decided_at"],
            ), (review, case)
            marker = self.redis.get(keys.final_marker_key(STREAM, case_id))
            assert marker is not None and text(marker) == entry_id, f"{case_id}: marker {marker!r}, entry {entry_id}"

    @invariant()
    def the_decision_key_holds_the_latest_decision(self) -> None:
        provisional_, final = self._stream()
        for event_id in self.published:
            stored = self.redis.get(keys.decision_key(STREAM, event_id))
            assert stored is not None, f"{event_id}: no decision under its key"
            [(_entry, expected)] = final.get(event_id) or provisional_[event_id]
            assert json.loads(stored) == expected, f"{event_id}: its key holds {stored!r}, not {expected}"

    @invariant()
    def every_history_is_a_valid_path(self) -> None:
        cases = self._cases()
        histories = self._history()
        assert set(histories) == set(cases), (sorted(histories), sorted(cases))
        for case_id, rows in histories.items():
            path = [(r["action"], r["actor"]) for r in rows]
            assert path[0] == ("opened", "onboarding"), f"{case_id}: {path}"
            holder: str | None = None
            decided = False
            for row in rows[1:]:
                action, actor = row["action"], row["actor"]
                assert not decided, f"{case_id}: {action} after decided: {path}"
                if action == "claimed":
                    assert holder is None, f"{case_id}: claimed while {holder} held it: {path}"
                    holder = actor
                elif action == "released":
                    assert holder is not None, f"{case_id}: released while open: {path}"
                    assert actor == holder or row["detail"] == f"released the claim of {holder}", (case_id, row)
                    holder = None
                elif action == "decided":
                    assert holder == actor, f"{case_id}: decided by {actor}, held by {holder}: {path}"
                    decided = True
                else:
                    raise AssertionError(f"{case_id}: unknown action {action!r}: {path}")
            case = cases[case_id]
            expected = "decided" if decided else ("claimed" if holder else "open")
            assert case["state"] == expected, f"{case_id}: {case['state']}, its history says {expected}: {path}"
            assert (case.get("assignee") or None) == holder, f"{case_id}: assignee {case.get('assignee')}, {path}"

    def check_all(self) -> None:
        self.each_case_is_in_exactly_one_state()
        self.a_decided_case_never_changes()
        self.one_final_decision_per_decided_case()
        self.the_decision_key_holds_the_latest_decision()
        self.every_history_is_a_valid_path()

    # -- the end: every remaining case is decided, the totals add up -----------------------

    def teardown(self) -> None:
        try:
            self._decide_the_rest_and_check()
        finally:
            self.redis.flushdb()
            self.redis.close()

    def _decide_the_rest_and_check(self) -> None:
        self.check_all()
        queue = self._queue(None)
        for case_id, case in sorted(self._cases().items()):
            if case["state"] == "decided":
                continue
            reviewer = case.get("assignee") or "lead"
            self.asked.add((case_id, reviewer, "decline", "closed at the end"))
            assert queue.decide(case_id, reviewer, "decline", "closed at the end").now
            self.made[case_id] += 1
            self.check_all()
        provisional_, final = self._stream()
        reviews = {e for e in self.published if PROVISIONAL[EVENTS.index(e)] == "review"}
        assert self.redis.xlen(STREAM) == len(self.published) + len(reviews)
        assert set(provisional_) == self.published and set(final) == reviews
        assert all(self.made[c] <= 1 for c in reviews), self.made  # 0: the reply was lost
        assert self.redis.zcard(QUEUE) == 0


def test_each_case_is_decided_once_and_published_once_whatever_the_crash_point() -> None:
    require_redis(TEST_REDIS_URL)
    HIT.clear()
    run_state_machine_as_test(ReviewCrashMachine, settings=machine_settings(EXAMPLES))
    print("reviewers crashed around:", dict(HIT.most_common()))  # shown with -s


@pytest.mark.parametrize(("mode", "nth"), [(mode, n) for mode in MODES for n in (1, 2)])
def test_a_reviewer_crashing_at_each_command_decides_once(mode: str, nth: int) -> None:
    """The same walk every time, each call crashing at its n-th command: every command of
    claim, release and decide is a crash point here, whatever the random search reaches."""
    require_redis(TEST_REDIS_URL)
    m = ReviewCrashMachine()
    crash = (mode, nth)
    steps: list[Callable[[], None]] = [
        lambda: m.publish(0),
        lambda: m.publish(1),
        lambda: m.publish(4),
        lambda: m.publish(0),  # a retried task
        lambda: m.claim(0, "alice", crash, ("bob", "claim"), retry=True),
        lambda: m.decide(0, "bob", "approve", REASONS[0], crash, ("carol", "release"), retry=True),
        lambda: m.decide(0, "alice", "decline", REASONS[1], crash, ("bob", "decide"), retry=True),
        lambda: m.decide(0, "alice", "decline", REASONS[1], crash, ("bob", "claim"), retry=True),  # clicks again
        lambda: m.claim(1, "bob", crash, ("alice", "claim"), retry=False),
        lambda: m.release(1, "carol", True, crash, ("alice", "claim"), retry=True),
        lambda: m.decide(1, "carol", "approve", REASONS[2], crash, ("bob", "release"), retry=False),
        lambda: m.publish(1),  # a retried task after the decision
        lambda: m.decide(1, "carol", "approve", REASONS[2], crash, ("bob", "claim"), retry=True),
    ]
    try:
        for step in steps:
            step()
            m.check_all()
    finally:
        m.teardown()  # every remaining case decided; the totals checked
    assert (m.races if mode == "race" else m.crashes) >= 1, f"no call reached command {nth}"


# Two plausible bugs, correct as long as nothing crashes: a decide split into two scripts.
# KEYS and ARGV as review.store's decide script.
_CHECKS = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'no_case'} end
if state == 'decided' then
  return {'decided', redis.call('HGET', KEYS[1], 'decided_by'), redis.call('HGET', KEYS[1], 'outcome'),
          redis.call('GET', KEYS[6]) or ''}
end
if state == 'claimed' and redis.call('HGET', KEYS[1], 'assignee') ~= ARGV[1] then
  return {'claimed', redis.call('HGET', KEYS[1], 'assignee')}
end
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[9] then return {'stale'} end
"""
_PUBLISH = """
local id = redis.call('XADD', KEYS[4], '*', 'event_id', ARGV[3], 'payload', ARGV[6])
redis.call('SET', KEYS[6], id, 'EX', ARGV[8])
redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[7])
redis.call('PUBLISH', KEYS[5], ARGV[6])
"""
_MARK = """
if redis.call('HGET', KEYS[1], 'state') == 'open' then
  redis.call('XADD', KEYS[3], '*', 'case_id', ARGV[3], 'action', 'claimed', 'actor', ARGV[1], 'at', ARGV[2],
             'detail', '')
end
redis.call('HSET', KEYS[1], 'state', 'decided', 'assignee', ARGV[1], 'decided_by', ARGV[1], 'outcome', ARGV[4],
           'reason', ARGV[5], 'decided_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('XADD', KEYS[3], '*', 'case_id', ARGV[3], 'action', 'decided', 'actor', ARGV[1], 'at', ARGV[2],
           'detail', ARGV[4] .. ': ' .. ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[10])
"""


class _TwoStepDecide(ReviewQueue):
    first: str
    second: str

    def __init__(self, client: redis.Redis, decisions_stream: str = STREAM) -> None:
        super().__init__(client, decisions_stream)
        first = client.register_script(self.first)
        second = client.register_script(self.second)

        def decide(keys: list[str], args: list[Any]) -> Any:
            reply = first(keys=keys, args=args)
            if text(reply[0]) != "ok":
                return reply
            return second(keys=keys, args=args)

        self._decide = cast(Script, decide)


class PublishesThenMarks(_TwoStepDecide):
    """Checks and publishes, then marks the case decided in a second script: a crash between
    the two (or a lost reply of the first) and the retry publishes again."""

    first = _CHECKS + _PUBLISH + "return {'ok', id}"
    second = _MARK + "return {'ok', redis.call('GET', KEYS[6])}"


class MarksThenPublishes(_TwoStepDecide):
    """Marks the case decided, then publishes in a second script: a crash between the two
    and the final decision is never published (the retry finds the case decided)."""

    first = _CHECKS + _MARK + "return {'ok'}"
    second = _PUBLISH + "return {'ok', id}"


@pytest.mark.parametrize(
    ("buggy", "found"),
    [
        (PublishesThenMarks, "final decision|decided now 2 times|nobody asked"),
        (MarksThenPublishes, "final decision"),
    ],
)
def test_the_machine_finds_a_queue_that_publishes_twice(buggy: type[ReviewQueue], found: str) -> None:
    require_redis(TEST_REDIS_URL)

    class Buggy(ReviewCrashMachine):
        queue_class = buggy

    with pytest.raises(AssertionError, match=found):
        run_state_machine_as_test(Buggy, settings=machine_settings(300, phases=(Phase.generate,)))
