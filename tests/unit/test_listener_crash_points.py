"""Crash at every point: a stateful property test of the listener's delivery guarantees.

Hypothesis' rule-based state machine drives the real `listener.consumer.Listener` against a
real Redis and a scripted Airflow. Between its steps it publishes signups (new ones,
duplicates, impostors reusing an event id, malformed entries, events Airflow's own
validation rejects), scripts Airflow faults (5xx, and timeouts after the run was created,
the reply lost), runs a listener that is killed before its n-th call to Redis or Airflow (so
between any two steps of handling an entry; the process state is thrown away), lets another
consumer claim what a dead one left, finishes runs (they publish their decision through the
real idempotent publish, a retried task publishing twice) and archives finished runs, as the
weekly archive does.

After every step it checks what may never happen, even mid-crash:
- an entry acknowledged before it is settled: each acknowledged entry has its dead letter,
  or its event has a run Airflow accepted with that entry's content and is recorded as
  awaiting its decision (or the decision is out);
- a second run for an event, a second decision, a second dead letter for an entry, or a
  dead letter whose reason the entry does not explain.
At the end of each example (teardown) the surviving listeners drain everything, the scripted
runs finish, and every entry must have its one fate: decided exactly once through exactly one
run, or dead-lettered exactly once with its reason.

CI runs `CRASH_POINTS_EXAMPLES` (default 60) examples of up to 30 steps; a longer search:
`CRASH_POINTS_EXAMPLES=2000 .venv/bin/pytest tests/unit/test_listener_crash_points.py`.
`test_the_machine_finds_a_listener_that_acknowledges_too_early` shows it fails on a
listener that acknowledges before triggering.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, cast

import pytest
import redis
from hypothesis import Phase
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from listener.consumer import Listener, fingerprint
from onboarding.airflow import DagRun, TriggerOutcome
from onboarding.awaiting import awaiting_key
from onboarding.decision import DecisionEvent, publish_decision
from onboarding.errors import AirflowRejected, AirflowUnavailable
from onboarding.keys import marker_key, run_id_for
from onboarding.publisher import publish_raw
from onboarding.schema import validate_signup
from risk.samples import new_signup
from tests.conftest import TEST_REDIS_URL
from tests.unit.crash_search import machine_settings, require_redis
from tests.unit.test_listener import SETTINGS

STREAM = SETTINGS.streams.signups_stream
GROUP = SETTINGS.group
DECISIONS = SETTINGS.streams.decisions_stream
DEAD = SETTINGS.streams.dead_letter_stream
CONSUMERS = ("listener-a", "listener-b")
EXAMPLES = int(os.environ.get("CRASH_POINTS_EXAMPLES", "60"))
REJECTED_PREFIX = "evt-airflow-rejects-"

# The malformed entries and the reason each must be dead-lettered with.
MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "not JSON": ({"payload": b"{not json"}, "not_json"),
    "no payload field": ({"data": b"x"}, "missing_payload"),
    "no user_id": ({"payload": json.dumps({"schema_version": 1, "event_id": "evt-half"})}, "missing_field"),
}


class Crash(BaseException):
    """The listener process dies here: nothing after this point runs (a BaseException, so no
    `except Exception` in the listener can swallow it)."""

    def __init__(self, call: str) -> None:
        super().__init__(f"killed before {call}")
        self.call = call


# Which calls a listener was killed before, over a test run: every step of handling an
# entry must be among them, or the search did not test what it claims.
KILLED_BEFORE: Counter[str] = Counter()
EVERY_STEP = {
    "xgroup_create",  # a starting listener makes sure its group exists
    "xautoclaim",  # claim what a dead consumer left
    "xreadgroup",  # read own pending, then new entries
    "pipeline.execute",  # delivery counts; dead letter + acknowledgement (MULTI)
    "set",  # the event id's fingerprint
    "exists",  # is its decision out already?
    "airflow.trigger",
    "airflow.get_run",  # a 409: is the run ours?
    "fcall",  # recorded as awaiting its decision (FCALL record_accepted)
    "xclaim",  # keep-alive of the entries in hand while Airflow is slow
    "xack",
}


class CrashPlan:
    """Counts the listener's calls to Redis and Airflow, by name; dies before the n-th call
    of one name (say the 2nd `xack`: after the first entry was settled, before the second)."""

    def __init__(self, before: tuple[str, int] | None) -> None:
        self.before = before
        self.calls: Counter[str] = Counter()

    def step(self, name: str) -> None:
        self.calls[name] += 1
        if self.before is not None and self.before == (name, self.calls[name]):
            raise Crash(name)


class _CrashingPipeline:
    def __init__(self, pipe: Any, plan: CrashPlan) -> None:
        self._pipe = pipe
        self._plan = plan

    def __enter__(self) -> _CrashingPipeline:
        self._pipe.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._pipe.__exit__(*exc)

    def execute(self) -> Any:
        self._plan.step("pipeline.execute")  # queued commands reach Redis only here
        return self._pipe.execute()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


class CrashingRedis:
    """The real client, with a crash point before every command the listener sends."""

    def __init__(self, client: redis.Redis, plan: CrashPlan) -> None:
        self._client = client
        self._plan = plan

    def pipeline(self, *args: Any, **kwargs: Any) -> _CrashingPipeline:
        return _CrashingPipeline(self._client.pipeline(*args, **kwargs), self._plan)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._plan.step(name)
            return attr(*args, **kwargs)

        return call


class ScriptedAirflow:
    """Airflow as the listener sees it: run ids are unique (a second trigger gets a 409), its
    own validation rejects some events (400), and scripted faults: `5xx` (nothing created)
    and `timeout` (the run was created, the reply lost)."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}  # in the metadata database now
        self.accepted: Counter[str] = Counter()  # every run Airflow ever created
        self.confs: dict[str, dict[str, Any]] = {}  # each created run's conf, kept after archive
        self.finished: set[str] = set()
        self.faults: list[str] = []
        self.plan = CrashPlan(None)

    def trigger(self, run_id: str, conf: dict[str, Any]) -> TriggerOutcome:
        self.plan.step("airflow.trigger")
        fault = self.faults.pop(0) if self.faults else None
        if fault == "5xx":
            raise AirflowUnavailable("server_error", "503 Service Unavailable")
        if run_id.startswith(run_id_for(REJECTED_PREFIX)):
            raise AirflowRejected("bad_request", "400: params do not match the DAG's schema")
        if run_id in self.runs:
            return TriggerOutcome.ALREADY_EXISTS
        self.runs[run_id] = conf
        self.confs[run_id] = conf
        self.accepted[run_id] += 1
        if fault == "timeout":
            raise AirflowUnavailable("timeout", "read timed out")
        return TriggerOutcome.CREATED

    def get_run(self, run_id: str) -> DagRun | None:
        self.plan.step("airflow.get_run")
        if self.faults and self.faults[0] == "5xx":
            self.faults.pop(0)
            raise AirflowUnavailable("server_error", "502 Bad Gateway")
        conf = self.runs.get(run_id)
        return None if conf is None else DagRun(run_id=run_id, state="running", conf=conf)


