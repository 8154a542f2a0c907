"""Every signup gets an answer, and a `review` closes (issue: refusals and the review queue),
end to end as a product app and a reviewer see it.

A real realtime Airflow (PostgreSQL) and a real listener decide; the apps are the Python
client and the Node client, each connected as the `app` Redis ACL user; the reviewer works
on the review page (`onboarding-review serve`, connected as the `reviewer` ACL user) in
headless Chromium. From each client:
1. a refused signup (an enum value the contract does not allow, sent with the Python
   client's local validation switched off) is answered `refused` with its reason code, not
   a timeout, within a second of its dead letter;
2. a signup the service's model puts in the review band is answered `review` (not final);
3. the reviewer decides both cases on the page (one approve, one decline, each with a typed
   reason); the client that is waiting for the final decision then receives it, with the
   reviewer's id, on the same key, channel and stream, exactly once.
The measured latencies (refusal after its dead letter; final decision after the reviewer's
click) go to the end of the pytest output.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from onboarding_client import Decision, OnboardingClient, Refused

from onboarding.decision import decision_errors
from ops.redis_acl import apply
from risk.artifacts import model_store
from risk.model import probability_bad
from risk.samples import sample_application
from testkit.realtime import E2E_REDIS_URL, RealtimeStack, running_realtime
from testkit.services import require
from tests.e2e.conftest import REPORT
from tests.e2e.test_review_page import Page, chromium, eventually, review_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NODE_EXAMPLE = ROOT / "clients" / "node" / "example.mjs"
WAIT_S = 120.0
REVIEWER, REVIEWER_PASSWORD = "carol", "a long demo password"


def _url(user: str, password: str) -> str:
    parsed = redis.connection.parse_url(E2E_REDIS_URL)
    host, port, db = parsed.get("host", "127.0.0.1"), parsed.get("port", 6379), parsed.get("db", 0)
    return f"redis://{user}:{password}@{host}:{port}/{db}"


def review_band(model_dir: Path, count: int) -> list[dict[str, Any]]:
    """Sample applications the service's current model and policy send to review."""
    model = model_store(model_dir).current()
    rng = random.Random(27)
    found = []
    for _ in range(5_000):
        application = sample_application(rng)
        if model.policy.decide(probability_bad(model.scorer, application)).value == "review":
            found.append(application)
            if len(found) == count:
                return found
    raise AssertionError("no review-band application among 5,000 samples: the policy has no review band")


def refused_application() -> dict[str, Any]:
    application = sample_application(random.Random(2))
    application["purpose"] = "yacht"
    return application


@dataclass
class NodeRun:
    code: int
    out: Any
    stderr: str


