"""Each role's grant, derived from a real run: every command a role may run (ops/redis_acl.py,
categories expanded with ACL CAT) was run by the role's real workload against a real Redis,
and the workload ran nothing outside the grant.

The commands are taken from MONITOR on an administrator's connection while only the role's
client works on the test's database: its own commands, and (`lua` lines) the commands the
service's Redis Functions ran for it. FCALL itself is not shown by MONITOR (Redis marks it
`skip_monitor`): a role used it when a function's commands show up, the only way Lua runs
for a role that holds no EVAL.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import redis

from onboarding import keys
from onboarding.decision import DecisionEvent, publish_decision
from onboarding.publisher import publish_raw, publish_signup
from ops.redis_acl import _CONNECT, roles
from risk.samples import new_signup
from tests.unit.test_listener import FakeAirflow
from tests.unit.test_redis_acl import STREAMS, acl_users  # noqa: F401 (the fixture)

# Granted to every role, but run before the connection SELECTs the test's database (MONITOR
# shows them on database 0, where this test does not look) or only by some clients:
# the connection handshake of redis-py and of the other clients (HELLO/AUTH, SELECT, CLIENT
# SETNAME/GETNAME, PING from health checks). ops/redis_acl.py grants them as `_CONNECT`.
HANDSHAKE = {c.removeprefix("+") for c in _CONNECT}

# Commands MONITOR shows with their subcommand (the ACL grants them as `cmd|sub`).
_CONTAINERS = {"xinfo", "xgroup", "client", "script", "function", "object", "config", "acl", "memory"}
_LINE = re.compile(r'^\S+ \[(\d+) ([^\]]+)\] "((?:[^"\\]|\\.)*)"(?: "((?:[^"\\]|\\.)*)")?')


def granted(role: str, admin: redis.Redis) -> set[str]:
    """The commands the role's rules allow, root and selectors together, categories expanded."""
    rules = next(r for r in roles(STREAMS) if r.name == role).rules
    tokens = [t.strip("()") for rule in rules for t in rule.split()]
    out: set[str] = set()
    for token in tokens:
        if token[:1] not in "+-":
            continue
        name = token[1:].lower()
        if name == "@all":  # every role starts from -@all: nothing granted before it counts
            out = set()
            continue
        names = {text(c) for c in admin.execute_command("ACL", "CAT", name[1:])} if name.startswith("@") else {name}
        if token[0] == "-":  # `-function` removes every subcommand too (`function|load`, ...)
            out = {c for c in out if c not in names and c.split("|")[0] not in names}
        else:
            out |= names
    return out


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Connections whose commands MONITOR ignores: the test's own watcher (seeding, polling and
# asserting while a workload runs), never the role's.
IGNORED: set[str] = set()


class Monitor:
    """The commands run on one database while it records: (source, command) pairs."""

    def __init__(self, url: str, db: int) -> None:
        self.db = str(db)
        self.client = redis.Redis.from_url(url)
        self.seen: list[tuple[str, str]] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            self._ready.set()
            conn = monitor.connection
            while not self._stop.is_set():
                if not conn.can_read(timeout=0.05):
                    continue
                line = text(conn.read_response())
                match = _LINE.match(line)
                if match is None or match.group(1) != self.db or match.group(2) in IGNORED:
                    continue
                command = match.group(3).lower()
                if command in _CONTAINERS and match.group(4):
                    command = f"{command}|{match.group(4).lower()}"
                self.seen.append(("lua" if match.group(2) == "lua" else "client", command))

    def __enter__(self) -> Monitor:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        # A marker on the monitored database: once MONITOR shows it, everything before it was read.
        marker = redis.Redis.from_url(STREAMS.redis_url)
        marker.execute_command("ECHO", "monitor-end")
        marker.close()
        for _ in range(100):
            if ("client", "echo") in self.seen:
                break
            self._stop.wait(0.05)
        self._stop.set()
        self._thread.join(5)
        self.client.close()

    def commands(self) -> set[str]:
        used = {command for _source, command in self.seen if command != "echo"}
        # Lua for a role without EVALSHA is a function it called; with EVALSHA (rq), its script.
        if any(source == "lua" for source, _command in self.seen) and ("client", "evalsha") not in self.seen:
            used.add("fcall")
        return used


