"""A service is its whole process tree (stack.processes, stack.supervisor): kill -9 of a
leader whose worker holds its port, as an api-server's uvicorn workers do, heals; `down`
ends the trees a killed supervisor left, and never signals a process whose pid merely
matches a pid file; logs rotate at their cap; `status` is 0 only when every part is
healthy now."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stack import cli
from stack.local import Stack
from stack.processes import TAG_VAR, ProcessRecord, stack_id, tagged
from stack.settings import StackSettings
from stack.supervisor import Plan, Service, read_state
from testkit.services import free_port

PY = sys.executable
SLEEPER = [PY, "-c", "import time\nwhile True: time.sleep(0.1)"]


def tree_server(port: int, docroot: Path) -> list[str]:
    """Like `airflow api-server` or `airflow scheduler`: a leader whose worker process binds
    the port, plus a process that left the session (setsid), as a task process may. Both
    set their process title, as Airflow's and rq's processes do, which overwrites what
    /proc/<pid>/environ shows (so neither can be found by its tag). The leader exits when
    its worker does (a worker that cannot bind exits at once)."""
    retitle = "import setproctitle\nsetproctitle.setproctitle('airflow worker -- LocalExecutor: <idle> ' * 4)\n"
    worker = (
        f"{retitle}import functools, http.server\n"
        f"handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory={str(docroot)!r})\n"
        f"http.server.ThreadingHTTPServer(('127.0.0.1', {port}), handler).serve_forever()\n"
    )
    escaped = f"{retitle}import time\nwhile True: time.sleep(0.1)\n"
    leader = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', {escaped!r}], start_new_session=True)\n"
        f"worker = subprocess.Popen([sys.executable, '-c', {worker!r}])\n"
        "sys.exit(worker.wait() or 1)\n"
    )
    return [PY, "-c", leader]


def wait_for(predicate, what: str, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    """Running: not gone, and not a zombie waiting for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).is_success
    except httpx.HTTPError:
        return False


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ONBOARDING_HOME", str(tmp_path))
    local = Stack(StackSettings.from_env())
    yield local
    local.down()
    assert tagged(stack_id(local.run_dir)) == []


def start(stack: Stack, services: list[Service], **plan: int) -> dict:
    Plan(services, stack.run_dir, stack.log_dir, **plan).write(stack.plan_file)
    stack.supervisor.start()
    return wait_for(lambda: (s := read_state(stack.run_dir)) and s["phase"] == "running" and s, "the stack to run")


def test_a_killed_leader_whose_worker_holds_the_port_comes_back(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "ok").write_text("ok")
    url = f"http://127.0.0.1:{port}/ok"
    state = start(stack, [Service("api", tree_server(port, tmp_path), dict(os.environ), health=f"http:{url}")])
    record = ProcessRecord.read(stack.run_dir / "api.pid")
    assert record is not None and record.pgid == record.pid and record.start is not None
    wait_for(lambda: len(read_state(stack.run_dir)["services"]["api"]["seen"]) == 2, "a snapshot of the tree")
    tree = [record.pid] + [pid for pid, _start in read_state(stack.run_dir)["services"]["api"]["seen"]]
    assert tagged(record.tag) == [record.pid]  # the others set their titles: no tag to read

    os.kill(state["services"]["api"]["pid"], signal.SIGKILL)

    wait_for(
        lambda: (
            (s := read_state(stack.run_dir))
            and s["services"]["api"]["state"] == "up"
            and s["services"]["api"]["restarts"] == 1
        ),
        "the api to be up again",
    )
    assert answers(url)
    assert [pid for pid in tree if alive(pid)] == []  # the old worker and the escaped process were ended
    assert cli.main(["status"]) == 0


def test_down_ends_what_a_killed_supervisor_left_and_spares_a_reused_pid(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    start(
        stack,
        [
            Service("api", tree_server(port, tmp_path), dict(os.environ), health=f"http:http://127.0.0.1:{port}/"),
            Service("worker", SLEEPER, dict(os.environ), alive_s=0.3),
        ],
    )
    state = wait_for(
        lambda: (s := read_state(stack.run_dir)) and len(s["services"]["api"]["seen"]) == 2 and s, "a snapshot"
    )
    ours = [stack.supervisor.pid()] + [
        pid for service in state["services"].values() for pid in [service["pid"], *(p for p, _ in service["seen"])]
    ]
    assert len(ours) == 5  # supervisor, api leader + worker + escaped process, worker
    os.kill(stack.supervisor.pid(), signal.SIGKILL)

    # A stranger now holds the pid the worker's record names (as after a pid reuse).
    stranger = subprocess.Popen(SLEEPER, env={k: v for k, v in os.environ.items() if k != TAG_VAR})
    try:
        worker = ProcessRecord.read(stack.run_dir / "worker.pid")
        assert worker is not None
        os.kill(worker.pid, signal.SIGKILL)
        ProcessRecord(stranger.pid, stranger.pid, worker.start, worker.tag).write(stack.run_dir / "worker.pid")

        stack.down()

        assert [pid for pid in ours if alive(pid) and pid != worker.pid] == []
        assert stranger.poll() is None, "down signalled a process that only shares a recorded pid"
    finally:
        stranger.kill()
        stranger.wait()


def test_status_is_0_only_when_every_part_answers_its_health_check(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "ok").write_text("ok")
    start(
        stack,
        [Service("api", tree_server(port, tmp_path), dict(os.environ), health=f"http:http://127.0.0.1:{port}/ok")],
    )
    assert cli.main(["status"]) == 0
    (tmp_path / "ok").unlink()  # the process runs, but its health check fails
    assert stack.status()["api"].startswith("unhealthy")
    assert cli.main(["status"]) == 3


def test_logs_rotate_at_their_cap_and_the_service_keeps_writing(stack: Stack) -> None:
    chatty = [PY, "-u", "-c", "import time\nwhile True:\n    print('x' * 999)\n    time.sleep(0.01)"]
    service = Service("chatty", chatty, dict(os.environ), alive_s=0.3)
    state = start(stack, [service], log_max_bytes=20_000, log_backups=2)
    log = stack.log_dir / "chatty.log"
    wait_for(lambda: log.with_name("chatty.log.2").exists(), "two rotations")
    time.sleep(2)  # more rotations: only two backups are kept
    assert sorted(p.name for p in stack.log_dir.glob("chatty.log*")) == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    assert 15_000 < log.with_name("chatty.log.1").stat().st_size < 200_000
    size = log.stat().st_size
    wait_for(lambda: log.stat().st_size != size, "the service to go on writing")
    assert read_state(stack.run_dir)["services"]["chatty"]["pid"] == state["services"]["chatty"]["pid"]
