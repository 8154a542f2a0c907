"""Background processes with pid files and log files: start, check, stop whole process trees.

Every process started here runs in its own session (so its process group is its pid) and
carries a tag in its environment, `ONBOARDING_PROCESS_TAG=<stack id>/<name>/<nonce>`,
which every descendant inherits: the uvicorn workers of an api-server, the LocalExecutor
workers of a scheduler and the task processes they fork. The pid file records the
leader's pid, process group, start time (clock ticks since boot, /proc/<pid>/stat) and
tag, so that

- a leader's pid that the kernel has since given to another process is never signalled
  (its start time differs), and
- what is left of a tree whose leader died (kill -9, a crash) can still be found by its
  tag and ended, even after the parent that started it died too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from hashlib import sha256
from pathlib import Path

TAG_VAR = "ONBOARDING_PROCESS_TAG"
PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file records about a process tree's leader."""

    pid: int
    pgid: int
    start: int | None  # /proc/<pid>/stat field 22; None where /proc is unavailable
    tag: str

    def leader_alive(self) -> bool:
        """The recorded leader runs still (and is the same process, not a reused pid)."""
        if not _alive(self.pid):
            return False
        return self.start is None or start_time(self.pid) in (self.start, None)

    def members(self) -> list[int]:
        """Every live process of the tree: the leader (if it is still the same process)
        and every process carrying the tag, wherever it was re-parented."""
        found = set(tagged(self.tag))
        if self.leader_alive():
            found.add(self.pid)
        return sorted(found)

    @classmethod
    def read(cls, path: Path) -> ProcessRecord | None:
        try:
            text = path.read_text().strip()
        except OSError:
            return None
        try:
            data = json.loads(text)
            if isinstance(data, int):  # a bare pid, as older pid files held
                return cls(data, data, None, "")
            return cls(int(data["pid"]), int(data["pgid"]), data.get("start"), str(data.get("tag", "")))
        except (ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)) + "\n")
        tmp.replace(path)


def stack_id(run_dir: Path) -> str:
    """The tag prefix of every process one run directory's stack starts: stable across
    supervisor restarts, so `down` finds what an earlier, dead supervisor left."""
    return sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]


def new_tag(run_dir: Path, name: str) -> str:
    return f"{stack_id(run_dir)}/{name}/{uuid.uuid4().hex[:12]}"


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (after the parenthesised command, which may hold spaces)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # fields[0] is field 3 (state)
    except (IndexError, ValueError):
        return None


def _environ_tag(pid: int) -> str | None:
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    prefix = TAG_VAR.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def _pids() -> Iterator[int]:
    try:
        entries = os.listdir(PROC)
    except OSError:
        return
    me = os.getpid()
    for entry in entries:
        if entry.isdigit() and int(entry) != me:
            yield int(entry)


def tagged(tag_or_prefix: str) -> list[int]:
    """Live processes whose tag equals `tag_or_prefix` or starts with it followed by `/`."""
    if not tag_or_prefix:
        return []
    found = []
    for pid in _pids():
        tag = _environ_tag(pid)
        if tag is not None and (tag == tag_or_prefix or tag.startswith(tag_or_prefix + "/")):
            found.append(pid)
    return found


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        _signal(pid, sig)


def end_processes(pids: list[int], timeout_s: float, leader: ProcessRecord | None = None) -> list[int]:
    """SIGTERM each (and the leader's group), wait up to `timeout_s`, SIGKILL what is left.
    Returns the pids that needed SIGKILL."""
    if leader is not None and leader.leader_alive():
        _signal_group(leader.pgid, signal.SIGTERM)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    stubborn = [p for p in pids if _alive(p)]
    for pid in stubborn:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in stubborn):
        time.sleep(0.02)
    return stubborn


def end_tree(record: ProcessRecord, timeout_s: float) -> list[int]:
    """End a whole tree: SIGTERM, wait, SIGKILL; returns the pids that needed SIGKILL."""
    members = record.members()
    if not members:
        return []
    return end_processes(members, timeout_s, record)


@dataclass(frozen=True)
class ManagedProcess:
    """A named command whose record lives in `run_dir/<name>.pid` and output in `log_dir/<name>.log`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    run_dir: Path
    log_dir: Path
    cwd: Path | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def record(self) -> ProcessRecord | None:
        return ProcessRecord.read(self.pid_file)

    def pid(self) -> int | None:
        record = self.record()
        return record.pid if record is not None and record.leader_alive() else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self) -> int:
        existing = self.pid()
        if existing is not None:
            return existing
        proc = spawn(self.argv, self.env, self.cwd, self.log_file, self.pid_file, new_tag(self.run_dir, self.name))
        return proc.pid

    def stop(self, timeout_s: float = 30.0) -> bool:
        """End the whole tree (SIGTERM, wait, SIGKILL), leader first. Returns True if any
        of it had been running."""
        record = self.record()
        if record is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        ran = bool(record.members())
        if record.leader_alive():
            _signal_group(record.pgid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and record.leader_alive():
                time.sleep(0.1)
        end_tree(record, timeout_s=min(timeout_s, 10.0))
        self.pid_file.unlink(missing_ok=True)
        return ran

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _alive(pid: int) -> bool:
    try:
        waited, _status = os.waitpid(pid, os.WNOHANG)  # reap our own exited children
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its new parent) is not running
        state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def spawn(
    argv: list[str],
    env: dict[str, str],
    cwd: str | Path | None,
    log_file: Path,
    pid_file: Path,
    tag: str,
) -> subprocess.Popen:
    """Start a process in its own session, tagged `tag` (inherited by its descendants),
    output appended to `log_file`, its record written to `pid_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            env={**env, TAG_VAR: tag},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ProcessRecord(proc.pid, proc.pid, start_time(proc.pid), tag).write(pid_file)
    return proc


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal a process's whole group (it was started in its own session), else the process."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        _signal(pid, sig)