@pytest.fixture
def run_as(
    acl_users: Callable[[str], redis.Redis],  # noqa: F811
    redis_client: redis.Redis,
) -> Iterator[Callable[[str, Callable[[redis.Redis], object]], set[str]]]:
    db = int(redis_client.connection_pool.connection_kwargs.get("db", 0))

    def run(role: str, workload: Callable[[redis.Redis], object]) -> set[str]:
        client = acl_users(role)
        client.ping()  # connected (and SELECTed) before recording: the handshake is HANDSHAKE
        with Monitor(STREAMS.redis_url, db) as monitor:
            workload(client)
        return monitor.commands()

    yield run


@pytest.fixture
def watcher(redis_client: redis.Redis) -> Iterator[redis.Redis]:
    """An administrator's single connection on the test's database whose commands the Monitor
    does not count: the test seeds, polls and asserts with it while a workload runs."""
    kwargs = redis_client.connection_pool.connection_kwargs
    client = redis.Redis(host=kwargs["host"], port=kwargs["port"], db=kwargs["db"], single_connection_client=True)
    client.ping()
    host, port = client.connection._sock.getsockname()[:2]  # type: ignore[union-attr]
    address = f"{host}:{port}"
    IGNORED.add(address)
    yield client
    IGNORED.discard(address)
    client.close()


def check(role: str, used: set[str], admin: redis.Redis, rare: dict[str, str]) -> None:
    grant = granted(role, admin)
    outside = used - grant
    assert not outside, f"{role} ran commands outside its grant: {sorted(outside)}"
    unused = grant - used - HANDSHAKE - set(rare)
    assert not unused, f"{role} is granted commands its workload never ran: {sorted(unused)}"
    stale = set(rare) - grant
    assert not stale, f"{role}: allow-listed but no longer granted: {sorted(stale)}"
    ran = set(rare) & used
    assert not ran, f"{role}: allow-listed as rare, but the workload ran them (drop them from the list): {sorted(ran)}"


# -- the roles' workloads ----------------------------------------------------------------


def test_listener_grant_is_what_the_listener_runs(run_as, redis_client: redis.Redis) -> None:
    from listener.consumer import Listener
    from listener.metrics import ListenerMetrics
    from listener.settings import ListenerSettings

    good = new_signup(rng=random.Random(11))
    publish_signup(redis_client, STREAMS.signups_stream, good)
    publish_signup(redis_client, STREAMS.signups_stream, good)  # a duplicate delivery of one event
    publish_raw(redis_client, STREAMS.signups_stream, b'{"event_id": "bad-1", "oops": ')  # refused, answered
    settings = ListenerSettings(streams=STREAMS, consumer="derived", block_ms=50, retry_initial_s=0.01)
    # One entry this consumer read before a restart: re-read with its delivery count (XPENDING).
    redis_client.xgroup_create(STREAMS.signups_stream, settings.group, id="0")
    redis_client.xreadgroup(settings.group, settings.consumer, {STREAMS.signups_stream: ">"}, count=1)

    def workload(client: redis.Redis) -> None:
        Listener(client, FakeAirflow(), settings, ListenerMetrics()).run(burst=True)

    used = run_as("listener", workload)
    check(
        "listener",
        used,
        redis_client,
        {
            "xclaim": "keep-alive of the entries in hand while Airflow is slow (listener/consumer.py _keep_alive)",
            "discard": "redis-py's pipeline sends DISCARD when a MULTI fails before EXEC",
            "hgetall": "the drift gauge (risk:drift:psi), read when the listener's metrics are scraped",
        },
    )