@cache
def signup(event: int, variant: int) -> dict[str, Any]:
    """The same (event, variant) is the same content; another variant reuses the event id."""
    body = new_signup(rng=random.Random(event * 10 + variant), user_id=f"user-{event}-{variant}")
    return body | {"event_id": f"evt-crash-{event}", "occurred_at": "2026-11-30T10:00:00.000+00:00"}


@dataclass(frozen=True)
class Published:
    entry_id: str
    event: dict[str, Any] | None  # None: malformed
    malformed_reason: str | None = None


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def _content(event: dict[str, Any]) -> str:
    """The fingerprint of an event as the listener sends it to Airflow (validated, normalised)."""
    return fingerprint(validate_signup(event).to_dict())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ListenerCrashMachine(RuleBasedStateMachine):
    listener_class: type[Listener] = Listener

    def __init__(self) -> None:
        super().__init__()
        self.redis = redis.Redis.from_url(TEST_REDIS_URL)
        self.redis.flushdb()
        self.airflow = ScriptedAirflow()
        self.published: list[Published] = []
        self.crashes = 0

    @initialize()
    def create_group(self) -> None:
        self.listener_class(self.redis, self.airflow, SETTINGS).ensure_group()

    # -- what the product app sends ------------------------------------------------------

    @rule(event=st.integers(0, 3), variant=st.sampled_from([0, 0, 0, 1]))
    def publish_signup(self, event: int, variant: int) -> None:
        body = signup(event, variant)
        entry_id = publish_raw(self.redis, STREAM, json.dumps(body))
        self.published.append(Published(entry_id, body))

    @rule(kind=st.sampled_from(sorted(MALFORMED)))
    def publish_malformed(self, kind: str) -> None:
        fields, reason = MALFORMED[kind]
        entry_id = _text(self.redis.xadd(STREAM, fields))
        self.published.append(Published(entry_id, None, reason))

    @rule(n=st.integers(0, 1))
    def publish_one_airflow_rejects(self, n: int) -> None:
        body = signup(9, 0) | {"event_id": f"{REJECTED_PREFIX}{n}"}
        entry_id = publish_raw(self.redis, STREAM, json.dumps(body))
        self.published.append(Published(entry_id, body))

    # -- Airflow and the listeners ---------------------------------------------------------

    @rule(faults=st.lists(st.sampled_from(["5xx", "timeout"]), min_size=1, max_size=3))
    def airflow_fails_next(self, faults: list[str]) -> None:
        self.airflow.faults.extend(faults)

    @rule(
        consumer=st.sampled_from(CONSUMERS),
        crash_before=st.one_of(st.none(), st.tuples(st.sampled_from(sorted(EVERY_STEP)), st.integers(1, 3))),
        claim=st.booleans(),
    )
    def listener_runs(self, consumer: str, crash_before: tuple[str, int] | None, claim: bool) -> None:
        """A listener process starts, works through what is waiting and perhaps dies. With
        `claim` it takes over every entry another consumer left pending (their idle time is up).
        `crash_before` (call, n): it is killed before its n-th call of that name, if it gets there."""
        self._run(consumer, crash_before, claim)

    @rule(which=st.integers(0, 2**16), twice=st.booleans())
    def runs_finish(self, which: int, twice: bool) -> None:
        """Some runs finish: the task publishes its decision (a retried task publishes again)."""
        open_runs = sorted(set(self.airflow.runs) - self.airflow.finished)
        for i, run_id in enumerate(open_runs):
            if which >> i & 1:
                self._finish(run_id, twice)

    @rule()
    def weekly_archive(self) -> None:
        """The archive removes finished runs from the metadata database."""
        for run_id in list(self.airflow.runs):
            if run_id in self.airflow.finished:
                del self.airflow.runs[run_id]

    # -- helpers ---------------------------------------------------------------------------

    def _run(self, consumer: str, crash_before: tuple[str, int] | None, claim: bool) -> None:
        plan = CrashPlan(crash_before)
        self.airflow.plan = plan
        settings_ = replace(
            SETTINGS,
            consumer=consumer,
            claim_idle_ms=0 if claim else 10**9,
            claim_interval_s=0.0,
            max_deliveries=10**6,  # the limit has its own tests; here it would hide the fates
        )
        client = cast(redis.Redis, CrashingRedis(self.redis, plan))
        try:
            self.listener_class(client, self.airflow, settings_).run(burst=True)
        except Crash as crash:
            self.crashes += 1
            KILLED_BEFORE[crash.call] += 1
        finally:
            self.airflow.plan = CrashPlan(None)

    def _finish(self, run_id: str, twice: bool) -> None:
        conf = self.airflow.runs[run_id]
        decision = DecisionEvent(
            event_id=conf["event_id"],
            user_id=conf["user_id"],
            decision="approve",
            score=0.1,
            reason_codes=[],
            model_version="scripted",
            run_id=run_id,
        )
        for _ in range(2 if twice else 1):
            publish_decision(self.redis, DECISIONS, replace(decision, timestamps={}))
        self.airflow.finished.add(run_id)

    def _dead_letters(self) -> dict[str, list[str]]:
        letters: dict[str, list[str]] = {}
        for _id_, fields in self.redis.xrange(DEAD):
            letters.setdefault(_text(fields[b"original_id"]), []).append(_text(fields[b"reason"]))
        return letters

    def _decisions(self) -> Counter[str]:
        return Counter(_text(fields[b"event_id"]) for _id_, fields in self.redis.xrange(DECISIONS))

    def _acknowledged(self) -> list[Published]:
        groups = {_text(g["name"]): g for g in self.redis.xinfo_groups(STREAM)}
        last = _id(_text(groups[GROUP]["last-delivered-id"]))
        pending = {_text(p["message_id"]) for p in self.redis.xpending_range(STREAM, GROUP, "-", "+", 10_000)}
        return [p for p in self.published if _id(p.entry_id) <= last and p.entry_id not in pending]

    def _allowed_reasons(self, entry: Published) -> set[str]:
        if entry.event is None:
            return {cast(str, entry.malformed_reason)}
        if entry.event["event_id"].startswith(REJECTED_PREFIX):
            return {"rejected_by_airflow"}
        others = {
            _content(p.event)
            for p in self.published
            if p.event is not None and p.event["event_id"] == entry.event["event_id"]
        }
        return {"event_id_reused"} if len(others) > 1 else set()

    # -- what must hold after every step ---------------------------------------------------

    @invariant()
    def nothing_is_acknowledged_before_it_is_settled(self) -> None:
        letters = self._dead_letters()
        awaiting = {_text(m) for m in self.redis.zrange(awaiting_key(SETTINGS.streams), 0, -1)}
        for entry in self._acknowledged():
            if entry.entry_id in letters:
                continue
            assert entry.event is not None, f"malformed entry {entry.entry_id} acknowledged without a dead letter"
            event_id = entry.event["event_id"]
            run_id = run_id_for(event_id)
            assert self.airflow.accepted[run_id] == 1, f"{entry.entry_id} acknowledged, but Airflow has no run for it"
            assert fingerprint(self.airflow.confs[run_id]) == _content(entry.event), (
                f"{entry.entry_id} acknowledged against a run of other content"
            )
            decided = bool(self.redis.exists(marker_key(DECISIONS, event_id)))
            assert event_id in awaiting or decided, f"{entry.entry_id} acknowledged but not recorded as awaiting"

    @invariant()
    def never_a_second_run_decision_or_dead_letter(self) -> None:
        assert all(n == 1 for n in self.airflow.accepted.values()), self.airflow.accepted
        assert all(n == 1 for n in self._decisions().values()), self._decisions()
        for entry_id, reasons in self._dead_letters().items():
            assert len(reasons) == 1, f"{entry_id} dead-lettered {len(reasons)} times: {reasons}"

    @invariant()
    def every_dead_letter_has_its_reason(self) -> None:
        by_id = {p.entry_id: p for p in self.published}
        for entry_id, [reason, *_] in self._dead_letters().items():
            entry = by_id[entry_id]
            assert reason in self._allowed_reasons(entry), f"{entry_id} dead-lettered as {reason!r}: {entry}"

    # -- the end: survivors drain, runs finish, every entry has its one fate ---------------

    def teardown(self) -> None:
        try:
            self._drain_and_check()
        finally:
            self.redis.flushdb()
            self.redis.close()

    def _drain_and_check(self) -> None:
        self.airflow.faults.clear()
        for consumer in CONSUMERS:
            self._run(consumer, None, claim=True)
        for run_id in sorted(set(self.airflow.runs) - self.airflow.finished):
            self._finish(run_id, twice=False)
        assert self.redis.xpending(STREAM, GROUP)["pending"] == 0
        assert len(self._acknowledged()) == len(self.published), "entries left unread"

        letters = self._dead_letters()
        decisions = self._decisions()
        for entry in self.published:
            if entry.entry_id in letters:
                [reason] = letters[entry.entry_id]
                assert reason in self._allowed_reasons(entry)
                continue
            assert entry.event is not None, f"malformed entry {entry.entry_id} acknowledged without a dead letter"
            event_id = entry.event["event_id"]
            assert not event_id.startswith(REJECTED_PREFIX), (
                f"{entry.entry_id}: Airflow rejected it, yet no dead letter"
            )
            assert self.airflow.accepted[run_id_for(event_id)] == 1, f"{event_id}: no run"
            assert fingerprint(self.airflow.confs[run_id_for(event_id)]) == _content(entry.event)
            assert decisions[event_id] == 1, f"{event_id}: {decisions[event_id]} decisions"
        # No run nobody is told about: each run Airflow accepted has an entry acknowledged for it.
        settled = {p.event["event_id"] for p in self.published if p.event and p.entry_id not in letters}
        assert {conf["event_id"] for conf in self.airflow.confs.values()} <= settled


