"""The local stack's review page: the logins `up` makes once, its service and what a command
run by hand takes from the stack."""

from __future__ import annotations

import json
from pathlib import Path

from onboarding.settings import STACK_ENV_FILE, use_stack_defaults
from review.auth import Reviewers, add_reviewer
from review.settings import ReviewSettings
from stack.local import Stack
from stack.review import DEMO_REVIEWER, ReviewLogins
from stack.settings import StackSettings


def private(path: Path) -> bool:
    return path.stat().st_mode & 0o077 == 0


def test_up_makes_a_secret_and_a_demo_reviewer_once_and_keeps_them(tmp_path: Path) -> None:
    logins = ReviewLogins(tmp_path)
    logins.prepare()
    for path in (logins.session_secret_file, logins.password_file, logins.users_file):
        assert private(path), path
    password = logins.password_file.read_text().strip()
    secret = logins.session_secret_file.read_text().strip()
    assert len(secret) >= 32 and len(password) >= 12
    assert Reviewers(logins.users_file).authenticate(DEMO_REVIEWER, password)

    add_reviewer(logins.users_file, "alice", "alice's long password")  # added by hand
    users = logins.users_file.read_text()
    logins.prepare()  # the next `up`: nothing changes
    assert logins.password_file.read_text().strip() == password
    assert logins.session_secret_file.read_text().strip() == secret
    assert logins.users_file.read_text() == users

    logins.password_file.unlink()  # a lost password: a new one, the other reviewers kept
    logins.prepare()
    renewed = logins.password_file.read_text().strip()
    assert renewed != password
    reviewers = Reviewers(logins.users_file)
    assert reviewers.authenticate(DEMO_REVIEWER, renewed) and not reviewers.authenticate(DEMO_REVIEWER, password)
    assert reviewers.authenticate("alice", "alice's long password")


def test_the_review_service_and_commands_by_hand_share_the_stacks_settings(tmp_path: Path) -> None:
    stack = Stack(StackSettings.from_env({"ONBOARDING_HOME": str(tmp_path), "REVIEW_PORT": "19116"}))
    stack.review_logins.prepare()
    [service] = [s for s in stack.services(start_redis=True) if s.name == "review"]
    assert service.argv[-1] == "serve" and service.health == "http:http://127.0.0.1:19116/readyz"
    served = ReviewSettings.from_env(service.env)
    assert served.port == 19116 and served.users_file == stack.review_logins.users_file
    assert served.require_session_secret() == stack.review_logins.session_secret_file.read_text().strip()
    assert served.streams.redis_url == stack.settings.redis_url

    stack.write_operator_env()
    recorded = json.loads((tmp_path / STACK_ENV_FILE).read_text())
    assert recorded["REVIEW_USERS_FILE"] == str(stack.review_logins.users_file)
    assert "REVIEW_SESSION_SECRET" not in recorded  # the file's name only, never the secret
    environ = {"ONBOARDING_HOME": str(tmp_path)}
    use_stack_defaults(environ)
    by_hand = ReviewSettings.from_env(environ)
    assert by_hand.users_file == served.users_file and by_hand.streams == served.streams