def test_intake_grant_is_what_the_intake_process_runs(run_as, redis_client: redis.Redis) -> None:
    """The intake process (intake/): at start it creates the listeners' group on `signups` and
    each app's intake group; it forwards (FCALL forward_intake: XREADGROUP, XADD, XACK, XTRIM
    of a drained intake), blocks on the intakes for the next entry (XREADGROUP BLOCK), and
    trims the three kinds of streams past retention (EXISTS, XINFO GROUPS, XPENDING, XTRIM)
    and each app's decision feed by age (XTRIM)."""
    from intake.forwarder import IntakeForwarder
    from intake.settings import IntakeSettings
    from onboarding import keys

    streams = replace(STREAMS, apps=("web",))
    web = keys.intake_stream(STREAMS.signups_stream, "web")
    for n in range(3):
        redis_client.xadd(web, {"payload": f'{{"n": {n}}}'})
    # Decisions with an app's group holding one unacknowledged: retention asks XPENDING how far.
    redis_client.xadd(STREAMS.decisions_stream, {"event_id": "old", "payload": "{}"}, id="1-0")
    redis_client.xadd(STREAMS.decisions_stream, {"event_id": "new", "payload": "{}"})
    redis_client.xgroup_create(STREAMS.decisions_stream, "an-app", id="0")
    redis_client.xreadgroup("an-app", "c", {STREAMS.decisions_stream: ">"}, count=2)
    # The app's decision feed, trimmed by age alone (its own group holding an entry or not).
    feed = keys.app_feed_stream(STREAMS.decisions_stream, "web")
    redis_client.xadd(feed, {"event_id": "web:old", "payload": "{}"}, id="1-0")
    settings = IntakeSettings(streams=streams, batch_size=2, block_ms=20, retention_s=0, decisions_retention_s=0)

    def workload(client: redis.Redis) -> None:
        forwarder = IntakeForwarder(client, settings)
        assert forwarder.run(burst=True) == 3  # two calls: a full batch, then the rest (drained)
        redis_client.xadd(web, {"payload": "{}"})  # what a blocking wait wakes on
        forwarder._wait()
        assert forwarder.forward_all() == 1

    used = run_as("intake", workload)
    # All forwarded; retention kept them: the listeners' group (created at start) has not read them.
    assert redis_client.xlen(STREAMS.signups_stream) == 4 and redis_client.xlen(web) == 0
    assert redis_client.xlen(feed) == 0
    check("intake", used, redis_client, {})


def test_publisher_grant_is_what_publishing_runs(run_as, redis_client: redis.Redis) -> None:
    def workload(client: redis.Redis) -> None:
        for i, decision in enumerate(("approve", "review", "decline")):
            event = DecisionEvent(f"d-{i}", f"u-{i}", decision, 0.5, [], "v1", f"signup__d-{i}")
            # With its decision record (risk/evidence.py), appended in the same call.
            publish_decision(client, STREAMS.decisions_stream, event, record={"event_id": f"d-{i}", "score": 0.5})
        publish_decision(client, STREAMS.decisions_stream, DecisionEvent("d-0", "u-0", "approve", 0.1, [], "v1", None))
        # An app's signup (the run's `app`): the app's feed too, and a review's case keeps the app.
        for i, decision in enumerate(("approve", "review")):
            event = DecisionEvent(f"web:d-{i}", f"u-{i}", decision, 0.5, [], "v1", f"signup__web:d-{i}")
            publish_decision(client, STREAMS.decisions_stream, event, record={"event_id": f"web:d-{i}"}, app="web")

    used = run_as("publisher", workload)
    check("publisher", used, redis_client, {})
    # One record per published decision: the repeated publish appended neither.
    assert redis_client.xlen(keys.decision_records_stream(STREAMS.decisions_stream)) == 5
    assert redis_client.xlen(keys.app_feed_stream(STREAMS.decisions_stream, "web")) == 2