def _node(env: dict[str, str], *args: str, application: dict[str, Any], tmp: Path) -> subprocess.Popen[str]:
    path = tmp / f"application-{secrets.token_hex(4)}.json"
    path.write_text(json.dumps(application))
    return subprocess.Popen(
        ["node", str(NODE_EXAMPLE), *args, str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# An app process that only waits (it submitted earlier): the package's waitForDecision with
# untilFinal, printing what it receives.
NODE_WAIT_FINAL = """
import { createClient } from 'redis';
import { waitForDecision } from './onboarding.mjs';
const client = createClient({ url: process.env.REDIS_URL });
await client.connect();
const decision = await waitForDecision(client, process.argv[1], Number(process.env.DECISION_TIMEOUT_S) * 1000, {
  decisionsStream: process.env.DECISIONS_STREAM, untilFinal: true,
});
console.log(JSON.stringify(decision));
await client.close();
process.exit(decision === null ? 1 : 0);
"""


def _node_wait_final(env: dict[str, str], event_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["node", "--input-type=module", "-e", NODE_WAIT_FINAL, event_id],
        cwd=NODE_EXAMPLE.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> NodeRun:
    out, err = proc.communicate(timeout=WAIT_S + 30)
    lines = out.strip().splitlines()
    return NodeRun(proc.returncode, json.loads(lines[-1]) if lines else None, err)


@dataclass
class Answers:
    stack: RealtimeStack
    python_refused: Refused | None
    python_refused_latency_s: float | None
    python_review: Decision | None
    python_final: Decision | None
    node_refused: NodeRun
    node_review: NodeRun
    node_final: NodeRun
    final_latency_s: dict[str, float] = field(default_factory=dict)


def _decide_on_the_page(page: Page, url: str, case_id: str, outcome: str, reason: str) -> float:
    page.send("Page.navigate", url=f"{url}/case/{case_id}")
    eventually(lambda: page.ready(f"/case/{case_id}"), f"the case page of {case_id}")
    page.click("#claim")
    eventually(lambda: page.text("#assignee") == REVIEWER, "the case claimed")
    page.click(f"#outcome-{outcome}")
    page.type("#reason", reason)
    clicked = time.time()
    page.click("#decide")
    eventually(lambda: page.text("#state") == "decided", "the case shown decided")
    return clicked


@pytest.fixture(scope="module")
def answers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path
) -> Iterator[Answers]:
    require((ROOT / "clients" / "node" / "node_modules" / "redis").is_dir(), "clients/node/node_modules")
    admin = redis.Redis.from_url(E2E_REDIS_URL)
    try:
        admin.ping()
    except redis.RedisError:
        require(False, f"Redis at {E2E_REDIS_URL}")
    prefix = f"answers-e2e-{os.getpid()}-"
    passwords = {"app": secrets.token_urlsafe(16), "reviewer": secrets.token_urlsafe(16)}
    home = tmp_path_factory.mktemp("realtime-answers")
    tmp = tmp_path_factory.mktemp("answers")
    users: list[str] = []
    try:
        with running_realtime("postgres", home, trained_model_dir, request.session, "answers") as stack:
            environ = {f"REDIS_ACL_PASSWORD_{role.upper()}": pw for role, pw in passwords.items()}
            users = apply(admin, stack.streams, environ, user_prefix=prefix)
            stack.start_listener()
            streams = {
                "signups_stream": stack.streams.signups_stream,
                "decisions_stream": stack.streams.decisions_stream,
            }
            app_url = _url(f"{prefix}app", passwords["app"])
            node_env = {
                **os.environ,
                "REDIS_URL": app_url,
                "SIGNUPS_STREAM": stack.streams.signups_stream,
                "DECISIONS_STREAM": stack.streams.decisions_stream,
                "DECISION_TIMEOUT_S": str(WAIT_S),
            }
            python_app, node_app = review_band(trained_model_dir, 2)
            client = OnboardingClient.from_url(app_url, **streams)
            try:
                # 1. Refused: Python (local validation off, so the service is what refuses) and Node.
                node_refused = _node(node_env, "--user-id", "node-refused", application=refused_application(), tmp=tmp)
                event_id = client.submit(refused_application(), user_id="python-refused", validate=False)
                refused, refused_latency = None, None
                try:
                    client.wait(event_id, timeout_s=WAIT_S)
                except Refused as err:
                    refused = err
                    received = time.time()
                    refused_latency = received - datetime.fromisoformat(err.refusal.refused_at).timestamp()
                node_refused_run = _finish(node_refused)
                # 2. Review: each client gets the provisional `review`.
                node_review = _node(node_env, "--user-id", "node-review", application=node_app, tmp=tmp)
                python_event = client.submit(python_app, user_id="python-review")
                python_review = client.wait(python_event, timeout_s=WAIT_S)
                node_review_run = _finish(node_review)
                node_event = node_review_run.out["event_id"] if isinstance(node_review_run.out, dict) else "?"
                # 3. Both wait for the final decision while a reviewer decides on the page.
                finals: dict[str, Any] = {}

                def python_waits() -> None:
                    finals["python"] = client.wait(python_event, timeout_s=WAIT_S, until_final=True)
                    finals["python_at"] = time.time()

                waiter = threading.Thread(target=python_waits, daemon=True)
                waiter.start()
                node_final = _node_wait_final(node_env, node_event)
                reviewer_url = _url(f"{prefix}reviewer", passwords["reviewer"])
                stream_env = {
                    "SIGNUPS_STREAM": stack.streams.signups_stream,
                    "DECISIONS_STREAM": streams["decisions_stream"],
                }
                clicks: dict[str, float] = {}
                with (
                    review_server(tmp, reviewer_url, **stream_env) as (url, _server),
                    chromium(tmp / "profile") as page,
                ):
                    page.send("Page.navigate", url=f"{url}/")
                    eventually(lambda: page.ready("/login"), "the login form")
                    page.type("#name", REVIEWER)
                    page.type("#password", REVIEWER_PASSWORD)
                    page.click("#login")
                    eventually(lambda: page.ready("/"), "the queue after logging in")
                    clicks["python"] = _decide_on_the_page(page, url, python_event, "decline", "income not verifiable")
                    clicks["node"] = _decide_on_the_page(page, url, node_event, "approve", "verified by phone")
                    waiter.join(timeout=WAIT_S)
                    node_final_run = _finish(node_final)
                node_final_at = time.time()
                result = Answers(
                    stack,
                    refused,
                    refused_latency,
                    python_review,
                    finals.get("python"),
                    node_refused_run,
                    node_review_run,
                    node_final_run,
                )
                if "python_at" in finals:
                    result.final_latency_s["python"] = finals["python_at"] - clicks["python"]
                result.final_latency_s["node (process exit)"] = node_final_at - clicks["node"]
                yield result
            finally:
                client.close()
    finally:
        if users:
            admin.execute_command("ACL", "DELUSER", *users)
        admin.close()


def test_a_refused_signup_is_answered_refused_with_its_reason_by_both_clients(answers: Answers) -> None:
    assert answers.python_refused is not None, "the Python client timed out instead of getting the refusal"
    refusal = answers.python_refused.refusal
    assert refusal.reason == "invalid_value" and "application.purpose" in refusal.message
    assert refusal.retryable is False
    assert answers.python_refused_latency_s is not None and answers.python_refused_latency_s < 1.0
    node = answers.node_refused
    assert node.code == 4, f"exit {node.code}: {node.stderr}"
    assert node.out["kind"] == "refusal" and node.out["reason"] == "invalid_value"
    dead = answers.stack.redis.xlen(answers.stack.streams.dead_letter_stream)
    assert dead == 2, "each refused signup is dead-lettered for the operators too"


def test_a_review_band_signup_gets_review_then_the_reviewers_final_decision(answers: Answers) -> None:
    review = answers.python_review
    assert review is not None and review.outcome == "review" and review.final is False
    node_review = answers.node_review
    assert node_review.code == 0, node_review.stderr
    assert node_review.out["decision"] == "review" and node_review.out["final"] is False
    final = answers.python_final
    assert final is not None, "the Python client never received the final decision"
    assert final.outcome == "decline" and final.final is True
    assert final.review is not None and final.review.reviewer_id == "carol"
    assert final.review.reason == "income not verifiable"
    node_final = answers.node_final
    assert node_final.code == 0, node_final.stderr
    assert node_final.out["decision"] == "approve" and node_final.out["final"] is True
    assert node_final.out["review"]["reviewer_id"] == "carol"
    assert decision_errors(node_final.out) == [] and decision_errors(dict(final.raw)) == []


def test_each_case_is_decided_once_on_the_stream(answers: Answers) -> None:
    stack = answers.stack
    payloads = [json.loads(f[b"payload"]) for _i, f in stack.redis.xrange(stack.streams.decisions_stream)]
    by_event: dict[str, list[tuple[str, bool]]] = {}
    for p in payloads:
        by_event.setdefault(p["event_id"], []).append((p["decision"], p["final"]))
    reviewed = [e for e, seq in by_event.items() if seq[0][0] == "review"]
    assert len(reviewed) == 2
    assert sorted(by_event[e][1][0] for e in reviewed) == ["approve", "decline"]
    assert all(len(by_event[e]) == 2 and by_event[e][1][1] is True for e in reviewed)
    assert not any(p.get("kind") == "refusal" for p in payloads), "refusals never go to the decisions stream"
    REPORT.append(
        f"answers: refusal received {answers.python_refused_latency_s:.3f} s after its dead letter (Python client); "
        + "final decision after the reviewer's click: "
        + ", ".join(f"{k} {v:.3f} s" for k, v in answers.final_latency_s.items())
    )
