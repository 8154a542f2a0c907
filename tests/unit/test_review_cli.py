"""onboarding-review against a real Redis: what a reviewer at a terminal sees when listing,
claiming, deciding and releasing cases, and the one-line refusals of a conflict."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from onboarding.decision import DecisionEvent, get_decision, publish_decision, utc_now
from review.auth import Reviewers
from review.cli import main
from review.settings import ENVIRONMENT
from tests.conftest import TEST_REDIS_URL

STREAM = "decisions"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, _what in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ONBOARDING_HOME", str(tmp_path))  # no local stack's settings
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("DECISIONS_STREAM", STREAM)


def review_case(client: redis.Redis, event_id: str, user_id: str = "user-1", deadline_s: float = 86400) -> None:
    event = DecisionEvent(
        event_id=event_id,
        user_id=user_id,
        decision="review",
        score=0.47,
        reason_codes=[{"code": "duration", "text": "Loan duration", "contribution": 0.21}],
        model_version="v1",
        run_id=f"signup__{event_id}",
        timestamps={"accepted_at": utc_now()},
    )
    publish_decision(client, STREAM, event, review_deadline_s=deadline_s)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_claim_decide_and_show(redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    review_case(redis_client, "evt-late", "user-late", deadline_s=60)
    review_case(redis_client, "evt-soon", "user-soon", deadline_s=3600)
    redis_client.zadd("decisions:review:queue", {"evt-late": time.time() - 5})  # its deadline has passed
    redis_client.hset("decisions:review:case:evt-late", "deadline", repr(time.time() - 5))

    code, out, err = run(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["evt-late", "evt-soon"]  # earliest deadline first
    assert "OVERDUE" in lines[0] and "OVERDUE" not in lines[1]
    assert "user-soon" in lines[1] and "open" in lines[1] and "0.470" in lines[1] and "borderline score" in lines[1]
    assert "2 case(s) waiting, 1 overdue" in err

    code, out, _err = run(capsys, "claim", "evt-soon", "--reviewer", "alice")
    assert code == 0 and out.startswith("evt-soon: claimed by alice; due ")
    listed = [json.loads(line) for line in run(capsys, "list", "--json")[1].splitlines()]
    soon = next(c for c in listed if c["case_id"] == "evt-soon")
    assert (soon["state"], soon["assignee"], soon["overdue"]) == ("claimed", "alice", False)

    code, out, _err = run(capsys, "decide", "evt-soon", "--reviewer", "alice", "--outcome", "decline",
                          "--reason", "income not verifiable")  # fmt: skip
    assert code == 0 and "decided: decline by alice" in out
    final = get_decision(redis_client, STREAM, "evt-soon")
    assert final is not None and final.is_final and final.decision == "decline"
    assert final.review is not None and final.review["reviewer_id"] == "alice"

    code, out, _err = run(capsys, "show", "evt-soon")
    assert code == 0
    assert "state          decided" in out and "decided_by     alice" in out and "reason code    duration" in out
    assert [line.split()[2] for line in out.split("history:\n")[1].splitlines()] == ["opened", "claimed", "decided"]
    shown = json.loads(run(capsys, "show", "evt-soon", "--json")[1])
    assert [h["action"] for h in shown["history"]] == ["opened", "claimed", "decided"]
    assert [line.split()[0] for line in run(capsys, "list")[1].splitlines()] == ["evt-late"]
    history = run(capsys, "history", "--case", "evt-soon")[1].splitlines()
    assert len(history) == 3 and history[-1].split()[2:4] == ["decided", "alice"]


def test_conflicts_are_one_clear_line_and_nothing_changes(
    redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    review_case(redis_client, "evt-c1")
    assert run(capsys, "claim", "evt-c1", "--reviewer", "alice")[0] == 0

    code, out, err = run(capsys, "decide", "evt-c1", "--reviewer", "bob", "--outcome", "approve", "--reason", "fine")
    assert (code, out) == (2, "")
    assert err == "onboarding-review: case 'evt-c1' is claimed by alice\n"
    code, _out, err = run(capsys, "release", "evt-c1", "--reviewer", "bob")
    assert code == 2 and "claimed by alice" in err
    assert run(capsys, "release", "evt-c1", "--reviewer", "lead", "--force")[:2] == (0, "evt-c1: open again\n")

    assert run(capsys, "decide", "evt-c1", "--reviewer", "bob", "--outcome", "approve", "--reason", "fine")[0] == 0
    code, _out, err = run(capsys, "decide", "evt-c1", "--reviewer", "alice", "--outcome", "decline", "--reason", "no")
    assert code == 2
    assert err == "onboarding-review: case 'evt-c1' was already decided (approve) by bob; it cannot be changed\n"
    final = get_decision(redis_client, STREAM, "evt-c1")
    assert final is not None and final.decision == "approve" and final.review is not None
    assert final.review["reviewer_id"] == "bob"
    assert redis_client.xlen(STREAM) == 2  # the provisional review and one final decision

    code, _out, err = run(capsys, "claim", "evt-missing", "--reviewer", "alice")
    assert (code, err) == (1, "onboarding-review: no review case 'evt-missing'\n")
    code, _out, err = run(capsys, "decide", "evt-c1", "--reviewer", "x", "--outcome", "approve", "--reason", "  ")
    assert code == 1 and "a reason is required" in err


def test_a_bad_setting_or_an_unreachable_redis_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVIEW_DEADLINE_S", "a day")
    code, _out, err = run(capsys, "list")
    assert (code, err) == (1, "onboarding-review: REVIEW_DEADLINE_S='a day' is not a number\n")
    monkeypatch.delenv("REVIEW_DEADLINE_S")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    code, _out, err = run(capsys, "list")
    assert code == 1 and err.startswith("onboarding-review: Redis at redis://:***@127.0.0.1:1/0 failed")
    assert "hunter2" not in err and len(err.splitlines()) == 1


def test_version_and_help_list_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"onboarding-review {version('onboarding-decisions')}\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    read = {"REDIS_URL", "DECISIONS_STREAM", "REVIEW_DEADLINE_S", "REVIEW_HOST", "REVIEW_PORT", "REVIEW_USERS_FILE",
            "REVIEW_SESSION_SECRET", "REVIEW_SESSION_SECRET_FILE", "REVIEW_SESSION_TTL_S", "LOG_FORMAT"}  # fmt: skip
    assert {name for name in read if f"\n  {name} " in help_text} == read
    for command in ("list", "show", "claim", "release", "decide", "history", "serve", "add-reviewer"):
        assert f"onboarding-review {command}" in help_text


def test_add_reviewer_writes_a_hash_readable_by_its_owner_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    users = tmp_path / "reviewers.json"
    secret = tmp_path / "password"
    secret.write_text("correct horse battery\n")
    monkeypatch.setenv("REVIEW_USERS_FILE", str(users))
    code, out, _err = run(capsys, "add-reviewer", "alice", "--password-file", str(secret))
    assert code == 0 and out.startswith("added reviewer alice")
    assert users.stat().st_mode & 0o777 == 0o600
    entry = json.loads(users.read_text())["alice"]
    assert entry.startswith("pbkdf2_sha256$") and int(entry.split("$")[1]) >= 200_000
    assert "correct horse" not in users.read_text()
    assert Reviewers(users).authenticate("alice", "correct horse battery")
    assert not Reviewers(users).authenticate("alice", "correct horse battery!")

    prompts = iter(["first password!", "second password"])
    monkeypatch.setattr("getpass.getpass", lambda _prompt="": next(prompts))
    code, _out, err = run(capsys, "add-reviewer", "bob")
    assert (code, err) == (1, "onboarding-review: the two passwords differ\n")
    code, _out, err = run(capsys, "add-reviewer", "bad name", "--password-file", str(secret))
    assert code == 1 and "reviewer name 'bad name'" in err
