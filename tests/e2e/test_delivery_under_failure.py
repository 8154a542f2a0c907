"""Delivery guarantees with things broken on purpose, against a real Airflow on PostgreSQL.

- a crash between Airflow's acceptance and the acknowledgement makes no second run;
- kill -9 one of two listener processes every few seconds while signups flow, with 5%
  malformed events mixed in: nothing lost, nothing run or decided twice, every malformed
  event dead-lettered with its reason;
- the api-server stopped for 30 s mid-stream: nothing lost, the backlog drains afterwards.

E2E_CHAOS_SIGNUPS (default 1000) sets the size of the kill test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from onboarding.airflow import AirflowClient, AirflowSettings
from onboarding.decision import utc_now
from onboarding.keys import run_id_for
from onboarding.publisher import publish_raw, publish_signup
from onboarding.schema import DEFAULT_MAX_PAYLOAD_BYTES, validate_signup
from onboarding.streams import ensure_group
from risk.samples import new_signup
from stack.processes import ManagedProcess
from testkit.realtime import RealtimeStack, running_realtime
from tests.e2e.conftest import REPORT

pytestmark = pytest.mark.e2e

CHAOS_SIGNUPS = int(os.environ.get("E2E_CHAOS_SIGNUPS", "1000"))
FAST_CLAIM = {"LISTENER_CLAIM_IDLE_MS": "2000", "LISTENER_CLAIM_INTERVAL_S": "0.5", "LOG_FORMAT": "text"}


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path
) -> Iterator[RealtimeStack]:
    home = tmp_path_factory.mktemp("chaos-postgres")
    with running_realtime("postgres", home, trained_model_dir, request.session, "chaos") as realtime:
        yield realtime


def decisions(stack: RealtimeStack) -> list[dict[str, Any]]:
    return [json.loads(f[b"payload"]) for _id, f in stack.redis.xrange(stack.streams.decisions_stream)]


def wait_for_decisions(stack: RealtimeStack, want: int, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    last_count, last_change = -1, time.monotonic()
    while True:
        count = stack.redis.xlen(stack.streams.decisions_stream)
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        if count >= want or time.monotonic() > deadline or time.monotonic() - last_change > 300:
            time.sleep(3)  # a duplicate would show up right behind
            return decisions(stack)
        time.sleep(1)


def pending(stack: RealtimeStack) -> int:
    return stack.redis.xpending(stack.streams.signups_stream, "onboarding-listener")["pending"]


def lag(stack: RealtimeStack) -> int:
    groups = stack.redis.xinfo_groups(stack.streams.signups_stream)
    return int(groups[0].get("lag") or 0) if groups else 0


def kill_hard(process: ManagedProcess) -> None:
    pid = process.pid()
    if pid is not None:
        os.killpg(pid, signal.SIGKILL)
        while process.running():
            time.sleep(0.01)
        process.pid_file.unlink(missing_ok=True)


def malformed(kind: str, rng: random.Random, reuse_of: dict[str, Any] | None) -> tuple[str, str]:
    """A bad payload and the dead-letter reason it must get."""
    event = new_signup(rng=rng)
    if kind == "not_json":
        return f"{{'single': 'quotes', 'n': {rng.random()}}}", "not_json"
    if kind == "missing_field":
        del event["application"]["housing"]
        return json.dumps(event), "missing_field"
    if kind == "wrong_type":
        event["application"]["duration_months"] = "twelve"
        return json.dumps(event), "wrong_type"
    if kind == "out_of_range":
        event["application"]["age_years"] = 7
        return json.dumps(event), "out_of_range"
    if kind == "unknown_schema_version":
        event["schema_version"] = 9
        return json.dumps(event), "unknown_schema_version"
    if kind == "oversize":
        event["padding"] = "x" * 70_000
        return json.dumps(event), "oversize"
    if kind == "extra_field":
        event["referrer"] = "campaign-7"
        return json.dumps(event), "unknown_field"
    assert kind == "event_id_reused" and reuse_of is not None
    return json.dumps(new_signup(rng=rng, event_id=reuse_of["event_id"])), "event_id_reused"


KINDS = [
    "not_json",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "unknown_schema_version",
    "oversize",
    "extra_field",
    "event_id_reused",
]


def test_crash_between_acceptance_and_ack_makes_no_second_run(stack: RealtimeStack) -> None:
    event = new_signup(rng=random.Random(11))
    publish_signup(stack.redis, stack.streams.signups_stream, event)
    # The stack's intake process creates the listeners' group at its start (it may exist).
    ensure_group(stack.redis, stack.streams.signups_stream, "onboarding-listener", start="0")
    # A listener read the entry and Airflow accepted its run; then the listener died.
    stack.redis.xreadgroup("onboarding-listener", "died-after-trigger", {stack.streams.signups_stream: ">"}, count=1)
    client = AirflowClient(
        AirflowSettings(
            url=stack.instance.spec.api_url, password=stack.instance.listener_password_file.read_text().strip()
        )
    )
    client.trigger(run_id_for(event["event_id"]), {**validate_signup(event).to_dict(), "accepted_at": utc_now()})
    client.close()
    listener, _port = stack.start_listener(**FAST_CLAIM)
    try:
        deadline = time.monotonic() + 60
        while pending(stack) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pending(stack) == 0
        mine = [d for d in wait_for_decisions(stack, 1, 120) if d["event_id"] == event["event_id"]]
        assert len(mine) == 1
        runs = [r for r in stack.dag_runs() if r["dag_run_id"] == run_id_for(event["event_id"])]
        assert len(runs) == 1
        assert stack.redis.xlen(stack.streams.dead_letter_stream) == 0
        # The listener that claims the entry finds the run (a 409, read back), or, when the
        # warm instance decided it within the claim time, its decision already out.
        log = listener.tail(200)
        assert "already_exists" in log or "already decided, no run" in log, log
    finally:
        kill_hard(listener)
        stack.listeners.remove(listener)
        stack.redis.delete(stack.streams.signups_stream, stack.streams.decisions_stream)


@pytest.mark.timeout(3600)
def test_kill_9_listeners_while_signups_flow(stack: RealtimeStack) -> None:
    rng = random.Random(2026)
    runs_before = {r["dag_run_id"] for r in stack.dag_runs()}
    listeners = [stack.start_listener(**FAST_CLAIM)[0] for _ in range(2)]
    valid: list[dict[str, Any]] = []
    expected_dead: dict[str, str] = {}  # payload -> reason
    publishing_done = threading.Event()
    recoveries: list[float] = []
    kills = 0

    def publish_all() -> None:
        for n in range(CHAOS_SIGNUPS):
            if n % 20 == 19:  # 5% malformed, every kind
                kind = KINDS[(n // 20) % len(KINDS)]
                reuse = valid[-100] if kind == "event_id_reused" and len(valid) > 100 else None
                if kind == "event_id_reused" and reuse is None:
                    kind = "not_json"
                payload, reason = malformed(kind, rng, reuse)
                expected_dead[payload] = reason
                publish_raw(stack.redis, stack.streams.signups_stream, payload)
            else:
                event = new_signup(rng=rng)
                valid.append(event)
                publish_signup(stack.redis, stack.streams.signups_stream, event)
            time.sleep(0.03)
        publishing_done.set()

    publisher = threading.Thread(target=publish_all)
    started = time.monotonic()
    publisher.start()
    # Kill one of the two listeners every few seconds, replacing it with a new process.
    while not publishing_done.is_set() or pending(stack) or lag(stack):
        time.sleep(3)
        victim = listeners.pop(rng.randrange(len(listeners)))
        consumer = victim.env["LISTENER_CONSUMER"]
        kill_hard(victim)
        kills += 1
        killed_at = time.monotonic()
        held = [
            p["message_id"]
            for p in stack.redis.xpending_range(
                stack.streams.signups_stream, "onboarding-listener", "-", "+", 1000, consumername=consumer
            )
        ]
        listeners.append(stack.start_listener(**FAST_CLAIM)[0])
        if held:
            threading.Thread(target=_time_recovery, args=(stack, held, killed_at, recoveries)).start()
        if time.monotonic() - started > 900:
            break
    publisher.join()
    triggered_after_s = time.monotonic() - started

    got = wait_for_decisions(stack, len(valid), timeout_s=3600)
    decided_after_s = time.monotonic() - started
    by_event = Counter(d["event_id"] for d in got)
    valid_ids = {e["event_id"] for e in valid}
    lost = len(valid_ids - set(by_event))
    duplicates = sum(n - 1 for n in by_event.values() if n > 1)
    runs = Counter(r["dag_run_id"] for r in stack.dag_runs() if r["dag_run_id"] not in runs_before)
    duplicate_runs = sum(n - 1 for n in runs.values() if n > 1)
    dead = stack.redis.xrange(stack.streams.dead_letter_stream)
    dead_reasons = {
        fields.get(b"original.payload", b"").decode(errors="replace"): fields[b"reason"].decode()
        for _id, fields in dead
    }
    REPORT.append(
        f"kill -9 test: {CHAOS_SIGNUPS} signups ({len(valid)} valid, {len(expected_dead)} malformed), "
        f"{kills} kills; lost {lost}, duplicate runs {duplicate_runs}, duplicate decisions {duplicates}; "
        f"dead letters {len(dead)}; recovery after a kill median {_fmt(recoveries, statistics.median)}, "
        f"max {_fmt(recoveries, max)} (n={len(recoveries)}); all triggered after {triggered_after_s:.0f} s, "
        f"all decided after {decided_after_s:.0f} s"
    )
    assert lost == 0
    assert duplicates == 0
    assert duplicate_runs == 0
    assert set(runs) == {run_id_for(e) for e in valid_ids}
    assert set(by_event) == valid_ids
    # A dead letter keeps at most the payload limit of each field (an oversize one is cut).
    expected_dead = {_as_dead_lettered(payload): reason for payload, reason in expected_dead.items()}
    unexpected = [
        (fields[b"reason"].decode(), fields.get(b"detail", b"").decode(errors="replace")[:200])
        for _id, fields in dead
        if fields.get(b"original.payload", b"").decode(errors="replace") not in expected_dead
    ]
    assert not unexpected, f"valid signups dead-lettered: {unexpected}"
    assert dead_reasons == expected_dead
    assert pending(stack) == 0


def _as_dead_lettered(payload: str) -> str:
    return payload.encode()[:DEFAULT_MAX_PAYLOAD_BYTES].decode(errors="replace")


def _time_recovery(stack: RealtimeStack, held: list[bytes], killed_at: float, out: list[float]) -> None:
    """Seconds until every entry the killed consumer held is settled by someone else."""
    ids = [h.decode() if isinstance(h, bytes) else h for h in held]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        still = [
            p
            for p in stack.redis.xpending_range(stack.streams.signups_stream, "onboarding-listener", "-", "+", 10_000)
            if (p["message_id"].decode() if isinstance(p["message_id"], bytes) else p["message_id"]) in ids
        ]
        if not still:
            out.append(time.monotonic() - killed_at)
            return
        time.sleep(0.1)


def _fmt(values: list[float], fn: Any) -> str:
    return f"{fn(values):.1f} s" if values else "n/a"


@pytest.mark.timeout(1800)
def test_api_server_down_for_30_s_mid_stream(stack: RealtimeStack) -> None:
    for listener in list(stack.listeners):
        kill_hard(listener)
        stack.listeners.remove(listener)
    for key in (stack.streams.signups_stream, stack.streams.decisions_stream, stack.streams.dead_letter_stream):
        stack.redis.delete(key)
    for _ in range(2):
        stack.start_listener(LOG_FORMAT="text")
    rng = random.Random(7)
    events = [new_signup(rng=rng) for _ in range(200)]
    api = next(p for p in stack.instance.processes() if p.name.endswith("api-server"))
    outage: dict[str, float] = {}

    def break_airflow() -> None:
        time.sleep(5)
        api.stop(timeout_s=20)
        outage["down_at"] = time.monotonic()
        time.sleep(30)
        api.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{stack.instance.spec.api_url}/api/v2/monitor/health", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        outage["up_at"] = time.monotonic()

    breaker = threading.Thread(target=break_airflow)
    breaker.start()
    for event in events:  # 200 signups over ~40 s, straddling the outage
        publish_signup(stack.redis, stack.streams.signups_stream, event)
        time.sleep(0.2)
    breaker.join()
    deadline = time.monotonic() + 600
    while (pending(stack) or lag(stack)) and time.monotonic() < deadline:
        time.sleep(0.2)
    triggered_s = time.monotonic() - outage["up_at"]
    got = wait_for_decisions(stack, len(events), timeout_s=1800)
    decided_s = time.monotonic() - outage["up_at"]
    by_event = Counter(d["event_id"] for d in got)
    lost = len({e["event_id"] for e in events} - set(by_event))
    duplicates = sum(n - 1 for n in by_event.values() if n > 1)
    reviews_for_failure = sum(1 for d in got if d.get("error"))
    REPORT.append(
        f"api-server outage test: 200 signups, api-server down 30 s; lost {lost}, duplicates {duplicates}; "
        f"backlog triggered {triggered_s:.1f} s and all decided {decided_s:.1f} s after Airflow returned; "
        f"{reviews_for_failure} answered review because a task failed during the outage"
    )
    assert lost == 0
    assert duplicates == 0
    assert stack.redis.xlen(stack.streams.dead_letter_stream) == 0
