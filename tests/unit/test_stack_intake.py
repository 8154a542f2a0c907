"""The local stack runs the intake process (issue 28): one `intake` service, started before the
listeners, with the listeners' Redis and streams (the same apps), its own health port."""

from __future__ import annotations

from pathlib import Path

from intake.settings import IntakeSettings
from listener.settings import ListenerSettings
from stack.local import Stack
from stack.settings import StackSettings
from tests.conftest import TEST_REDIS_URL


def test_the_local_stack_runs_one_intake_process_beside_the_listeners(tmp_path: Path) -> None:
    env = {"ONBOARDING_HOME": str(tmp_path), "REDIS_URL": TEST_REDIS_URL, "INTAKE_METRICS_PORT": "19118"}
    stack = Stack(StackSettings.from_env(env))
    stack.realtime.prepare()
    services = stack.services(start_redis=False)
    names = [s.name for s in services]
    assert names.count("intake") == 1 and names.index("intake") < names.index("listener-1")
    [service] = [s for s in services if s.name == "intake"]
    assert service.argv[1:] == ["-m", "intake"] and service.health == "http:http://127.0.0.1:19118/healthz"
    intake = IntakeSettings.from_env(service.env)
    listener = ListenerSettings.from_env(next(s for s in services if s.name == "listener-1").env)
    assert intake.streams == listener.streams and intake.metrics_port == 19118
    assert intake.listener_group == listener.group