def test_no_entry_is_lost_doubled_or_acknowledged_early_whatever_the_crash_point() -> None:
    require_redis(TEST_REDIS_URL)
    KILLED_BEFORE.clear()
    run_state_machine_as_test(ListenerCrashMachine, settings=machine_settings(EXAMPLES))
    print("listener killed before:", dict(KILLED_BEFORE.most_common()))  # shown with -s


def _checked(machine: ListenerCrashMachine, action: Callable[[], object]) -> None:
    action()
    machine.nothing_is_acknowledged_before_it_is_settled()
    machine.never_a_second_run_decision_or_dead_letter()
    machine.every_dead_letter_has_its_reason()


@pytest.mark.parametrize(
    ("step", "nth"), [(step, n) for step in sorted(EVERY_STEP) for n in (1, 2) if (step, n) != ("xgroup_create", 2)]
)
def test_a_listener_killed_before_each_call_loses_and_doubles_nothing(step: str, nth: int) -> None:
    """The same walk every time, killed before the n-th call of each name: every step of
    handling an entry is a crash point here, whatever the random search reaches."""
    require_redis(TEST_REDIS_URL)
    KILLED_BEFORE.clear()
    m = ListenerCrashMachine()
    try:
        _checked(m, m.create_group)
        for event_, variant in [(0, 0), (1, 0), (0, 0), (1, 1), (2, 0)]:
            _checked(m, lambda: m.publish_signup(event_, variant))
        _checked(m, lambda: m.publish_malformed("not JSON"))
        _checked(m, lambda: m.publish_one_airflow_rejects(0))
        _checked(m, lambda: m.airflow_fails_next(["timeout", "5xx"]))
        _checked(m, lambda: m.listener_runs("listener-a", (step, nth), claim=False))
        _checked(m, lambda: m.runs_finish(which=0b01, twice=True))
        _checked(m, lambda: m.airflow_fails_next(["5xx", "timeout"]))
        _checked(m, lambda: m.listener_runs("listener-b", (step, nth), claim=True))
        _checked(m, lambda: m.runs_finish(which=0b11, twice=False))
        _checked(m, m.weekly_archive)
        _checked(m, lambda: m.publish_signup(0, 0))  # a resend after its run was archived
        _checked(m, lambda: m.publish_malformed("no payload field"))
        _checked(m, lambda: m.listener_runs("listener-a", (step, nth), claim=True))
    finally:
        m.teardown()  # the survivors drain; every entry's one fate is checked
    assert m.crashes >= 1, f"the walk never reached call {nth} of {step}"


class AcknowledgesFirst(Listener):
    """A plausible bug: acknowledge as soon as the entry is read, then do the work."""

    def _handle(self, entry_id: str, fields: Any, deliveries: int) -> bool:
        self.redis.xack(self.stream, self.settings.group, entry_id)
        return super()._handle(entry_id, fields, deliveries)


def test_the_machine_finds_a_listener_that_acknowledges_too_early() -> None:
    require_redis(TEST_REDIS_URL)

    class Buggy(ListenerCrashMachine):
        listener_class = AcknowledgesFirst

    with pytest.raises(AssertionError, match="acknowledged"):
        run_state_machine_as_test(Buggy, settings=machine_settings(200, phases=(Phase.generate,)))