def test_reviewer_grant_is_what_the_review_queue_runs(run_as, redis_client: redis.Redis) -> None:
    from review.store import ReviewQueue

    for i in range(3):
        event = DecisionEvent(f"r-{i}", f"u-{i}", "review", 0.5, [], "v1", f"signup__r-{i}")
        publish_decision(redis_client, STREAMS.decisions_stream, event)
    app_case = DecisionEvent("web:r-3", "u-3", "review", 0.5, [], "v1", "signup__web:r-3")
    publish_decision(redis_client, STREAMS.decisions_stream, app_case, app="web")

    def workload(client: redis.Redis) -> None:
        queue = ReviewQueue(client, STREAMS.decisions_stream)
        queue.pending()
        queue.claim("r-0", "alice")
        queue.release("r-0", "alice")
        queue.claim("r-1", "alice")
        queue.decide("r-1", "alice", "approve", "documents checked")
        queue.decide("r-2", "bob", "decline", "income not verified")
        queue.decide("r-2", "bob", "decline", "income not verified")  # a retry after a lost reply
        queue.decide("web:r-3", "bob", "approve", "verified")  # an app's case: its feed gets the final decision
        queue.get("r-0")
        queue.history("r-1")

    used = run_as("reviewer", workload)
    check(
        "reviewer",
        used,
        redis_client,
        {},
    )
    assert redis_client.xlen(keys.app_feed_stream(STREAMS.decisions_stream, "web")) == 2  # the review, the final one


def test_drift_grant_is_what_the_drift_dag_runs(run_as, redis_client: redis.Redis) -> None:
    from risk.drift import recent_applications, store

    publish_signup(redis_client, STREAMS.signups_stream, new_signup(rng=random.Random(12)))

    def workload(client: redis.Redis) -> None:
        recent_applications(client, STREAMS.signups_stream, since_s=3600)
        store(client, {"age_years": 0.01}, 1)
        client.hgetall("risk:drift:psi")

    used = run_as("drift", workload)
    check("drift", used, redis_client, {})


def test_sla_grant_is_what_the_sla_service_runs(run_as, redis_client: redis.Redis) -> None:
    import time

    from prometheus_client import generate_latest

    from onboarding.awaiting import awaiting_count, record_accepted
    from onboarding.decision import utc_now
    from sla.metrics import SlaMetrics, StreamCollector
    from sla.observer import DecisionObserver
    from sla.overdue import list_overdue
    from sla.page import snapshot
    from sla.review import ReviewQueueCollector
    from sla.settings import SlaSettings

    settings = SlaSettings(streams=STREAMS, consumer="derived", block_ms=50, overdue_after_s=30)
    # The listener's group on signups (lag and pending), a dead letter, accepted signups: one
    # decided, one overdue and one older than the decisions' retention (the awaiting cleanup).
    redis_client.xgroup_create(STREAMS.signups_stream, settings.listener_group, id="0", mkstream=True)
    publish_signup(redis_client, STREAMS.signups_stream, new_signup(rng=random.Random(13)))
    redis_client.xadd(STREAMS.dead_letter_stream, {"reason": "not_json"})
    now = time.time()
    record_accepted(redis_client, STREAMS, "s-0", now, {"event_id": "s-0"})
    record_accepted(redis_client, STREAMS, "s-late", now - 100, {"event_id": "s-late"})
    record_accepted(redis_client, STREAMS, "s-stale", now - settings.awaiting_retention_s - 60, {"event_id": "s-stale"})
    # Review cases: one past its deadline (the page lists it), one due in a day.
    late = DecisionEvent("r-0", "u-0", "review", 0.5, [], "v1", None, {"occurred_at": utc_now()})
    publish_decision(redis_client, STREAMS.decisions_stream, late, review_deadline_s=0.01)
    fresh = DecisionEvent("r-1", "u-1", "review", 0.5, [], "v1", None, {"occurred_at": utc_now()})
    publish_decision(redis_client, STREAMS.decisions_stream, fresh)
    time.sleep(0.05)
    metrics = SlaMetrics(settings)

    def start(client: redis.Redis) -> None:
        DecisionObserver(client, settings, metrics).ensure_group()  # as `onboarding-sla run` starts: from now on

    def workload(client: redis.Redis) -> None:
        metrics.registry.register(StreamCollector(client, settings))
        metrics.registry.register(ReviewQueueCollector(client, STREAMS.decisions_stream))
        observer = DecisionObserver(client, settings, metrics)
        assert observer.run(burst=True) == 1  # the awaiting cleanup runs on the loop's first turn
        assert awaiting_count(redis_client, STREAMS) == 1  # s-0 observed, s-stale expired, s-late overdue
        generate_latest(metrics.registry)  # a Prometheus scrape: lag, depth, overdue, the review queue
        assert snapshot(client, settings, observer, lambda: list_overdue(client, settings, None), None).review

    used = run_as("sla", start)
    decided = DecisionEvent("s-0", "u-1", "approve", 0.1, [], "v1", None)
    publish_decision(redis_client, STREAMS.decisions_stream, decided)
    used |= run_as("sla", workload)
    check("sla", used, redis_client, {})


