"""The apps' clients against the real service: the Node.js example (clients/node) and the
Python client (clients/python), each as a Redis user with only the `app` ACL role.

One realtime Airflow (PostgreSQL metadata, as the security e2e: the local SQLite default
stalls intermittently under the FAB auth manager) and one listener serve the module. Before
anything is submitted, the app opens a feed (its own consumer group on the decisions
stream); then `node clients/node/example.mjs` submits one signup and prints its decision,
and `OnboardingClient.submit` + `wait` decide another. The feed must deliver both.

Then the per-app path, every process as its own ACL user: the intake process (user `intake`,
ONBOARDING_APPS=web) and a listener (user `listener`, the only one left) serve an app with
its own user `app-web`, whose Python client (app="web") submits to its intake, waits for
the decision under `web:<event id>` and reads it from its own feed `<decisions>:app:web`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import redis
from onboarding_client import Decision, FeedItem, OnboardingClient, decision_key

from onboarding.decision import decision_errors
from ops.redis_acl import apply
from risk.samples import sample_application
from testkit.realtime import E2E_REDIS_URL, RealtimeStack, running_realtime
from testkit.services import require
from tests.e2e.conftest import REPORT

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT = ROOT / "clients" / "node"
FEED_GROUP = "clients-e2e-app"
WAIT_S = 120


@dataclass
class NodeRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Clients:
    stack: RealtimeStack
    app_url: str
    node: NodeRun
    python_event_id: str
    python_decision: Decision | None
    python_seconds: float
    feed: list[FeedItem] = field(default_factory=list)
    feed_pending_after_ack: int = -1
    app_event_id: str = ""
    app_decision: Decision | None = None
    app_seconds: float = -1.0
    app_feed: list[FeedItem] = field(default_factory=list)


def _app_url(user: str, password: str) -> str:
    parsed = redis.connection.parse_url(E2E_REDIS_URL)
    host, port, db = parsed.get("host", "127.0.0.1"), parsed.get("port", 6379), parsed.get("db", 0)
    return f"redis://{user}:{password}@{host}:{port}/{db}"


def _run_node(stack: RealtimeStack, app_url: str) -> NodeRun:
    env = {
        **os.environ,
        "REDIS_URL": app_url,
        "SIGNUPS_STREAM": stack.streams.signups_stream,
        "DECISIONS_STREAM": stack.streams.decisions_stream,
        "DECISION_TIMEOUT_S": str(WAIT_S),
    }
    started = time.monotonic()
    run = subprocess.run(
        ["node", str(NODE_CLIENT / "example.mjs"), "--user-id", "node-e2e"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S + 30,
    )
    return NodeRun(run.returncode, run.stdout, run.stderr, time.monotonic() - started)


def _read_feed(feed: Iterator[FeedItem], want: int, into: list[FeedItem]) -> None:
    for item in feed:
        into.append(item)
        item.ack()
        if len(into) >= want:
            return


@pytest.fixture(scope="module")
def clients(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path
) -> Iterator[Clients]:
    require(shutil.which("node") is not None, "Node.js (node on PATH)")
    require((NODE_CLIENT / "node_modules" / "redis").is_dir(), "clients/node/node_modules (npm ci in clients/node)")
    admin = redis.Redis.from_url(E2E_REDIS_URL)
    try:
        admin.ping()
    except redis.RedisError:
        require(False, f"Redis at {E2E_REDIS_URL}")
    prefix = f"clients-e2e-{os.getpid()}-"
    password = f"redis-app-{secrets.token_hex(12)}"
    home = tmp_path_factory.mktemp("realtime-clients")
    users: list[str] = []
    try:
        with running_realtime("postgres", home, trained_model_dir, request.session, "clients") as stack:
            streams_with_app = replace(stack.streams, apps=("web",))
            roles = ("APP_WEB", "INTAKE", "LISTENER")
            passwords = {f"REDIS_ACL_PASSWORD_{role}": f"{password}-{role}" for role in roles}
            users = apply(
                admin, streams_with_app, {"REDIS_ACL_PASSWORD_APP": password, **passwords}, user_prefix=prefix
            )
            app_url = _app_url(f"{prefix}app", password)
            stack.start_listener()
            streams = {
                "signups_stream": stack.streams.signups_stream,
                "decisions_stream": stack.streams.decisions_stream,
            }
            app = OnboardingClient.from_url(app_url, **streams)
            feeder = OnboardingClient.from_url(app_url, **streams)
            try:
                feed = feeder.feed(FEED_GROUP, "pod-1", block_s=1)  # the group exists from here on
                node = _run_node(stack, app_url)
                started = time.monotonic()
                event_id = app.submit(sample_application(), user_id="python-e2e")
                decision = app.wait(event_id, timeout_s=WAIT_S)
                python_seconds = time.monotonic() - started
                result = Clients(stack, app_url, node, event_id, decision, python_seconds)
                reader = threading.Thread(target=_read_feed, args=(feed, 2, result.feed), daemon=True)
                reader.start()
                reader.join(timeout=30)
                pending = app.redis.xpending(stack.streams.decisions_stream, FEED_GROUP)
                result.feed_pending_after_ack = int(pending["pending"])
                # The per-app path: intake process and listener as their own users, the app as app-web.
                stack.start_intake(
                    ONBOARDING_APPS="web", REDIS_URL=_app_url(f"{prefix}intake", passwords["REDIS_ACL_PASSWORD_INTAKE"])
                )
                for process in stack.listeners:
                    process.stop(timeout_s=20)
                listener_url = _app_url(f"{prefix}listener", passwords["REDIS_ACL_PASSWORD_LISTENER"])
                stack.start_listener(ONBOARDING_APPS="web", REDIS_URL=listener_url)
                web_url = _app_url(f"{prefix}app-web", passwords["REDIS_ACL_PASSWORD_APP_WEB"])
                web = OnboardingClient.from_url(web_url, app="web", **streams)
                try:
                    web_feed = web.feed("web-e2e", "pod-1", block_s=1)  # its own stream's group, before submitting
                    started = time.monotonic()
                    result.app_event_id = web.submit(sample_application(), user_id="web-e2e")
                    result.app_decision = web.wait(result.app_event_id, timeout_s=WAIT_S)
                    result.app_seconds = time.monotonic() - started
                    reader = threading.Thread(target=_read_feed, args=(web_feed, 1, result.app_feed), daemon=True)
                    reader.start()
                    reader.join(timeout=30)
                finally:
                    web.close()
                yield result
            finally:
                app.close()
                feeder.close()
    finally:
        if users:
            admin.execute_command("ACL", "DELUSER", *users)
        admin.close()


def _as_published(printed: dict[str, Any]) -> dict[str, Any]:
    """The Node client's decision as the service published it: the client fills in
    `review: null` on decisions no reviewer made (onboarding.d.ts), the service omits it."""
    return {k: v for k, v in printed.items() if not (k == "review" and v is None)}


def _node_decision(clients: Clients) -> dict[str, Any]:
    node = clients.node
    assert node.returncode == 0, f"exit {node.returncode}\nstdout: {node.stdout}\nstderr: {node.stderr}"
    lines = node.stdout.strip().splitlines()
    assert len(lines) == 1, node.stdout
    decision = json.loads(lines[0])
    assert isinstance(decision, dict)
    return decision


def test_the_node_example_prints_the_decision_the_service_holds(clients: Clients) -> None:
    decision = _node_decision(clients)
    assert decision_errors(decision) == []
    assert decision["user_id"] == "node-e2e"
    assert decision["event_id"].startswith("evt-")
    assert decision["error"] is None
    held = clients.stack.redis.get(decision_key(clients.stack.streams.decisions_stream, decision["event_id"]))
    assert held is not None
    assert json.loads(held) == _as_published(decision)
    assert f"submitted {decision['event_id']}" in clients.node.stderr


def test_the_python_client_submits_and_waits_as_the_app_user(clients: Clients) -> None:
    decision = clients.python_decision
    assert decision is not None, f"no decision for {clients.python_event_id} within {WAIT_S} s"
    assert decision.event_id == clients.python_event_id
    assert decision.user_id == "python-e2e"
    assert decision.outcome in ("approve", "review", "decline")
    assert decision.error is None
    assert decision_errors(dict(decision.raw)) == []
    held = clients.stack.redis.get(decision_key(clients.stack.streams.decisions_stream, decision.event_id))
    assert held is not None
    assert json.loads(held) == dict(decision.raw)


def test_the_apps_feed_receives_both_decisions_and_acknowledges_them(clients: Clients) -> None:
    node = _node_decision(clients)
    fed = {item.decision.event_id: item.decision for item in clients.feed}
    assert set(fed) == {node["event_id"], clients.python_event_id}
    assert dict(fed[node["event_id"]].raw) == _as_published(node)
    assert clients.python_decision is not None
    assert dict(fed[clients.python_event_id].raw) == dict(clients.python_decision.raw)
    assert clients.feed_pending_after_ack == 0
    python = clients.python_decision
    REPORT.append(
        f"clients: node example.mjs exit {clients.node.returncode} in {clients.node.seconds:.1f} s -> "
        f"{node['decision']} (score {node['score']}) for {node['event_id']}; "
        f"python OnboardingClient.wait in {clients.python_seconds:.1f} s -> {python.outcome} (score {python.score}) "
        f"for {python.event_id}; the app's feed got both, {clients.feed_pending_after_ack} pending after ack"
    )
    REPORT.append(f"clients: node stdout: {clients.node.stdout.strip()}")
    REPORT.append(f"clients: python decision: {json.dumps(dict(python.raw), separators=(',', ':'))}")


def test_the_app_user_cannot_read_signups(clients: Clients) -> None:
    """The clients above ran with the app role only: it may add signups but not read them."""
    app = redis.Redis.from_url(clients.app_url)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.xrange(clients.stack.streams.signups_stream)
    finally:
        app.close()


def test_an_apps_own_user_is_decided_through_the_intake_process_and_a_least_privilege_listener(
    clients: Clients,
) -> None:
    """Issue 28: the app submits to its intake as `app-web`; the intake process (user `intake`)
    forwards it, the listener (user `listener`: no XADD on signups, no XTRIM) triggers the real
    run with the app in its conf, and the decision comes back under the app's namespace and on
    the app's own feed."""
    decision = clients.app_decision
    assert decision is not None, f"no decision for web:{clients.app_event_id} within {WAIT_S} s"
    assert decision.event_id == f"web:{clients.app_event_id}"
    assert decision.user_id == "web-e2e" and decision.outcome in ("approve", "review", "decline")
    assert decision_errors(dict(decision.raw)) == []
    intake = clients.stack.streams.signups_stream + ":app:web"
    assert clients.stack.redis.xlen(intake) == 0  # forwarded, then emptied
    # The run carried the app: the real task published the decision to web's own feed too,
    # which app-web's client read through its group (the only stream that user may read).
    assert [dict(item.decision.raw) for item in clients.app_feed] == [dict(decision.raw)]
    feed = clients.stack.streams.decisions_stream + ":app:web"
    assert clients.stack.redis.xlen(feed) == 1
    assert clients.stack.redis.xpending(feed, "web-e2e")["pending"] == 0
    REPORT.append(f"per-app: app-web submit -> {decision.outcome} in {clients.app_seconds:.1f} s, also on its feed")
