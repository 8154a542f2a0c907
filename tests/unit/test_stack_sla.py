"""The local stack's SLA service (issue 28, items 4 and 6): its own read-only Airflow user's
password file, a generated page token (0600, kept across `up`s) that the service is given,
and the running Redis' version reported, with a loud warning below 7.4.6."""

from __future__ import annotations

from pathlib import Path

import redis

from onboarding import redis_version
from sla.settings import SlaSettings
from stack.local import Stack
from stack.settings import StackSettings
from tests.conftest import TEST_REDIS_URL


def stack_in(tmp_path: Path) -> Stack:
    return Stack(StackSettings.from_env({"ONBOARDING_HOME": str(tmp_path), "REDIS_URL": TEST_REDIS_URL}))


def test_the_sla_service_has_its_own_airflow_user_and_a_private_page_token(tmp_path: Path) -> None:
    stack = stack_in(tmp_path)
    token = stack.prepare_sla_page_token()
    path = stack.sla_page_token_file
    assert len(token) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert stack.prepare_sla_page_token() == token  # the next `up` keeps it
    stack.realtime.prepare()
    [service] = [s for s in stack.services(start_redis=True) if s.name == "sla"]
    settings = SlaSettings.from_env(service.env)
    assert settings.page_token == token
    assert settings.airflow.username == "sla"
    assert Path(service.env["AIRFLOW_PASSWORD_FILE"]) == stack.realtime.sla_password_file
    password_file = stack.realtime.sla_password_file
    assert password_file.stat().st_mode & 0o077 == 0
    assert password_file.read_text().strip() != stack.realtime.listener_password_file.read_text().strip()


def test_the_stack_reports_the_redis_version_and_warns_below_7_4_6(redis_client: redis.Redis, tmp_path: Path) -> None:
    note = stack_in(tmp_path).redis_version_note()
    assert note is not None
    running = redis_version.parse(str(redis_client.info("server")["redis_version"]))
    assert note.startswith(f"Redis {'.'.join(map(str, running))}")
    assert ("WARNING" in note) is (not redis_version.is_fixed(running))
    if "WARNING" in note:
        assert "must not hold production data" in note


def test_no_redis_no_version_note(tmp_path: Path) -> None:
    stack = Stack(StackSettings.from_env({"ONBOARDING_HOME": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}))
    assert stack.redis_version_note() is None