def test_operator_grant_is_what_the_operators_tools_run(run_as, redis_client: redis.Redis) -> None:
    from listener.deadletters import get_dead_letter, list_dead_letters, replay
    from onboarding.decision import get_decision, read_decisions
    from ops.erase import erase_from_streams
    from review.store import ReviewQueue

    for user, seed in (("alice", 14), ("bob", 15)):
        signup = new_signup(rng=random.Random(seed))
        signup["user_id"] = user
        publish_signup(redis_client, STREAMS.signups_stream, signup)
    publish_raw(redis_client, STREAMS.signups_stream, b'{"event_id": "bad-2", "oops": ')
    from listener.consumer import Listener
    from listener.metrics import ListenerMetrics
    from listener.settings import ListenerSettings

    settings = ListenerSettings(streams=STREAMS, consumer="derived", block_ms=50, retry_initial_s=0.01)
    Listener(redis_client, FakeAirflow(), settings, ListenerMetrics()).run(burst=True)
    event = DecisionEvent("o-1", "alice", "review", 0.5, [], "v1", "signup__o-1")
    publish_decision(redis_client, STREAMS.decisions_stream, event)
    ReviewQueue(redis_client, STREAMS.decisions_stream).claim("o-1", "carol")
    from onboarding.awaiting import record_accepted

    record_accepted(redis_client, STREAMS, "o-2", 0.0, {"user_id": "alice"})
    app_event = DecisionEvent("web:o-3", "alice", "approve", 0.1, [], "v1", "signup__web:o-3")
    publish_decision(redis_client, STREAMS.decisions_stream, app_event, app="web")
    alice_at_intake = new_signup(rng=random.Random(16))
    alice_at_intake["user_id"] = "alice"
    publish_signup(redis_client, keys.intake_stream(STREAMS.signups_stream, "web"), alice_at_intake)

    def workload(client: redis.Redis) -> None:
        letters = list_dead_letters(client, STREAMS.dead_letter_stream)  # onboarding-deadletters list
        assert letters
        get_dead_letter(client, STREAMS.dead_letter_stream, letters[0].entry_id)  # show
        replay(client, STREAMS.dead_letter_stream, STREAMS.signups_stream, letters)  # replay
        # onboarding-decisions (listener/tools_cli.py): --event-id, --last, --follow.
        get_decision(client, STREAMS.decisions_stream, "o-1")
        client.xrevrange(STREAMS.decisions_stream, count=20)
        list(read_decisions(client, STREAMS.decisions_stream, after="0-0"))
        # With an app configured: its intake and its decision feed are searched too.
        with_app = replace(STREAMS, apps=("web",))
        dry = erase_from_streams(client, with_app, "alice", dry_run=True)
        assert erase_from_streams(client, with_app, "alice") == dry
        assert dry.app_feeds and dry.intakes

    used = run_as("operator", workload)
    check("operator", used, redis_client, {})


