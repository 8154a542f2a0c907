"""`onboarding-stack logs [-f] [NAME]`: the last lines, and following logs as they grow,
across the supervisor's copy-truncate rotation and logs that appear later."""

from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from stack.logtail import follow, last_lines


def test_last_lines_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_text("".join(f"line {i}\n" for i in range(200_000)))
    assert last_lines(log, 3) == ["line 199997", "line 199998", "line 199999"]
    assert last_lines(log, 0) == []
    (tmp_path / "empty.log").write_text("")
    assert last_lines(tmp_path / "empty.log", 5) == []


def eventually(check, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)


def test_following_survives_rotation_partial_lines_and_new_logs(tmp_path: Path) -> None:
    listener = tmp_path / "listener-1.log"
    listener.write_text("old 1\nold 2\n")
    out, stop = io.StringIO(), threading.Event()
    thread = threading.Thread(
        target=follow, args=(lambda: sorted(tmp_path.glob("*.log")), out, stop), kwargs={"backlog": 1, "poll_s": 0.02}
    )
    thread.start()
    try:
        eventually(lambda: "old 2" in out.getvalue())
        with listener.open("a") as fh:
            fh.write("accepted e-1\npartial ")
        eventually(lambda: "accepted e-1" in out.getvalue())
        with listener.open("a") as fh:
            fh.write("line done\n")
        eventually(lambda: "partial line done" in out.getvalue())
        with listener.open("r+") as fh:  # the supervisor's rotation: copy, then truncate in place
            fh.truncate(0)
        with listener.open("a") as fh:
            fh.write("after rotation\n")
        (tmp_path / "sla.log").write_text("sla started\n")  # a component that started later
        eventually(lambda: "after rotation" in out.getvalue() and "sla started" in out.getvalue())
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert out.getvalue().splitlines() == [
        "listener-1 | old 2",
        "listener-1 | accepted e-1",
        "listener-1 | partial line done",
        "listener-1 | after rotation",
        "sla        | sla started",
    ]


def test_the_command_follows_one_log_and_stops_on_sigterm(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "listener-1.log").write_text("first\n")
    (logs / "sla.log").write_text("not this one\n")
    env = {**os.environ, "ONBOARDING_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    unknown = subprocess.run(
        [sys.executable, "-m", "stack.cli", "logs", "nosuch"], env=env, capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 1 and "known: listener-1, sla" in unknown.stderr
    process = subprocess.Popen(
        [sys.executable, "-m", "stack.cli", "logs", "-f", "listener-1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen: list[str] = []

        def read_until(text: str) -> None:
            deadline = time.monotonic() + 60
            while text not in seen:
                assert time.monotonic() < deadline, seen
                ready, _, _ = select.select([process.stdout], [], [], 1)
                if ready:
                    seen.append(process.stdout.readline().rstrip("\n"))  # type: ignore[union-attr]

        read_until("first")
        with (logs / "listener-1.log").open("a") as fh:
            fh.write("second\n")
        read_until("second")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "not this one" not in seen  # one log: its lines, unprefixed
