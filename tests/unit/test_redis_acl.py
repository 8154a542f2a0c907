"""Redis ACL users (ops/redis_acl.py) loaded into the real Redis: each role does its job
with its own credential, and is refused (NOPERM) outside it.

The users get unique names (`sec-test-<pid>-<role>`) and are deleted afterwards: the Redis
server may be shared, and its default user is never touched.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.exceptions import NoPermissionError, ResponseError

from listener.consumer import Listener
from listener.metrics import ListenerMetrics
from listener.settings import ListenerSettings
from onboarding.awaiting import awaiting_before, awaiting_count, awaiting_key, clear_awaiting, record_accepted
from onboarding.decision import DecisionEvent, publish_decision, read_decisions, wait_for_decision
from onboarding.keys import decision_key, marker_key
from onboarding.publisher import publish_raw, publish_signup
from onboarding.settings import StreamSettings
from ops.redis_acl import apply, render, roles
from risk.samples import new_signup
from sla.settings import SlaSettings
from tests.conftest import TEST_REDIS_URL
from tests.unit.test_listener import FakeAirflow

STREAMS = StreamSettings(redis_url=TEST_REDIS_URL)
PREFIX = f"sec-test-{os.getpid()}-"


def rq_job(x: int) -> int:
    return x * 2


@pytest.fixture
def acl_users(redis_client: redis.Redis) -> Iterator[Callable[[str], redis.Redis]]:
    """The ACL users created from the shipped rules, and a connection factory per role."""
    passwords = {role.name: secrets.token_urlsafe(16) for role in roles(STREAMS)}
    environ = {f"REDIS_ACL_PASSWORD_{name.upper()}": pw for name, pw in passwords.items()}
    created = apply(redis_client, STREAMS, environ, user_prefix=PREFIX)
    clients: list[redis.Redis] = []

    def connect(role: str) -> redis.Redis:
        url = redis.connection.parse_url(TEST_REDIS_URL)
        client = redis.Redis(
            host=url.get("host", "127.0.0.1"),
            port=url.get("port", 6379),
            db=url.get("db", 0),
            username=f"{PREFIX}{role}",
            password=passwords[role],
        )
        clients.append(client)
        return client

    try:
        yield connect
    finally:
        for client in clients:
            client.close()
        redis_client.execute_command("ACL", "DELUSER", *created)


def _source(call: Callable[[], object]) -> str:
    import inspect

    return inspect.getsource(call).strip()


def refused(call: Callable[[], object]) -> bool:
    """True if Redis answered NOPERM (directly, or from inside a script)."""
    try:
        call()
    except NoPermissionError:
        return True
    except ResponseError as err:
        # Redis 7.0 words a refusal inside a script differently from a direct NOPERM.
        return "NOPERM" in str(err) or "can't run this command" in str(err) or "can't access" in str(err)
    return False


def test_rendered_acl_file_hashes_passwords_and_disables_roles_without_one() -> None:
    text = render(STREAMS, {"REDIS_ACL_PASSWORD_APP": "s3cret-app"})
    assert "s3cret-app" not in text
    lines = {line.split()[1]: line for line in text.splitlines() if line.startswith("user ")}
    assert set(lines) == {r.name for r in roles(STREAMS)}
    assert " on #" in lines["app"]
    assert all(" off " in line for name, line in lines.items() if name != "app")
    assert all("nopass" not in line and "allkeys" not in line and "+@all" not in line for line in lines.values())


def test_a_wrong_password_is_refused(acl_users: Callable[[str], redis.Redis]) -> None:
    acl_users("app")  # the users exist
    client = redis.Redis.from_url(TEST_REDIS_URL, username=f"{PREFIX}app", password="wrong")
    with pytest.raises(redis.AuthenticationError):
        client.ping()


def test_app_adds_signups_and_reads_decisions_only(
    acl_users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    app = acl_users("app")
    publish_signup(app, STREAMS.signups_stream, new_signup(rng=random.Random(1)))
    redis_client.xadd(STREAMS.decisions_stream, {"event_id": "e1", "payload": "{}"})
    assert app.xread({STREAMS.decisions_stream: "0-0"})
    assert app.xrange(STREAMS.decisions_stream)
    assert redis_client.xlen(STREAMS.signups_stream) == 1
    # One decision by event id (the per-event key and its announcement), as the clients wait.
    published = DecisionEvent("e2", "u2", "approve", 0.1, [], "v1", "signup__e2")
    publish_decision(redis_client, STREAMS.decisions_stream, published)
    assert wait_for_decision(app, STREAMS.decisions_stream, "e2", timeout_s=2) == published
    # A feed through the app's own consumer group, with acknowledgement.
    app.xgroup_create(STREAMS.decisions_stream, "app-feed", id="0")
    feed = app.xreadgroup("app-feed", "app-1", {STREAMS.decisions_stream: ">"}, count=10)
    assert app.xack(STREAMS.decisions_stream, "app-feed", *[entry_id for entry_id, _ in feed[0][1]]) == 2
    for call in (
        lambda: app.set(decision_key(STREAMS.decisions_stream, "e3"), "{}"),  # forge a lookup
        lambda: app.publish(decision_key(STREAMS.decisions_stream, "e3"), "{}"),  # forge an announcement
        lambda: app.xgroup_destroy(STREAMS.decisions_stream, "app-feed"),
        lambda: app.xrange(STREAMS.signups_stream),  # other applicants' data
        lambda: app.xadd(STREAMS.decisions_stream, {"payload": "{}"}),  # forge a decision
        lambda: app.delete(STREAMS.signups_stream),
        lambda: app.xtrim(STREAMS.signups_stream, maxlen=0),
        lambda: app.get(marker_key(STREAMS.decisions_stream, "e1")),
        lambda: app.keys("*"),
        lambda: app.flushdb(),
        lambda: app.config_get("*"),
        lambda: app.eval("return 1", 0),
        lambda: app.execute_command("ACL", "LIST"),
    ):
        assert refused(call), _source(call)


def test_listener_consumes_and_dead_letters_but_cannot_trim_or_forge(
    acl_users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    listener_client = acl_users("listener")
    good = new_signup(rng=random.Random(2))
    publish_signup(redis_client, STREAMS.signups_stream, good)
    publish_raw(redis_client, STREAMS.signups_stream, b"{not json")
    redis_client.xadd(STREAMS.decisions_stream, {"event_id": "old", "payload": "{}"}, id="1-0")
    settings = ListenerSettings(streams=STREAMS, consumer="acl-test", block_ms=50, retry_initial_s=0.01)
    airflow = FakeAirflow()
    settled = Listener(listener_client, airflow, settings, ListenerMetrics()).run(burst=True)
    assert settled == 2
    assert list(airflow.runs) == [f"signup__{good['event_id']}"]
    dead = redis_client.xrange(STREAMS.dead_letter_stream)
    assert [fields[b"reason"] for _id, fields in dead] == [b"not_json"]
    assert redis_client.xpending(STREAMS.signups_stream, settings.group)["pending"] == 0
    assert redis_client.xlen(STREAMS.decisions_stream) == 1, "retention is the intake process's, not the listener's"
    assert listener_client.hgetall("risk:drift:psi") == {}
    # The accepted signup is recorded for overdue detection (the SLA service clears it).
    assert redis_client.zscore(awaiting_key(STREAMS), good["event_id"]) is not None
    for call in (
        lambda: listener_client.xadd(STREAMS.decisions_stream, {"payload": "{}"}),
        lambda: listener_client.set(marker_key(STREAMS.decisions_stream, "x"), "1"),
        lambda: listener_client.get(marker_key(STREAMS.decisions_stream, "x")),
        lambda: listener_client.xrange(STREAMS.decisions_stream),
        lambda: listener_client.xrange(STREAMS.dead_letter_stream),
        lambda: listener_client.xdel(STREAMS.signups_stream, "0-1"),
        lambda: listener_client.delete(STREAMS.signups_stream),
        lambda: listener_client.xtrim(STREAMS.decisions_stream, maxlen=0),
        lambda: listener_client.xtrim(STREAMS.signups_stream, maxlen=0),
        lambda: listener_client.xadd(STREAMS.signups_stream, {"payload": "{}"}),
        lambda: listener_client.set("rq:anything", "1"),
        lambda: listener_client.eval(
            "return redis.call('XADD', KEYS[1], '*', 'payload', '{}')", 1, STREAMS.decisions_stream
        ),
        lambda: listener_client.eval("return redis.call('XADD', KEYS[1], '*', 'x', '1')", 1, awaiting_key(STREAMS)),
        lambda: listener_client.flushdb(),
        lambda: listener_client.config_get("*"),
    ):
        assert refused(call), _source(call)


def test_intake_trims_past_retention_but_cannot_read_or_forge(
    acl_users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    """The intake process trims the streams (retention moved off the listener) and forwards;
    it reads no signup or decision and forges nothing outside the forwarding function."""
    from intake.forwarder import IntakeForwarder
    from intake.settings import IntakeSettings

    intake_client = acl_users("intake")
    redis_client.xadd(STREAMS.decisions_stream, {"event_id": "old", "payload": "{}"}, id="1-0")
    settings = IntakeSettings(streams=STREAMS, block_ms=20, trim_interval_s=0)
    IntakeForwarder(intake_client, settings).run(burst=True)
    assert redis_client.xlen(STREAMS.decisions_stream) == 0, "the decision past retention was trimmed"
    for call in (
        lambda: intake_client.xrange(STREAMS.signups_stream),
        lambda: intake_client.xrange(STREAMS.decisions_stream),
        lambda: intake_client.get(decision_key(STREAMS.decisions_stream, "x")),
        lambda: intake_client.xadd(STREAMS.decisions_stream, {"payload": "{}"}),
        lambda: intake_client.xadd(STREAMS.dead_letter_stream, {"payload": "{}"}),
        lambda: intake_client.delete(STREAMS.signups_stream),
        lambda: intake_client.xgroup_destroy(STREAMS.signups_stream, "onboarding-listener"),
        lambda: intake_client.eval("return 1", 0),
        lambda: intake_client.keys("*"),
        lambda: intake_client.flushdb(),
    ):
        assert refused(call), _source(call)


def test_publisher_publishes_once_and_cannot_read_applications(
    acl_users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    publisher = acl_users("publisher")
    publish_signup(redis_client, STREAMS.signups_stream, new_signup(rng=random.Random(3)))
    event = DecisionEvent("e-1", "u-1", "approve", 0.1, [], "v1", "signup__e-1")
    assert publish_decision(publisher, STREAMS.decisions_stream, event)[0] is True
    assert publish_decision(publisher, STREAMS.decisions_stream, event)[0] is False
    assert [e.event_id for _id, e in read_decisions(redis_client, STREAMS.decisions_stream)] == ["e-1"]
    for call in (
        lambda: publisher.get(decision_key(STREAMS.decisions_stream, event.event_id)),  # reads no decision back
        lambda: publisher.xrange(STREAMS.signups_stream),
        lambda: publisher.xrange(STREAMS.decisions_stream),
        lambda: publisher.xadd(STREAMS.signups_stream, {"payload": "{}"}),
        lambda: publisher.delete(STREAMS.decisions_stream),
        lambda: publisher.xtrim(STREAMS.decisions_stream, maxlen=0),
        # A script runs with the caller's permissions: no way around the ACL through EVAL.
        lambda: publisher.eval("return redis.call('XRANGE', KEYS[1], '-', '+')", 1, STREAMS.signups_stream),
        lambda: publisher.eval("return redis.call('DEL', KEYS[1])", 1, STREAMS.decisions_stream),
        lambda: publisher.flushdb(),
    ):
        assert refused(call), _source(call)


def test_the_publisher_appends_decision_records_and_can_never_change_one(
    acl_users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    """Issue 29, item 1: the record is written with the decision, once; the task's Redis user
    cannot read, delete, trim or overwrite a record (append-only). It can append (Redis 7
    checks a function's XADD against its caller), as it can append a decision."""
    from onboarding.keys import decision_records_stream

    publisher = acl_users("publisher")
    records = decision_records_stream(STREAMS.decisions_stream)
    event = DecisionEvent("e-r", "u-r", "decline", 0.7, [], "v1", "signup__e-r")
    assert publish_decision(publisher, STREAMS.decisions_stream, event, record={"event_id": "e-r"})[0] is True
    assert publish_decision(publisher, STREAMS.decisions_stream, event, record={"event_id": "e-r"})[0] is False
    ((entry_id, fields),) = redis_client.xrange(records)
    assert fields[b"event_id"] == b"e-r" and fields[b"user_id"] == b"u-r"
    for call in (
        lambda: publisher.xrange(records),
        lambda: publisher.xdel(records, entry_id),
        lambda: publisher.xtrim(records, maxlen=0),
        lambda: publisher.delete(records),
        lambda: publisher.set(records, "x"),
    ):
        assert refused(call), _source(call)
    assert redis_client.xlen(records) == 1


def test_drift_reads_signups_and_writes_its_hash_only(
    acl_users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    from risk.drift import recent_applications, store

    drift = acl_users("drift")
    publish_signup(redis_client, STREAMS.signups_stream, new_signup(rng=random.Random(4)))
    assert len(recent_applications(drift, STREAMS.signups_stream, since_s=3600)) == 1
    store(drift, {"age_years": 0.01}, 1)
    assert redis_client.hget("risk:drift:psi", "age_years") == b"0.01"
    for call in (
        lambda: drift.xadd(STREAMS.signups_stream, {"payload": "{}"}),
        lambda: drift.delete(STREAMS.signups_stream),
        lambda: drift.xrange(STREAMS.decisions_stream),
        lambda: drift.flushdb(),
    ):
        assert refused(call), _source(call)


def test_rq_worker_runs_jobs_and_holds_the_archive_lock_but_cannot_touch_streams(
    acl_users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    from rq import Queue, Worker
    from rq.job import Job

    worker_client = acl_users("worker")
    queue = Queue("maintenance", connection=worker_client)
    job = queue.enqueue(rq_job, 21)
    assert Worker([queue], connection=worker_client).work(burst=True)
    assert Job.fetch(job.id, connection=redis_client).return_value() == 42  # read by the test, not the worker
    lock = worker_client.lock("onboarding:archive:lock", timeout=30, blocking=False)
    assert lock.acquire()
    assert lock.extend(30, replace_ttl=True)
    lock.release()
    publish_signup(redis_client, STREAMS.signups_stream, new_signup(rng=random.Random(5)))
    for call in (
        lambda: worker_client.xrange(STREAMS.signups_stream),
        lambda: worker_client.xadd(STREAMS.decisions_stream, {"payload": "{}"}),
        lambda: worker_client.get(marker_key(STREAMS.decisions_stream, "x")),
        lambda: worker_client.delete(STREAMS.signups_stream),
        lambda: worker_client.keys("*"),
        lambda: worker_client.flushdb(),
        lambda: worker_client.config_get("*"),
        lambda: worker_client.execute_command("ACL", "LIST"),
    ):
        assert refused(call), _source(call)


def test_sla_service_observes_decisions_through_its_group_and_cannot_change_them(
    acl_users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    sla = acl_users("sla")
    settings = SlaSettings(streams=STREAMS)
    redis_client.xadd(STREAMS.decisions_stream, {"event_id": "e1", "payload": json.dumps({"decision": "approve"})})
    redis_client.xadd(STREAMS.dead_letter_stream, {"reason": "not_json"})
    redis_client.xgroup_create(STREAMS.signups_stream, "onboarding-listener", id="0", mkstream=True)
    record_accepted(redis_client, STREAMS, "e1", 1.0, {"event_id": "e1"})
    sla.xgroup_create(STREAMS.decisions_stream, "sla", id="0")
    reply = sla.xreadgroup("sla", "sla-1", {STREAMS.decisions_stream: ">"}, count=10)
    entry_id = reply[0][1][0][0]
    # What the service does: depth, lag, overdue candidates, then clear the decided one.
    assert sla.xlen(STREAMS.dead_letter_stream) == 1
    assert [g["name"] for g in sla.xinfo_groups(STREAMS.signups_stream)] == [b"onboarding-listener"]
    assert [a.event_id for a in awaiting_before(sla, STREAMS, 10.0)] == ["e1"]
    assert sla.exists(marker_key(STREAMS.decisions_stream, "e1")) == 0
    clear_awaiting(sla, STREAMS, "e1")
    assert awaiting_count(sla, STREAMS) == 0
    assert sla.xack(STREAMS.decisions_stream, "sla", entry_id) == 1
    assert settings.streams == STREAMS
    for call in (
        lambda: sla.xadd(STREAMS.decisions_stream, {"payload": "{}"}),
        lambda: sla.xdel(STREAMS.decisions_stream, entry_id),
        lambda: sla.xtrim(STREAMS.decisions_stream, maxlen=0),
        lambda: sla.delete(STREAMS.decisions_stream),
        lambda: sla.xrange(STREAMS.signups_stream),
        lambda: sla.xadd(STREAMS.signups_stream, {"payload": "{}"}),
        lambda: sla.set(marker_key(STREAMS.decisions_stream, "e2"), "1"),
        lambda: sla.flushdb(),
    ):
        assert refused(call), _source(call)


def test_scaler_reads_the_listener_lag_and_no_application(
    acl_users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    """KEDA's credential (deploy/k8s/listener.yaml, lagCount): the group's lag, not the events."""
    scaler = acl_users("scaler")
    redis_client.xgroup_create(STREAMS.signups_stream, "onboarding-listener", id="0", mkstream=True)
    for _ in range(3):
        publish_signup(redis_client, STREAMS.signups_stream, new_signup())
    (group,) = scaler.xinfo_groups(STREAMS.signups_stream)
    assert group["name"] == b"onboarding-listener" and group["lag"] == 3
    assert scaler.xlen(STREAMS.signups_stream) == 3
    assert scaler.xpending(STREAMS.signups_stream, "onboarding-listener")["pending"] == 0
    for call in (
        lambda: scaler.xrange(STREAMS.signups_stream),
        lambda: scaler.xread({STREAMS.signups_stream: "0"}),
        lambda: scaler.xreadgroup("onboarding-listener", "keda", {STREAMS.signups_stream: ">"}),
        lambda: scaler.xinfo_stream(STREAMS.signups_stream),  # it shows the first and last entries
        lambda: scaler.xinfo_groups(STREAMS.decisions_stream),
        lambda: scaler.xadd(STREAMS.signups_stream, {"payload": "{}"}),
        lambda: scaler.xgroup_setid(STREAMS.signups_stream, "onboarding-listener", "$"),
    ):
        assert refused(call), _source(call)


@pytest.mark.timeout(120)  # a worker refused by the ACL never reports ready: fail, do not hang
def test_broker_carries_celery_tasks_and_control_and_nothing_of_the_service(
    acl_users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    """The realtime Airflow's Celery broker credential: a task message round trip and a
    control broadcast with Celery's own transport settings, and NOPERM on the streams."""
    from celery import Celery
    from kombu import Connection

    from ops.redis_acl import CELERY_QUEUE

    broker = acl_users("broker")
    url = redis.connection.parse_url(TEST_REDIS_URL)
    password = broker.connection_pool.connection_kwargs["password"]
    broker_url = (
        f"redis://{PREFIX}broker:{password}@{url.get('host', '127.0.0.1')}:{url.get('port', 6379)}/{url.get('db', 0)}"
    )
    app = Celery("acl-test", broker=broker_url)
    options = {"fanout_prefix": True, "fanout_patterns": True}
    try:
        with Connection(broker_url, transport_options=options) as conn:
            queue = conn.SimpleQueue(CELERY_QUEUE)
            queue.put({"task": "onboarding.publish", "run": "signup__e1"})
            message = queue.get(timeout=5)
            assert message.payload == {"task": "onboarding.publish", "run": "signup__e1"}
            message.ack()
            queue.close()
        assert app.control.ping(timeout=0.5) == []  # pidbox broadcast + reply queue: allowed, no worker here
        # A real worker on this credential: it starts (its own control queue), answers a
        # broadcast and runs a task (rehearsed with Airflow's worker in tests/e2e/test_multihost.py).
        from celery.contrib.testing.worker import start_worker

        ran: list[int] = []

        @app.task(name="acl.double")
        def double(x: int) -> None:
            ran.append(2 * x)

        app.conf.update(task_default_queue=CELERY_QUEUE, broker_transport_options=options, result_backend=None)
        # As `airflow celery worker` runs it: with gossip, mingle and heartbeats (events), which
        # Celery's test worker leaves out unless told.
        from celery.contrib.testing.worker import TestWorkController

        class FullWorker(TestWorkController):
            def __init__(self, *args: object, **kwargs: object) -> None:
                kwargs.update(without_gossip=False, without_mingle=False)
                super().__init__(*args, **kwargs)

        with start_worker(
            app,
            pool="solo",
            perform_ping_check=False,
            shutdown_timeout=10,
            WorkController=FullWorker,
            without_heartbeat=False,
        ):
            double.delay(21)
            deadline = time.monotonic() + 20
            while not ran and time.monotonic() < deadline:
                time.sleep(0.1)
            replies = app.control.ping(timeout=2)
        assert ran == [42] and len(replies) == 1
    finally:
        app.close()
        redis_client.delete(CELERY_QUEUE, *redis_client.keys("_kombu.*"), *redis_client.keys("unacked*"))
    publish_signup(redis_client, STREAMS.signups_stream, new_signup())
    for call in (
        lambda: broker.xrange(STREAMS.signups_stream),
        lambda: broker.xadd(STREAMS.decisions_stream, {"payload": "{}"}),
        lambda: broker.get(marker_key(STREAMS.decisions_stream, "e1")),
        lambda: broker.keys("*"),
        lambda: broker.lpush("rq:queue:default", "job"),
        lambda: broker.flushdb(),
    ):
        assert refused(call), _source(call)


def test_shipped_acl_file_matches_the_rules() -> None:
    """deploy/redis/users.acl is `onboarding-redis-acl render` without passwords (all users off)."""
    from pathlib import Path

    shipped = (Path(__file__).parents[2] / "deploy" / "redis" / "users.acl").read_text()
    assert shipped == render(StreamSettings(), {})


def test_no_role_runs_its_own_script_lists_keys_or_manages_functions(
    acl_users: Callable[[str], redis.Redis],
) -> None:
    """A role that could EVAL, FUNCTION LOAD or list keys could block Redis with a script of its
    own or find every key: each is refused to every role (the functions are loaded at deploy
    time by the administrator: onboarding-redis-acl apply / load-functions)."""
    library = "#!lua name=intruder\nredis.register_function('intruder', function() return 1 end)"
    for role in roles(STREAMS):
        client = acl_users(role.name)
        for command in (
            ("EVAL", "while true do end", "0"),
            ("FUNCTION", "LOAD", library),
            ("FUNCTION", "DELETE", "onboarding"),
            ("FUNCTION", "FLUSH"),
            ("KEYS", "*"),
            ("SCAN", "0"),
        ):
            if role.name == "operator" and command[0] == "SCAN":
                continue  # onboarding-erase walks the keys with SCAN (a person's tool, not a component)
            try:
                client.execute_command(*command)
            except NoPermissionError:
                continue
            raise AssertionError(f"role {role.name} may run {command[0]} {command[1][:20]}")
