"""A review decided end to end through the page in headless Chromium.

A `review` decision is published (which opens its case); `onboarding-review serve` runs as its
own process, connected as the `reviewer` Redis ACL user; a reviewer added with `add-reviewer`
logs in through the form, opens the case from the queue, claims it, chooses decline, types a
reason and submits. The page shows the case decided, and the app's side has the final decision
on the event's key and on the decisions stream, with that reviewer. SIGTERM then stops the
server cleanly.

Chromium is driven over the DevTools protocol (`--remote-debugging-port`, the `websockets`
package the environment already has): real mouse clicks and typed text, no extra driver.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.sync.client import ClientConnection, connect

from onboarding.decision import DecisionEvent, get_decision, publish_decision, utc_now
from onboarding.settings import StreamSettings
from ops.redis_acl import apply
from testkit.services import free_port, require
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.e2e

STREAMS = StreamSettings(redis_url=TEST_REDIS_URL)
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--window-size=1280,1000",
)  # fmt: skip


def eventually(check: Callable[[], Any], what: str, timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # events arrive in between: skip them
            reply = json.loads(self.socket.recv(timeout=30))
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def ready(self, path: str) -> bool:
        return bool(self.js(f"location.pathname === {json.dumps(path)} && document.readyState === 'complete'"))

    def text(self, selector: str) -> str | None:
        return self.js(f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = self.js(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def type(self, selector: str, text: str) -> None:
        self.click(selector)
        self.send("Input.insertText", text=text)


@contextmanager
def chromium(profile: Path) -> Iterator[Page]:
    binary = shutil.which("chromium")
    require(binary is not None, "chromium (Debian package chromium)")
    proc = subprocess.Popen(
        [str(binary), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        port = eventually(lambda: port_file.exists() and port_file.read_text().split("\n")[0], "Chromium's port", 30)
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        tab = next(t for t in targets if t["type"] == "page")
        with connect(tab["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
            page = Page(socket)
            page.send("Page.enable")
            page.send("Page.setBypassCSP", enabled=True)  # the page allows no scripts; the test reads its DOM
            yield page
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def review_server(tmp_path: Path, redis_url: str, **extra_env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    secret = tmp_path / "session-secret"
    secret.write_text(secrets.token_urlsafe(32))
    password = tmp_path / "reviewer-password"
    password.write_text("a long demo password\n")
    env = {
        **os.environ,
        "ONBOARDING_HOME": str(tmp_path),
        "REDIS_URL": redis_url,
        "REVIEW_PORT": str(port),
        "REVIEW_USERS_FILE": str(tmp_path / "reviewers.json"),
        "REVIEW_SESSION_SECRET_FILE": str(secret),
        "LOG_FORMAT": "text",
        **extra_env,
    }
    added = subprocess.run(
        [sys.executable, "-m", "review", "add-reviewer", "carol", "--password-file", str(password)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    proc = subprocess.Popen([sys.executable, "-m", "review", "serve"], env=env, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                return False

        eventually(ready, "the review page", 30)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_reviewer_decides_a_case_on_the_page_in_chromium(redis_client: redis.Redis, tmp_path: Path) -> None:
    acl_password, prefix = secrets.token_urlsafe(16), f"test-review-{os.getpid()}-"
    created = apply(redis_client, STREAMS, {"REDIS_ACL_PASSWORD_REVIEWER": acl_password}, user_prefix=prefix)
    parsed = redis.connection.parse_url(TEST_REDIS_URL)
    reviewer_url = (
        f"redis://{prefix}reviewer:{acl_password}@{parsed.get('host', '127.0.0.1')}:{parsed.get('port', 6379)}"
        f"/{parsed.get('db', 0)}"
    )
    event_id = "evt-e2e-review-1"
    publish_decision(
        redis_client,
        STREAMS.decisions_stream,
        DecisionEvent(
            event_id=event_id,
            user_id="user-e2e-1",
            decision="review",
            score=0.51,
            reason_codes=[{"code": "credit_history", "text": "Credit history", "contribution": 0.4}],
            model_version="v1",
            run_id=f"signup__{event_id}",
            timestamps={"accepted_at": utc_now()},
        ),
    )
    try:
        with review_server(tmp_path, reviewer_url) as (url, server), chromium(tmp_path / "profile") as page:
            page.send("Page.navigate", url=f"{url}/case/{event_id}")
            eventually(lambda: page.ready("/login"), "the login form (no session yet)")
            page.type("#name", "carol")
            page.type("#password", "a long demo password")
            page.click("#login")
            eventually(lambda: page.ready("/"), "the queue after logging in")
            assert page.text("#reviewer") == "carol" and page.text("#depth") == "1"

            page.click(f'a[href="/case/{event_id}"]')
            eventually(lambda: page.ready(f"/case/{event_id}"), "the case page")
            assert page.text("#state") == "open"
            page.click("#claim")
            eventually(lambda: page.text("#assignee") == "carol", "the case claimed by carol")
            page.click("#outcome-decline")
            page.type("#reason", "income could not be verified")
            page.click("#decide")
            eventually(lambda: page.text("#state") == "decided", "the case shown decided")
            assert page.text("#outcome") == "decline" and page.text("#decided-by") == "carol"

            final = get_decision(redis_client, STREAMS.decisions_stream, event_id)
            assert final is not None and final.is_final and final.decision == "decline"
            assert final.review is not None and final.review["reviewer_id"] == "carol"
            assert final.review["reason"] == "income could not be verified"
            stream = [json.loads(f[b"payload"]) for _id, f in redis_client.xrange(STREAMS.decisions_stream)]
            assert [(p["decision"], p["final"]) for p in stream] == [("review", False), ("decline", True)]
            assert stream[1]["review"]["reviewer_id"] == "carol"

            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=10) == 0
            log = server.stderr.read().decode() if server.stderr else ""
            assert "carol decided the case" in log and "review: stopped" in log
    finally:
        redis_client.execute_command("ACL", "DELUSER", *created)
