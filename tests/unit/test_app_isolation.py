"""Per-app isolation (issue 28, item 2; docs/security.md C10): each app has its own Redis user
that may add signups only to its own intake stream and read only its own decisions; the
intake process (intake/, its own user `intake`) forwards the intakes into the shared signups
stream (onboarding/intake.py), and the listener, which parses the payloads, may not.

Every attack of the issue is replayed here as a per-app user, and as the listener user,
against a real Redis with the shipped ACL rules (ops/redis_acl.py) and the shipped
functions, the intake process and the listener each running as its own ACL user. Users get
unique names and are deleted afterwards.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoPermissionError, ResponseError

from intake.forwarder import IntakeForwarder
from intake.settings import IntakeSettings
from listener.consumer import Listener
from listener.settings import ListenerSettings
from onboarding import intake, keys
from onboarding.decision import DecisionEvent, publish_decision, wait_for_decision
from onboarding.publisher import publish_raw, publish_signup
from onboarding.settings import StreamSettings
from ops.redis_acl import apply, render, roles
from risk.samples import new_signup
from tests.conftest import TEST_REDIS_URL
from tests.unit.test_listener import FakeAirflow

STREAMS = StreamSettings(redis_url=TEST_REDIS_URL, apps=("web", "mobile"))
SETTINGS = ListenerSettings(
    streams=STREAMS, consumer="iso-consumer", block_ms=50, retry_initial_s=0.01, retry_max_s=0.02
)
INTAKE = IntakeSettings(streams=STREAMS, block_ms=50)
PREFIX = f"iso-test-{os.getpid()}-"
WEB, MOBILE = keys.intake_stream("signups", "web"), keys.intake_stream("signups", "mobile")
TOP_ID = "18446744073709551615-18446744073709551615"
WEB_FEED, MOBILE_FEED = keys.app_feed_stream("decisions", "web"), keys.app_feed_stream("decisions", "mobile")
WEB_REFUSALS = keys.app_refusals_stream("decisions", "web")
REPO = Path(__file__).resolve().parents[2]


def _connect(user: str, password: str) -> redis.Redis:
    url = redis.connection.parse_url(TEST_REDIS_URL)
    return redis.Redis(
        host=url.get("host", "127.0.0.1"),
        port=url.get("port", 6379),
        db=url.get("db", 0),
        username=user,
        password=password,
    )


@pytest.fixture
def users(redis_client: redis.Redis) -> Iterator[Callable[[str], redis.Redis]]:
    """The shipped roles (per-app users included) as real ACL users; a client per role."""
    passwords = {role.name: secrets.token_urlsafe(16) for role in roles(STREAMS)}
    environ = {f"REDIS_ACL_PASSWORD_{n.upper().replace('-', '_')}": pw for n, pw in passwords.items()}
    created = apply(redis_client, STREAMS, environ, user_prefix=PREFIX)
    clients: list[redis.Redis] = []

    def connect(role: str) -> redis.Redis:
        clients.append(_connect(f"{PREFIX}{role}", passwords[role]))
        return clients[-1]

    try:
        yield connect
    finally:
        for client in clients:
            client.close()
        redis_client.execute_command("ACL", "DELUSER", *created)


def refused(call: Callable[[], object]) -> str | None:
    """Redis' refusal (NOPERM, directly or from inside a function), else None."""
    try:
        call()
    except NoPermissionError as err:
        return str(err)
    except ResponseError as err:
        if "NOPERM" in str(err) or "can't run this command" in str(err) or "can't access" in str(err):
            return str(err)
        raise
    return None


def submit(app: redis.Redis, stream: str, event: dict[str, object]) -> None:
    publish_signup(app, stream, event)


def decide(listener: redis.Redis, airflow: FakeAirflow, users: Callable[[str], redis.Redis]) -> int:
    """The intake process forwards what the apps submitted (as its user), then the listener
    (as its own) decides what is in the signups stream."""
    IntakeForwarder(users("intake"), INTAKE).run(burst=True)
    return Listener(listener, airflow, SETTINGS).run(burst=True)


def test_a_redis_function_runs_with_its_callers_acl_not_more(redis_client: redis.Redis) -> None:
    """The fact the design rests on: Redis 7 checks each command a function runs against the
    calling user. A user with FCALL but no XADD cannot append through a function that XADDs,
    so no function can let an app append to a stream it may not append to itself."""
    redis_client.execute_command(
        "FUNCTION",
        "LOAD",
        "REPLACE",
        "#!lua name=acl_probe\nredis.register_function('probe_xadd', "
        "function(keys, args) return redis.call('XADD', keys[1], '*', 'f', 'v') end)",
    )
    user, password = f"{PREFIX}fcall-only", secrets.token_urlsafe(16)
    try:
        redis_client.execute_command(
            "ACL", "SETUSER", user, "reset", "on", f">{password}", "~probe", "+select", "+fcall"
        )
        caller = _connect(user, password)
        err = refused(lambda: caller.fcall("probe_xadd", 1, "probe"))
        assert err is not None and ("can't run this command" in err or "NOPERM" in err), err
        assert redis_client.exists("probe") == 0
        redis_client.execute_command("ACL", "SETUSER", user, "+xadd")  # the same call, now allowed
        assert caller.fcall("probe_xadd", 1, "probe")
        assert redis_client.xlen("probe") == 1
        caller.close()
    finally:
        redis_client.execute_command("ACL", "DELUSER", user)
        redis_client.execute_command("FUNCTION", "DELETE", "acl_probe")


