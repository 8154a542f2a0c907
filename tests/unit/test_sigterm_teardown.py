"""A test run stopped with SIGTERM (a CI time-out) still stops the processes its fixtures
started: nothing of the run is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INNER = """
import subprocess, time
from pathlib import Path
import pytest

@pytest.fixture
def service():
    child = subprocess.Popen(["sleep", "300"], start_new_session=True)
    Path("child.pid").write_text(str(child.pid))
    yield child
    child.kill()
    child.wait()

def test_long(service):
    Path("started").write_text("1")
    time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_runs_the_fixture_teardown(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "testkit.pytest_signals",
            "test_inner.py",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int((tmp_path / "child.pid").read_text())
    assert _alive(pid)
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=60)
    try:
        assert not _alive(pid), output
        assert "stopped by signal" in output
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
