"""The review page over HTTP against the real server (port 0) and a real Redis: a login is
required and checked, forms need their CSRF token, a decision made on the page reaches the app
as the final decision with the logged-in reviewer, a second reviewer cannot overwrite it, and
hostile values are escaped."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from onboarding.decision import DecisionEvent, get_decision, publish_decision, utc_now
from review.auth import Reviewers, Sessions, add_reviewer
from review.store import ReviewQueue
from review.web import ReviewApp, redis_ready, serve_review

STREAM = "decisions"
PASSWORDS = {"alice": "alice's long password", "bob": "bob's long password!"}


@pytest.fixture
def site(redis_client: redis.Redis, tmp_path: Path) -> Iterator[str]:
    users = tmp_path / "reviewers.json"
    for name, password in PASSWORDS.items():
        add_reviewer(users, name, password)
    app = ReviewApp(
        ReviewQueue(redis_client, STREAM),
        Reviewers(users),
        Sessions(secrets.token_urlsafe(32), 3600),
        redis_ready(redis_client),
        86400,
    )
    server = serve_review(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def review_case(client: redis.Redis, event_id: str, user_id: str = "user-1") -> None:
    event = DecisionEvent(
        event_id=event_id,
        user_id=user_id,
        decision="review",
        score=0.47,
        reason_codes=[{"code": "duration", "text": "Loan duration <b>", "contribution": 0.21}],
        model_version="v1",
        run_id=f"signup__{event_id}",
        timestamps={"accepted_at": utc_now()},
    )
    publish_decision(client, STREAM, event)


def logged_in(url: str, name: str) -> httpx.Client:
    browser = httpx.Client(base_url=url, timeout=10)
    reply = browser.post("/login", data={"name": name, "password": PASSWORDS[name]})
    assert reply.status_code == 303 and reply.headers["location"] == "/"
    cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    return browser


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


def test_every_page_needs_a_login_and_a_wrong_password_is_refused(site: str, redis_client: redis.Redis) -> None:
    review_case(redis_client, "evt-w1")
    anonymous = httpx.Client(base_url=site, timeout=10)
    for path in ("/", "/case/evt-w1"):
        reply = anonymous.get(path)
        assert (reply.status_code, reply.headers["location"]) == (303, "/login")
    reply = anonymous.post("/case/evt-w1/claim", data={"csrf": "x"})
    assert (reply.status_code, reply.headers["location"]) == (303, "/login")
    assert anonymous.get("/login").status_code == 200

    for name, password in (("alice", "bob's long password!"), ("mallory", "alice's long password"), ("alice", "")):
        refused = anonymous.post("/login", data={"name": name, "password": password})
        assert refused.status_code == 401 and "Wrong name or password" in refused.text
        assert "set-cookie" not in refused.headers
    assert anonymous.get("/").status_code == 303
    forged = httpx.Client(base_url=site, timeout=10, cookies={"review_session": "YWxpY2U.9999999999.x.sig"})
    assert forged.get("/").status_code == 303
    metrics = anonymous.get("/metrics").text
    assert "onboarding_review_login_failures_total 3.0" in metrics
    assert 'onboarding_review_http_requests_total{route="/",status="303"}' in metrics
    assert anonymous.get("/livez").status_code == 200 and anonymous.get("/readyz").text == "ok\n"

    alice = logged_in(site, "alice")
    queue = alice.get("/")
    assert queue.status_code == 200 and "evt-w1" in queue.text and 'id="depth">1<' in queue.text
    assert "script-src" not in queue.headers["content-security-policy"]  # no scripts at all
    logout = alice.post("/logout")
    assert logout.status_code == 303 and "Max-Age=0" in logout.headers["set-cookie"]
    assert alice.get("/").status_code == 303


def test_forms_without_their_csrf_token_are_refused(site: str, redis_client: redis.Redis) -> None:
    review_case(redis_client, "evt-w2")
    alice = logged_in(site, "alice")
    bob = logged_in(site, "bob")
    bobs_token = csrf(bob.get("/case/evt-w2").text)
    for data in ({}, {"csrf": ""}, {"csrf": bobs_token}):  # missing, empty, another session's
        refused = alice.post("/case/evt-w2/claim", data=data)
        assert refused.status_code == 403
    case = ReviewQueue(redis_client, STREAM).get("evt-w2")
    assert case.state.value == "open" and case.assignee is None


def test_claim_and_decide_on_the_page_publish_the_final_decision(site: str, redis_client: redis.Redis) -> None:
    review_case(redis_client, "evt-w3")
    alice = logged_in(site, "alice")
    page = alice.get("/case/evt-w3").text
    assert 'id="claim"' in page and 'id="decide"' in page and 'id="release"' not in page
    # The reviewer id is the logged-in name: a `reviewer` field in the form is ignored.
    claimed = alice.post("/case/evt-w3/claim", data={"csrf": csrf(page), "reviewer": "mallory"})
    assert claimed.status_code == 303 and claimed.headers["location"] == "/case/evt-w3"
    page = alice.get("/case/evt-w3").text
    assert 'id="assignee">alice<' in page and 'id="release"' in page and 'id="claim"' not in page

    decided = alice.post(
        "/case/evt-w3/decide",
        data={"csrf": csrf(page), "outcome": "decline", "reason": "income not verifiable", "reviewer": "mallory"},
    )
    assert decided.status_code == 303
    page = alice.get("/case/evt-w3").text
    assert 'id="state">decided<' in page and 'id="decided-by">alice<' in page and 'id="outcome">decline<' in page
    assert 'id="decide"' not in page
    final = get_decision(redis_client, STREAM, "evt-w3")
    assert final is not None and final.is_final and final.decision == "decline"
    assert final.review is not None and final.review["reviewer_id"] == "alice"
    assert final.review["reason"] == "income not verifiable"
    stream = [json.loads(fields[b"payload"]) for _id, fields in redis_client.xrange(STREAM)]
    assert [(p["decision"], p["final"]) for p in stream] == [("review", False), ("decline", True)]
    assert "evt-w3" not in alice.get("/").text


def test_a_second_reviewer_cannot_overwrite_a_decided_case(site: str, redis_client: redis.Redis) -> None:
    review_case(redis_client, "evt-w4")
    alice = logged_in(site, "alice")
    bob = logged_in(site, "bob")
    bobs_page = bob.get("/case/evt-w4").text  # bob opened the case while it was still open
    alices_page = alice.get("/case/evt-w4").text
    form = {"csrf": csrf(alices_page), "outcome": "approve", "reason": "verified by phone"}
    assert alice.post("/case/evt-w4/decide", data=form).status_code == 303

    late = bob.post("/case/evt-w4/decide", data={"csrf": csrf(bobs_page), "outcome": "decline", "reason": "no"})
    assert late.status_code == 409
    assert "was already decided (approve) by alice; it cannot be changed" in late.text
    assert "Traceback" not in late.text and 'id="decide"' not in late.text
    assert bob.post("/case/evt-w4/claim", data={"csrf": csrf(bobs_page)}).status_code == 409
    final = get_decision(redis_client, STREAM, "evt-w4")
    assert final is not None and final.decision == "approve" and final.review is not None
    assert final.review["reviewer_id"] == "alice"
    assert redis_client.xlen(STREAM) == 2

    review_case(redis_client, "evt-w5")
    alice.post("/case/evt-w5/claim", data={"csrf": csrf(alice.get("/case/evt-w5").text)})
    held = bob.post("/case/evt-w5/decide", data={"csrf": csrf(bobs_page), "outcome": "approve", "reason": "ok"})
    assert held.status_code == 409 and "is claimed by alice" in held.text
    no_reason = alice.post("/case/evt-w5/decide", data={"csrf": csrf(alices_page), "outcome": "approve", "reason": ""})
    assert no_reason.status_code == 400 and "a reason is required" in no_reason.text
    assert bob.get("/case/evt-none").status_code == 404


def test_hostile_values_are_escaped(site: str, redis_client: redis.Redis) -> None:
    hostile = "<script>alert(1)</script>"
    review_case(redis_client, "evt-w6", user_id=hostile)
    alice = logged_in(site, "alice")
    for path in ("/", "/case/evt-w6"):
        text = alice.get(path).text
        assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Loan duration &lt;b&gt;" in alice.get("/case/evt-w6").text
    refused = httpx.post(f"{site}/login", data={"name": hostile, "password": "x"}, timeout=10)
    assert refused.status_code == 401 and "<script>" not in refused.text