def test_each_app_gets_its_own_user_and_the_shared_one_is_off_by_default() -> None:
    text = render(STREAMS, {"REDIS_ACL_PASSWORD_APP_WEB": "pw-web"})
    lines = {line.split()[1]: line for line in text.splitlines()}
    assert " on #" in lines["app-web"] and "pw-web" not in text
    assert " off " in lines["app-mobile"] and " off " in lines["app"]
    assert "%W~signups:app:web " in lines["app-web"] and "%R~decisions:event:web:* " in lines["app-web"]
    assert "~signups " not in lines["app-web"] and "mobile" not in lines["app-web"]
    assert "app-web" not in render(StreamSettings(), {})  # no apps configured: no per-app users


def test_the_issues_attacks_as_an_app_are_refused(
    users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    web = users("app-web")
    redis_client.xgroup_create("decisions", keys.SLA_GROUP, id="0", mkstream=True)
    for call in (
        lambda: web.xadd("signups", {"payload": "{}"}, maxlen=0, approximate=False),  # empty the stream
        lambda: web.xadd("signups", {"payload": "{}"}, id=TOP_ID),  # wedge every later XADD *
        lambda: web.xadd(MOBILE, {"payload": "{}"}),  # another app's intake
        lambda: web.get(keys.decision_key("decisions", "mobile:evt-1")),  # another app's decision
        lambda: web.get(keys.decision_key("decisions", "evt-1")),  # a legacy (shared) decision
        lambda: web.xrange("decisions"),  # every app's decisions
        lambda: web.xread({"decisions": "0"}),
        lambda: web.xreadgroup(keys.SLA_GROUP, "x", {"decisions": ">"}),  # the SLA service's group
        lambda: web.xack("decisions", keys.SLA_GROUP, "0-1"),
        lambda: web.xgroup_create("decisions", "stall-trimming", id="$"),  # an idle group stalls trimming
        lambda: web.xrange(WEB),  # even its own intake: nothing to read there
        lambda: web.xtrim(WEB, maxlen=0),
        lambda: web.xgroup_destroy(WEB, keys.INTAKE_GROUP),
        lambda: web.fcall("forward_intake", 2, WEB, "signups", keys.INTAKE_GROUP, "mobile", 1, 1, 1),
        lambda: web.set(keys.decision_key("decisions", "web:evt-1"), "{}"),  # forge its own decision
        lambda: web.publish(keys.decision_key("decisions", "web:evt-1"), "{}"),
        lambda: web.eval("return 1", 0),
        lambda: web.keys("*"),
    ):
        assert refused(call), call.__code__.co_firstlineno
    pubsub = web.pubsub()
    with pytest.raises(NoPermissionError):  # another app's announcements
        pubsub.subscribe(keys.decision_key("decisions", "mobile:evt-1"))
        pubsub.get_message(timeout=1)
    pubsub.close()


def test_an_app_wrecking_its_own_intake_hurts_only_itself(
    users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    web, mobile, listener = users("app-web"), users("app-mobile"), users("listener")
    airflow = FakeAirflow()
    IntakeForwarder(users("intake"), INTAKE).run(burst=True)  # the intakes' groups
    lost, kept = new_signup(rng=random.Random(1)), new_signup(rng=random.Random(2))
    submit(web, WEB, lost)
    submit(mobile, MOBILE, kept)
    # MAXLEN 0 on its own intake deletes only its own unforwarded signup.
    web.xadd(WEB, {"payload": "{}"}, maxlen=0, approximate=False)
    # The top id wedges only its own intake: its next XADD * fails, nobody else's.
    web.xadd(WEB, {"payload": "{}"}, id=TOP_ID)
    with pytest.raises(ResponseError, match="exhausted the last possible ID"):
        submit(web, WEB, new_signup())
    decide(listener, airflow, users)
    assert f"signup__mobile:{kept['event_id']}" in airflow.runs
    assert f"signup__web:{lost['event_id']}" not in airflow.runs
    # The shared stream and the other app carry on.
    later = new_signup(rng=random.Random(3))
    submit(mobile, MOBILE, later)
    decide(listener, airflow, users)
    assert f"signup__mobile:{later['event_id']}" in airflow.runs
    # The operator's repair: delete the wrecked intake; the intake process recreates its group.
    redis_client.delete(WEB)
    again = new_signup(rng=random.Random(4))
    submit(web, WEB, again)
    decide(listener, airflow, users)
    assert f"signup__web:{again['event_id']}" in airflow.runs
    assert redis_client.xpending(WEB, keys.INTAKE_GROUP)["pending"] == 0


def test_one_app_cannot_squat_anothers_event_id(users: Callable[[str], redis.Redis], redis_client: redis.Redis) -> None:
    web, mobile, listener, publisher = users("app-web"), users("app-mobile"), users("listener"), users("publisher")
    airflow = FakeAirflow()
    mine, theirs = (
        new_signup(event_id="evt-1", rng=random.Random(5)),
        new_signup(event_id="evt-1", rng=random.Random(6)),
    )
    assert mine["user_id"] != theirs["user_id"]
    submit(web, WEB, mine)
    submit(mobile, MOBILE, theirs)  # mobile reuses web's id
    assert decide(listener, airflow, users) == 2
    assert airflow.runs["signup__web:evt-1"]["user_id"] == mine["user_id"]
    assert airflow.runs["signup__mobile:evt-1"]["user_id"] == theirs["user_id"]
    assert airflow.runs["signup__web:evt-1"]["event_id"] == "web:evt-1"
    assert redis_client.xlen("signups:dead") == 0
    # Each decision is published under its app's prefix; each app reads its own only.
    for app, event in (("web", mine), ("mobile", theirs)):
        published = DecisionEvent(f"{app}:evt-1", event["user_id"], "approve", 0.1, [], "v1", f"signup__{app}:evt-1")
        publish_decision(publisher, "decisions", published)
    assert wait_for_decision(web, "decisions", "web:evt-1", timeout_s=2).user_id == mine["user_id"]  # type: ignore[union-attr]
    assert wait_for_decision(mobile, "decisions", "mobile:evt-1", timeout_s=2).user_id == theirs["user_id"]  # type: ignore[union-attr]
    assert refused(lambda: web.get(keys.decision_key("decisions", "mobile:evt-1")))
    # A signup on the shared stream (the deprecated shared user) cannot claim an app's prefix,
    # and is not answered on that app's key.
    publish_signup(redis_client, "signups", new_signup(event_id="web:evt-2"))
    decide(listener, airflow, users)
    [letter] = redis_client.xrange("signups:dead")
    assert letter[1][b"reason"] == b"invalid_value" and b"belongs to app web" in letter[1][b"detail"]
    assert redis_client.exists(keys.decision_key("decisions", "web:evt-2")) == 0
    assert "signup__web:evt-2" not in airflow.runs


def test_a_refused_app_signup_is_answered_under_the_apps_prefix(
    users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    web, listener = users("app-web"), users("listener")
    bad = new_signup(event_id="evt-bad", rng=random.Random(7))
    bad["application"]["age_years"] = 3
    publish_raw(web, WEB, json.dumps(bad))
    huge = {"event_id": "evt-huge", **new_signup(rng=random.Random(8)), "pad": "x" * 2_000_000}
    huge["event_id"] = "evt-huge"  # first in the text: the stub keeps the first 1 KiB
    publish_raw(web, WEB, json.dumps(huge))
    decide(listener, FakeAirflow(), users)
    answer = json.loads(web.get(keys.decision_key("decisions", "web:evt-bad")) or b"null")
    assert answer["reason"] == "out_of_range" and answer["event_id"] == "web:evt-bad"
    # The oversize entry reached the shared stream as a 1 KiB stub, was refused as oversize.
    assert max(len(f[b"payload"]) for _id, f in redis_client.xrange("signups")) <= 1024
    reasons = {f[b"reason"] for _id, f in redis_client.xrange("signups:dead")}
    assert reasons == {b"out_of_range", b"oversize"}
    assert json.loads(web.get(keys.decision_key("decisions", "web:evt-huge")) or b"null")["reason"] == "oversize"


def test_an_app_event_id_too_long_with_its_prefix_is_refused(
    users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    web, listener = users("app-web"), users("listener")
    airflow = FakeAirflow()
    submit(web, WEB, new_signup(event_id="e" * 128))
    decide(listener, airflow, users)
    assert airflow.runs == {}
    [letter] = redis_client.xrange("signups:dead")
    assert letter[1][b"reason"] == b"invalid_value" and b"at most 124 characters" in letter[1][b"detail"]


_FORWARD_LOOP = """
import sys, redis
from onboarding import intake
client = redis.Redis.from_url(sys.argv[1], username=sys.argv[2], password=sys.argv[3])
print("ready", flush=True)
while True:
    intake.forward(client, "signups", "web", 1, 65536)
"""


def test_forwarding_is_exactly_once_across_crashes(
    users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    """A forwarder process (as the intake user) is killed with SIGKILL at random points,
    repeatedly, while forwarding one entry per call; an entry a reader took but never
    forwarded (what a crash between a separate read and append would leave) is pending in
    the intake's group. At the end every intake entry is in the signups stream exactly once."""
    web, forwarder = users("app-web"), users("intake")
    intake.ensure_intake_group(redis_client, "signups", "web")
    ids = [web.xadd(WEB, {"payload": json.dumps({"n": n})}).decode() for n in range(3000)]
    # A reader took two entries and died before forwarding them.
    redis_client.xreadgroup(keys.INTAKE_GROUP, "forwarder", {WEB: ">"}, count=2)
    assert redis_client.xpending(WEB, keys.INTAKE_GROUP)["pending"] == 2
    password = forwarder.connection_pool.connection_kwargs["password"]
    for target in range(250, 2500, 250):  # killed wherever it is once it passed each mark
        proc = subprocess.Popen(
            [sys.executable, "-c", _FORWARD_LOOP, TEST_REDIS_URL, f"{PREFIX}intake", password],
            cwd=REPO,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        while redis_client.xlen("signups") < target:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert 0 < redis_client.xlen("signups") < len(ids), "the kills should land mid-way"
    while intake.forward(forwarder, "signups", "web", 16, 65536):
        pass
    forwarded = [f[b"intake_id"].decode() for _id, f in redis_client.xrange("signups")]
    assert sorted(forwarded) == sorted(ids)  # each exactly once
    assert redis_client.xpending(WEB, keys.INTAKE_GROUP)["pending"] == 0


def test_a_signup_stays_in_the_intake_only_until_it_is_forwarded(
    users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    """A call that drains the intake empties it (no second copy of the application to keep or
    erase); one that leaves entries waiting does not; retention trimming stays as a backstop."""
    web, forwarder, listener = users("app-web"), users("intake"), users("listener")
    intake.ensure_intake_group(redis_client, "signups", "web")
    for n in range(5):
        web.xadd(WEB, {"payload": json.dumps({"n": n})})
    assert intake.forward(forwarder, "signups", "web", 3, 65536) == 3
    assert redis_client.xlen(WEB) == 5  # two still waiting: nothing trimmed
    assert intake.forward(forwarder, "signups", "web", 3, 65536) == 2
    assert redis_client.xlen(WEB) == 0 and redis_client.xlen("signups") == 5
    airflow = FakeAirflow()
    submit(web, WEB, new_signup())
    IntakeForwarder(forwarder, replace(INTAKE, retention_s=0, trim_interval_s=0)).run(burst=True)
    Listener(listener, airflow, SETTINGS).run(burst=True)
    assert redis_client.xlen(WEB) == 0 and len(airflow.runs) == 1


def test_the_client_with_app_submits_to_its_intake_and_gets_the_namespaced_answer(
    users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    """The Python client as `app-web` (app="web"): the intake process (its own user) forwards,
    the listener (its own user) triggers the run under `web:<id>`; the decision published under that id (as the DAG's
    publish step does, with the publisher's user) is what the client's wait returns; a
    refused signup is raised as Refused (on the key, and on web's refusals feed, never on its
    decision feed)."""
    from onboarding_client import OnboardingClient, Refused

    app = OnboardingClient(users("app-web"), app="web")
    listener, publisher = users("listener"), users("publisher")
    airflow = FakeAirflow()
    sample = new_signup(rng=random.Random(10))
    event_id = app.submit(sample["application"], user_id=sample["user_id"])
    assert redis_client.xlen(WEB) == 1 and redis_client.xlen("signups") == 0
    assert decide(listener, airflow, users) == 1
    conf = airflow.runs[f"signup__web:{event_id}"]
    assert conf["event_id"] == f"web:{event_id}" and conf["user_id"] == sample["user_id"]
    assert conf["app"] == "web"  # the run's `app` param: the publish step's feed
    published = DecisionEvent(conf["event_id"], conf["user_id"], "approve", 0.1, [], "v1", f"signup__web:{event_id}")
    publish_decision(publisher, "decisions", published, app=conf["app"])
    answer = app.wait(event_id, timeout_s=2)
    assert answer is not None and answer.outcome == "approve" and answer.event_id == f"web:{event_id}"
    bad = dict(sample["application"], age_years=3)
    refused_id = app.submit(bad, user_id="u-bad", validate=False)
    decide(listener, airflow, users)
    with pytest.raises(Refused) as caught:
        app.wait(refused_id, timeout_s=2)
    assert caught.value.refusal.reason == "out_of_range"
    # The decision feed holds decisions alone; the refusal went to web's refusals feed, once.
    assert [f[b"event_id"] for _id, f in redis_client.xrange(keys.app_feed_stream("decisions", "web"))] == [
        f"web:{event_id}".encode()
    ]
    assert [f[b"event_id"] for _id, f in redis_client.xrange(WEB_REFUSALS)] == [f"web:{refused_id}".encode()]
    app.close()


def test_the_app_users_grant_is_what_the_client_runs(
    users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    """As tests/unit/test_acl_derived.py does for the internal roles: MONITOR while the Python
    client submits, waits and reads its feed as `app-web`; it runs exactly the commands
    granted (XADD, GET, SUBSCRIBE; XGROUP CREATE, XREADGROUP, XACK on its feed), nothing else."""
    from onboarding_client import OnboardingClient

    from ops.redis_acl import app_role
    from tests.unit.test_acl_derived import HANDSHAKE, Monitor

    client = users("app-web")
    client.ping()  # the handshake before recording (HELLO/AUTH, SELECT)
    app = OnboardingClient(client, app="web")
    sample = new_signup(rng=random.Random(12))
    answered = DecisionEvent("web:evt-derived", "u-1", "approve", 0.1, [], "v1", "signup__web:evt-derived")
    publish_decision(redis_client, "decisions", answered, app="web")
    db = int(redis_client.connection_pool.connection_kwargs.get("db", 0))
    with Monitor(TEST_REDIS_URL, db) as monitor:
        app.submit(sample["application"], user_id=sample["user_id"], event_id="evt-derived")
        assert app.wait("evt-derived", timeout_s=2) is not None
        item = next(app.feed("crm", "pod-1", start="0", block_s=0.1))  # its own feed, its own group
        assert item.decision.event_id == "web:evt-derived"
        item.ack()
        answer = next(app.answers("erp", "pod-1", start="0", block_s=0.1))  # both of its streams
        assert answer.stream == WEB_FEED and answer.answer.event_id == "web:evt-derived"
        answer.ack()
    used = monitor.commands()
    tokens = [t.strip("()") for rule in app_role(STREAMS, "web").rules for t in rule.split()]
    granted = {t[1:] for t in tokens if t.startswith("+")}
    # redis-py closes a Pub/Sub connection without UNSUBSCRIBE; other clients send it.
    rare = {"unsubscribe"}
    assert used <= granted, sorted(used - granted)
    assert granted - used - HANDSHAKE - rare == set(), sorted(granted - used - HANDSHAKE - rare)


def test_the_intake_process_says_how_to_load_a_missing_intake_library(
    users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    from onboarding.functions import FunctionsNotLoaded

    redis_client.execute_command("FUNCTION", "DELETE", intake.LIBRARY)
    try:
        with pytest.raises(FunctionsNotLoaded, match="onboarding-redis-acl apply"):
            decide(users("listener"), FakeAirflow(), users)
    finally:
        intake.ensure_loaded(redis_client)


def test_onboarding_apps_is_read_and_checked() -> None:
    from onboarding.errors import ConfigError

    assert StreamSettings.from_env({"ONBOARDING_APPS": " web, mobile,web ,"}).apps == ("web", "mobile")
    assert StreamSettings.from_env({}).apps == ()
    for bad in ("Web", "web:x", "we*b", "-web", "x" * 33):
        with pytest.raises(ConfigError, match="ONBOARDING_APPS"):
            StreamSettings.from_env({"ONBOARDING_APPS": bad})


def test_an_apps_signup_is_triggered_at_once_with_both_processes_blocking(
    users: Callable[[str], redis.Redis],
) -> None:
    """The intake process blocks on the apps' intakes and the listener on `signups`, both for
    up to 3 s here (INTAKE_BLOCK_MS, LISTENER_BLOCK_MS; under redis-py's default 5 s socket
    timeout of these plain test clients): an app's XADD wakes the intake process, whose
    forwarding wakes the listener, so each signup is triggered long before a 3 s wait would
    have ended (no poll interval; the bound is loose: a shared machine's timing varies)."""
    import threading

    web, listener_client = users("app-web"), users("listener")
    airflow = FakeAirflow()
    listener = Listener(listener_client, airflow, replace(SETTINGS, block_ms=3000))
    forwarder = IntakeForwarder(users("intake"), replace(INTAKE, block_ms=3000))
    threads = [threading.Thread(target=loop.run, daemon=True) for loop in (listener, forwarder)]
    for thread in threads:
        thread.start()
    try:
        delays = []
        for n in range(10):
            time.sleep(0.137)  # land anywhere in the waits
            event = new_signup(rng=random.Random(100 + n))
            started = time.monotonic()
            submit(web, WEB, event)
            while f"signup__web:{event['event_id']}" not in airflow.runs:
                assert time.monotonic() - started < 2.8, "waited for a block to end, not for the entry"
                time.sleep(0.002)
            delays.append(time.monotonic() - started)
    finally:
        listener.stop()
        forwarder.stop()
        for thread in threads:
            thread.join(5)
    assert not any(thread.is_alive() for thread in threads), [t.is_alive() for t in threads]
    assert max(delays) < 1.0, delays


def test_the_issues_attacks_as_the_listener_are_refused(
    users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    """The listener parses untrusted payloads, so it is the likeliest role to be taken over:
    as its user, none of the destructive calls of the issue goes through (it cannot empty the
    decisions, overwrite or trim the signups, wedge their ids, delete a stream or forward an
    intake), and nothing changed; with the same user it still decides an app's signup that
    the intake process forwarded."""
    web, listener = users("app-web"), users("listener")
    submit(web, WEB, new_signup(rng=random.Random(40)))
    IntakeForwarder(users("intake"), INTAKE).run(burst=True)
    redis_client.xadd("decisions", {"event_id": "d-1", "payload": "{}"})
    before = (redis_client.xlen("signups"), redis_client.xlen("decisions"))
    for call in (
        lambda: listener.xtrim("decisions", maxlen=0, approximate=False),  # empty the decisions
        lambda: listener.xadd("signups", {"payload": "{}"}, maxlen=0, approximate=False),  # empty the signups
        lambda: listener.xadd("signups", {"payload": "{}"}, id=TOP_ID),  # wedge every later XADD *
        lambda: listener.xadd("signups", {"payload": "{}"}),  # forge a signup
        lambda: listener.xtrim("signups", maxlen=0, approximate=False),
        lambda: listener.xtrim(WEB, maxlen=0, approximate=False),
        lambda: listener.delete("signups"),
        lambda: listener.delete("decisions"),
        lambda: listener.xadd("decisions", {"payload": "{}"}),  # forge a decision
        lambda: listener.fcall("forward_intake", 2, WEB, "signups", keys.INTAKE_GROUP, "web", 1, 65536, 16),
        lambda: listener.xreadgroup(keys.INTAKE_GROUP, "forwarder", {WEB: ">"}),
        lambda: listener.xgroup_destroy("signups", keys.LISTENER_GROUP),
        lambda: listener.eval("return 1", 0),
    ):
        assert refused(call), call.__code__.co_firstlineno
    assert (redis_client.xlen("signups"), redis_client.xlen("decisions")) == before
    airflow = FakeAirflow()
    assert Listener(listener, airflow, SETTINGS).run(burst=True) == 1
    assert len(airflow.runs) == 1 and next(iter(airflow.runs)).startswith("signup__web:")


def _url(client: redis.Redis) -> str:
    """A user's connection URL (the task's REDIS_URL)."""
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw['username']}:{kw['password']}@{kw['host']}:{kw['port']}/{kw['db']}"


def test_each_apps_feed_gets_its_own_decisions_from_the_run_and_no_other_app_reads_it(
    users: Callable[[str], redis.Redis],
    redis_client: redis.Redis,
    trained_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app travels with the run: the listener (its own user) puts the forwarded entry's
    `app` into the run's conf; the onboarding task's body (airflow_adapter.tasks, as the
    `publisher` user) scores and publishes each run's decision to the shared stream and, in the
    same call, to that app's feed `decisions:app:<app>`. Web's feed (the Python client as
    `app-web`, app="web") delivers web's decision only, mobile's mobile's only; a shared-stream
    signup gets no app, whatever its id looks like, and reaches no feed; mobile's user is
    refused web's feed, and web's may only read its own through its groups."""
    from onboarding_client import OnboardingClient

    from airflow_adapter import tasks

    web, mobile = OnboardingClient(users("app-web"), app="web"), OnboardingClient(users("app-mobile"), app="mobile")
    web_feed = web.feed("billing", "pod-1", block_s=0.1)  # the groups exist from here on
    mobile_feed = mobile.feed("billing", "pod-1", block_s=0.1)
    a, b = new_signup(rng=random.Random(60)), new_signup(rng=random.Random(61))
    web_id = web.submit(a["application"], user_id=a["user_id"])
    mobile_id = mobile.submit(b["application"], user_id=b["user_id"])
    publish_signup(redis_client, "signups", new_signup(event_id="tablet:evt-9", rng=random.Random(62)))
    airflow = FakeAirflow()
    assert decide(users("listener"), airflow, users) == 3
    confs = {conf["event_id"]: conf for conf in airflow.runs.values()}
    assert confs[f"web:{web_id}"]["app"] == "web" and confs[f"mobile:{mobile_id}"]["app"] == "mobile"
    assert "app" not in confs["tablet:evt-9"]  # not from an intake: never read from the id's prefix
    monkeypatch.setenv("REDIS_URL", _url(users("publisher")))
    monkeypatch.setenv("RISK_MODEL_DIR", str(trained_model_dir))
    tasks.settings.cache_clear()
    try:
        for run_id, conf in airflow.runs.items():
            tasks.decide_and_publish(conf, None, run_id)
    finally:
        tasks.settings.cache_clear()
    got_web, got_mobile = next(web_feed), next(mobile_feed)
    assert (got_web.decision.event_id, got_web.decision.user_id) == (f"web:{web_id}", a["user_id"])
    assert (got_mobile.decision.event_id, got_mobile.decision.user_id) == (f"mobile:{mobile_id}", b["user_id"])
    assert dict(got_web.decision.raw) == json.loads(redis_client.get(keys.decision_key("decisions", f"web:{web_id}")))
    got_web.ack()
    got_mobile.ack()
    assert redis_client.xlen("decisions") == 3 and redis_client.xlen(WEB_FEED) == redis_client.xlen(MOBILE_FEED) == 1
    assert sorted(redis_client.scan_iter("decisions:app:*")) == sorted([WEB_FEED.encode(), MOBILE_FEED.encode()])
    assert redis_client.xpending(WEB_FEED, "billing")["pending"] == 0
    spy, owner = users("app-mobile"), users("app-web")
    for call in (
        lambda: spy.xreadgroup("billing", "pod-1", {WEB_FEED: "0"}),  # web's group on web's feed
        lambda: spy.xgroup_create(WEB_FEED, "spy", id="0"),  # a group of its own there
        lambda: spy.xack(WEB_FEED, "billing", "0-1"),
        lambda: spy.xrange(WEB_FEED),
        lambda: owner.xrange(WEB_FEED),  # its own feed: only through its groups
        lambda: owner.xrevrange(WEB_FEED),
        lambda: owner.xadd(WEB_FEED, {"event_id": "web:forged", "payload": "{}"}),  # forge its own feed
        lambda: owner.xtrim(WEB_FEED, maxlen=0),
        lambda: owner.xdel(WEB_FEED, "0-1"),
        lambda: owner.delete(WEB_FEED),
        lambda: owner.xgroup_destroy(WEB_FEED, "billing"),
        lambda: owner.xgroup_setid(WEB_FEED, "billing", "0"),
        lambda: owner.xreadgroup("billing", "pod-1", {"decisions": "0"}),  # the shared stream
        lambda: owner.xgroup_create("decisions", "billing", id="0"),
    ):
        assert refused(call), call.__code__.co_firstlineno
    assert redis_client.xlen(WEB_FEED) == 1
    web.close()
    mobile.close()


def test_a_reviewers_final_decision_reaches_the_apps_feed(
    users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    """A `review` of app web's signup opens its case with the app (the publish step, as the
    `publisher` user); the reviewer (the `reviewer` user) decides it and the final decision
    reaches web's feed after the `review`, once; a shared-stream case reaches no feed."""
    from onboarding_client import OnboardingClient

    from review.store import ReviewQueue
    from risk.publishing import Publisher

    web = OnboardingClient(users("app-web"), app="web")
    feed = web.feed("crm", "pod-1", block_s=0.1)
    publisher = Publisher(users("publisher"), "decisions")
    publisher.publish(DecisionEvent("web:evt-r", "u-r", "review", 0.5, [], "v1", "signup__web:evt-r"), app="web")
    publisher.publish(DecisionEvent("evt-s", "u-s", "review", 0.5, [], "v1", "signup__evt-s"))
    queue = ReviewQueue(users("reviewer"), "decisions")
    assert queue.get("web:evt-r").app == "web" and queue.get("evt-s").app is None
    assert queue.decide("web:evt-r", "alice", "approve", "documents checked").now
    assert not queue.decide("web:evt-r", "alice", "approve", "documents checked").now  # a retry
    queue.decide("evt-s", "bob", "decline", "income not verified")
    first, final = next(feed), next(feed)
    assert (first.decision.event_id, first.decision.outcome, first.decision.final) == ("web:evt-r", "review", False)
    assert (final.decision.event_id, final.decision.outcome, final.decision.final) == ("web:evt-r", "approve", True)
    assert final.decision.review is not None and final.decision.review.reviewer_id == "alice"
    assert redis_client.xlen(WEB_FEED) == 2 and redis_client.xlen("decisions") == 4
    assert list(redis_client.scan_iter("decisions:app:*")) == [WEB_FEED.encode()]
    web.close()


def test_an_apps_feed_is_trimmed_by_age_even_while_its_group_holds_entries(
    users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    """The intake process (its own user) trims each configured app's feed past
    DECISIONS_RETENTION_S whatever the app's groups hold (an app that stops reading keeps no
    decision longer), while `decisions` keeps what a service group has not read."""
    from onboarding_client import OnboardingClient

    web = OnboardingClient(users("app-web"), app="web")
    feed = web.feed("idle", "pod-1", start="0", block_s=0.1)
    publisher = users("publisher")
    for n in range(2):
        publish_decision(
            publisher, "decisions", DecisionEvent(f"web:t{n}", "u", "approve", 0.1, [], "v1", None), app="web"
        )
    next(feed)  # delivered, never acknowledged: pending in web's group
    redis_client.xgroup_create("decisions", keys.SLA_GROUP, id="0")  # a service group that read nothing
    time.sleep(0.01)
    IntakeForwarder(users("intake"), replace(INTAKE, decisions_retention_s=0, retention_s=0)).run(burst=True)
    assert redis_client.xlen(WEB_FEED) == 0
    assert redis_client.xlen("decisions") == 2
    web.close()


def test_an_apps_refusals_reach_its_refusals_feed_once_and_only_its_own_user_reads_them(
    users: Callable[[str], redis.Redis], redis_client: redis.Redis
) -> None:
    """Every answer on a stream (issue 27 for apps on their own user): the listener (its own
    user) appends the refusal of each of web's refused signups to `decisions:app:web:refusals`
    in the dead letter's transaction; the client's `answers` (as `app-web`) yields web's
    decision and web's refusals, each once, pending first after a restart; a refusal is never
    on the decision feed (a 1.2 `feed` reader never meets one), a shared-stream refusal reaches
    no app's feed, mobile's user cannot read web's refusals, web's cannot forge one, and the
    intake process trims the refusals feed by age like the decision feed."""
    from onboarding_client import OnboardingClient, Refusal

    web, mobile = OnboardingClient(users("app-web"), app="web"), OnboardingClient(users("app-mobile"), app="mobile")
    answers = web.answers("crm", "pod-1", block_s=0.1)  # the groups exist from here on
    mobile.answers("crm", "pod-1", block_s=0.1)  # mobile's groups: they must get nothing of web's
    good = new_signup(rng=random.Random(70))
    good_id = web.submit(good["application"], user_id=good["user_id"])
    bad_ids = [
        web.submit(dict(good["application"], age_years=3), user_id="u-bad", validate=False),
        web.submit(dict(good["application"], purpose="yacht"), user_id="u-bad", validate=False),
    ]
    publish_raw(redis_client, "signups", json.dumps({"event_id": "evt-shared", "user_id": "u-s"}))  # no app
    airflow = FakeAirflow()
    decide(users("listener"), airflow, users)
    assert list(airflow.runs) == [f"signup__web:{good_id}"]
    publish_decision(
        users("publisher"),
        "decisions",
        DecisionEvent(f"web:{good_id}", good["user_id"], "approve", 0.1, [], "v1", f"signup__web:{good_id}"),
        app="web",
    )
    got = [next(answers) for _ in range(3)]
    refusals = [item.answer for item in got if isinstance(item.answer, Refusal)]
    decisions = [item.answer for item in got if not isinstance(item.answer, Refusal)]
    assert sorted(r.event_id for r in refusals) == sorted(f"web:{b}" for b in bad_ids)
    assert {r.reason for r in refusals} == {"out_of_range", "invalid_value"} and not any(r.retryable for r in refusals)
    assert [d.event_id for d in decisions] == [f"web:{good_id}"]
    for refusal in refusals:  # the same answer the key holds
        assert dict(refusal.raw) == json.loads(redis_client.get(keys.decision_key("decisions", refusal.event_id)))
    got[0].ack()
    # A restart of the consumer: what it did not acknowledge comes again, first.
    again = web.answers("crm", "pod-1", block_s=0.1)
    assert sorted(next(again).entry_id for _ in range(2)) == sorted(item.entry_id for item in got[1:])
    assert redis_client.xlen(WEB_REFUSALS) == 2 and redis_client.xlen(WEB_FEED) == 1
    assert redis_client.xlen(keys.app_refusals_stream("decisions", "mobile")) == 0  # the shared refusal: no app's
    mobile_refusals = keys.app_refusals_stream("decisions", "mobile")
    assert redis_client.xpending(mobile_refusals, "crm")["pending"] == 0  # mobile was given nothing
    spy, owner = users("app-mobile"), users("app-web")
    for call in (
        lambda: spy.xreadgroup("crm", "pod-1", {WEB_REFUSALS: "0"}),  # web's group on web's refusals
        lambda: spy.xgroup_create(WEB_REFUSALS, "spy", id="0"),
        lambda: spy.xrange(WEB_REFUSALS),
        lambda: owner.xrange(WEB_REFUSALS),  # its own refusals: only through its groups
        lambda: owner.xadd(WEB_REFUSALS, {"event_id": "web:forged", "payload": "{}"}),  # forge one
        lambda: owner.xtrim(WEB_REFUSALS, maxlen=0),
        lambda: owner.delete(WEB_REFUSALS),
        # The listener appends through answer_refusal only, and only to the event's app's feed.
        lambda: users("listener").xadd(WEB_FEED, {"event_id": "web:forged", "payload": "{}"}),
    ):
        assert refused(call), call.__code__.co_firstlineno
    time.sleep(0.01)
    IntakeForwarder(users("intake"), replace(INTAKE, decisions_retention_s=0, retention_s=0)).run(burst=True)
    assert redis_client.xlen(WEB_REFUSALS) == 0  # trimmed by age, pending entries and all
    web.close()
    mobile.close()


def test_a_refusal_goes_only_to_the_feed_of_the_app_its_event_id_belongs_to(redis_client: redis.Redis) -> None:
    """answer_refusal checks the feed key against the event id's app: a caller cannot append
    web's refusal to mobile's feed, nor name a stream that is not a refusals feed."""
    from onboarding.functions import fcall

    marker, key = keys.marker_key("decisions", "web:e1"), keys.decision_key("decisions", "web:e1")
    fingerprint = keys.fingerprint_key("signups", "web:e1")
    for feed, app in (
        (keys.app_refusals_stream("decisions", "mobile"), "mobile"),  # another app's feed
        (keys.app_refusals_stream("decisions", "mobile"), "web"),  # the key does not match the app
        (WEB_FEED, "web"),  # the decision feed
    ):
        with pytest.raises(ResponseError, match="refusals feed"):
            fcall(
                redis_client,
                "answer_refusal",
                [marker, key, fingerprint, feed],
                ["{}", 60, "1", 100, app, "decisions", "web:e1"],
            )
    assert not redis_client.exists(key) and not redis_client.exists(WEB_FEED)
    assert (
        fcall(
            redis_client,
            "answer_refusal",
            [marker, key, fingerprint, WEB_REFUSALS],
            ["{}", 60, "1", 100, "web", "decisions", "web:e1"],
        )
        == 1
    )
    assert redis_client.xlen(WEB_REFUSALS) == 1
