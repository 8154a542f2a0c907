"""Background processes with pid files and log files: start, check, stop whole process trees.

Every process started here runs in its own session (its session and process group ids
are its pid) and carries a tag in its environment,
`ONBOARDING_PROCESS_TAG=<stack id>/<name>/<nonce>`. What belongs to a service's tree is
found three ways, because each alone misses something:

- its session: the uvicorn workers of an api-server and the LocalExecutor workers of a
  scheduler stay in the leader's session, also after the leader died (the kernel never
  hands out a pid still in use as a session id, so the id cannot be someone else's);
- its tag: inherited by every descendant, also one that started a session of its own;
  but a process that sets its title (setproctitle, as Airflow's and rq's do) overwrites
  the memory /proc/<pid>/environ shows, so it cannot be found by its tag;
- the supervisor's snapshot of each leader's descendants (pid and start time), taken
  every loop, for what left the session and set its title.

The pid file records the leader's pid, process group, start time (clock ticks since boot,
/proc/<pid>/stat) and tag, so a leader's pid that the kernel has since given to another
process is never signalled: its start time differs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
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

    def members(self, seen: Iterable[tuple[int, int | None]] = ()) -> list[int]:
        """Every live process of the tree: the leader (if it is still the same process),
        its session, every process carrying the tag, and those of `seen` (pid, start time)
        that still run as the same process."""
        found = set(tagged(self.tag))
        reused = _alive(self.pid) and self.start is not None and start_time(self.pid) not in (self.start, None)
        if not reused:  # else the session id is another process's now
            found.update(pid for pid, stat in _stats().items() if stat.session == self.pgid and stat.state != "Z")
        found.update(pid for pid, start in seen if start is not None and start_time(pid) == start and _alive(pid))
        found.discard(os.getpid())
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


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/<pid>/stat this module reads."""

    state: str
    ppid: int
    pgrp: int
    session: int
    start: int


def _stat(pid: int) -> Stat | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[-1].split()  # after the command, which may hold spaces
    try:  # fields[0] is field 3 (state); field 22 is the start time
        return Stat(fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def _stats() -> dict[int, Stat]:
    found = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None:
            found[pid] = stat
    return found


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: clock ticks from boot to the process's start."""
    stat = _stat(pid)
    return stat.start if stat is not None else None


def descendants(roots: Iterable[int]) -> dict[int, list[tuple[int, int]]]:
    """For each root pid, its live descendants as (pid, start time), from one pass over /proc."""
    stats = _stats()
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    out: dict[int, list[tuple[int, int]]] = {}
    for root in roots:
        found, todo = [], list(children.get(root, []))
        while todo:
            pid = todo.pop()
            found.append((pid, stats[pid].start))
            todo.extend(children.get(pid, []))
        out[root] = found
    return out


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


def end_tree(record: ProcessRecord, timeout_s: float, seen: Iterable[tuple[int, int | None]] = ()) -> list[int]:
    """End a whole tree: SIGTERM, wait, SIGKILL; returns the pids that needed SIGKILL."""
    members = record.members(seen)
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

    def stop(self, timeout_s: float = 30.0, seen: Iterable[tuple[int, int | None]] = ()) -> bool:
        """End the whole tree (SIGTERM, wait, SIGKILL), leader first; `seen`: descendants
        (pid, start time) known from elsewhere (the supervisor's state). Returns True if
        any of it had been running."""
        record = self.record()
        if record is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        seen = list(seen)
        ran = bool(record.members(seen))
        if record.leader_alive():
            _signal_group(record.pgid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and record.leader_alive():
                time.sleep(0.1)
        end_tree(record, timeout_s=min(timeout_s, 10.0), seen=seen)
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
    stat = _stat(pid)  # a zombie (exited, not yet reaped by its new parent) is not running
    return stat is None or stat.state != "Z"


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