def _user_url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['username']}:{kwargs['password']}@{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"


def test_worker_grant_is_what_the_rq_worker_and_cron_run(
    run_as, redis_client: redis.Redis, watcher: redis.Redis, tmp_path
) -> None:
    """As deploy/k8s/rq.yaml runs them, as the `worker` user: a long-running `rq worker
    maintenance` and `rq cron archiver.cron` start, the weekly archive job (enqueued as the
    cron does when it is due) runs on the worker against a metadata database with old runs
    and archives the review history, `onboarding-archive worker-check` answers, and both
    processes stop on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    import sqlalchemy as sa
    from rq import Worker
    from rq.cron import CronScheduler
    from rq.job import Job

    from testkit.seed import airflow_tables, seed_runs

    database = f"sqlite:///{tmp_path / 'airflow.db'}"
    engine = sa.create_engine(database)
    sa.MetaData().create_all(engine)
    next(iter(airflow_tables().values())).metadata.create_all(engine)
    seed_runs(engine, 3, datetime.now(UTC) - timedelta(days=10))
    engine.dispose()
    # A review case's history entry old enough to be archived (its id ten days back).
    from onboarding import keys

    event = DecisionEvent("w-1", "u-1", "review", 0.5, [], "v1", "signup__w-1")
    publish_decision(redis_client, STREAMS.decisions_stream, event)
    history = keys.review_history_key(STREAMS.decisions_stream)
    [(_id, fields)] = redis_client.xrange(history)
    redis_client.delete(history)
    old_ms = int((datetime.now(UTC) - timedelta(days=10)).timestamp() * 1000)
    redis_client.xadd(history, fields, id=f"{old_ms}-0")
    bin_dir = Path(sys.executable).parent

    def workload(client: redis.Redis) -> None:
        env = {
            **os.environ,
            "REDIS_URL": _user_url(client),
            "ARCHIVE_REALTIME_DB_URL": database,
            "ARCHIVE_DIR": str(tmp_path / "archive"),
        }
        url = env["REDIS_URL"]
        worker = subprocess.Popen([bin_dir / "rq", "worker", "maintenance", "--url", url], env=env)
        cron = subprocess.Popen([bin_dir / "rq", "cron", "archiver.cron", "--url", url], env=env)
        try:
            deadline = time.monotonic() + 60
            while not (Worker.all(connection=watcher) and CronScheduler.all(watcher)):
                assert time.monotonic() < deadline, "the worker or the cron scheduler never registered"
                assert worker.poll() is None and cron.poll() is None
                time.sleep(0.1)
            scheduler = CronScheduler(connection=client)
            scheduler.load_config_from_file("archiver.cron")
            [cron_job] = scheduler.get_jobs()

            def run_once() -> Job:
                queued = cron_job.enqueue(client)  # what the scheduler does when the job is due
                job = Job.fetch(queued.id, connection=watcher)  # the test's watching: not the role's work
                while job.get_status(refresh=True) not in ("finished", "failed"):
                    assert time.monotonic() < deadline + 60, "the archive job never finished"
                    time.sleep(0.1)
                return job

            # A run while another holds the lock fails (rq's failure path: its registry, the result).
            held = watcher.lock(keys.ARCHIVE_LOCK, timeout=60)
            assert held.acquire(blocking=False)
            assert run_once().get_status() == "failed"
            held.release()
            job = run_once()
            assert job.get_status() == "finished", job.latest_result().exc_string  # type: ignore[union-attr]
            assert job.return_value()["realtime"]["tables"]["dag_run"] == 3
            check = subprocess.run(
                [bin_dir / "onboarding-archive", "worker-check"], env=env, capture_output=True, text=True
            )
            assert check.returncode == 0, check.stdout + check.stderr
        finally:
            for process in (worker, cron):
                process.send_signal(signal.SIGTERM)
            for process in (worker, cron):
                process.wait(timeout=30)

    used = run_as("worker", workload)
    check(
        "worker",
        used,
        redis_client,
        {
            "script|load": "redis-py's Script after NOSCRIPT: a restarted Redis has an empty script cache",
            "script|exists": "redis-py's Script in a pipeline checks the cache first",
            "discard": "redis-py's pipeline sends DISCARD when a MULTI fails before EXEC",
            "lmove": "rq's burst mode dequeues without blocking (`rq worker --burst`; test_redis_acl.py's worker)",
        },
    )


@pytest.mark.timeout(180)  # a worker refused by the ACL never reports ready: fail, do not hang
def test_broker_grant_is_what_celery_runs(run_as, redis_client: redis.Redis, watcher: redis.Redis) -> None:
    """As the realtime Airflow uses its broker, as the `broker` user: a Celery worker as
    `airflow celery worker` runs it (gossip, mingle, heartbeats, the solo pool for the test)
    starts, the CeleryExecutor's `apply_async` of `execute_workload` on the `default` queue is
    consumed and run, the chart's liveness probe (`celery inspect ping`) is answered, and the
    worker shuts down warm."""
    import json
    import time

    from celery import Celery
    from celery.contrib.testing.worker import TestWorkController, start_worker
    from kombu import Connection

    from ops.redis_acl import CELERY_QUEUE

    options = {"fanout_prefix": True, "fanout_patterns": True}

    ran: list[str] = []

    class FullWorker(TestWorkController):
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs.update(without_gossip=False, without_mingle=False)
            super().__init__(*args, **kwargs)

    def workload(client: redis.Redis) -> None:
        app = Celery("derived", broker=_user_url(client))
        app.conf.update(
            task_default_queue=CELERY_QUEUE,
            broker_transport_options=options,
            result_backend=None,  # Airflow's results go to its metadata database, not Redis
            worker_prefetch_multiplier=1,
        )

        @app.task(name="execute_workload")
        def execute_workload(payload: str) -> None:
            ran.append(payload)

        try:
            with start_worker(
                app,
                pool="solo",
                perform_ping_check=False,
                shutdown_timeout=10,
                WorkController=FullWorker,
                without_heartbeat=False,
            ):
                # The scheduler's CeleryExecutor: apply_async with its own task id, to the queue.
                app.send_task("execute_workload", args=['{"ti": "x"}'], queue=CELERY_QUEUE, task_id="derived-1")
                deadline = time.monotonic() + 30
                while not ran and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert ran == ['{"ti": "x"}']
                assert len(app.control.ping(timeout=2)) == 1  # the chart's liveness probe
        finally:
            app.close()
        # A message a worker took and died holding, older than the visibility timeout: the
        # next worker's kombu puts it back on its queue (kombu's restore_visible, under its lock).
        message = {"body": "e30=", "headers": {}, "properties": {"delivery_tag": "dead", "delivery_info": {}}}
        watcher.hset("unacked", "dead", json.dumps([message, "", CELERY_QUEUE]))
        watcher.zadd("unacked_index", {"dead": 1})
        with Connection(_user_url(client), transport_options=options) as conn:
            conn.default_channel.qos.restore_visible(num=10)
        assert watcher.llen(CELERY_QUEUE) == 1 and not watcher.hexists("unacked", "dead")

    used = run_as("broker", workload)
    check(
        "broker",
        used,
        redis_client,
        {
            "script|load": "redis-py's Script after NOSCRIPT: a restarted Redis has an empty script cache",
            "discard": "redis-py's pipeline sends DISCARD when a MULTI fails before EXEC",
        },
    )
