"""A small process supervisor for the local stack: one parent process that starts the
services in order, waits for each to be healthy, restarts a crashed one with backoff and
stops them all (SIGTERM, wait, SIGKILL) in reverse order when it receives SIGTERM.

`onboarding-stack up` writes the service table (a JSON plan) and starts
`python -m stack.supervisor PLAN` in the background; the supervisor writes each
service's pid file (`run_dir/<name>.pid`: pid, process group, start time and tag, as
`stack.processes.ProcessRecord` reads it), its log (`log_dir/<name>.log`, rotated at
`log_max_bytes`) and the table's state (`state.json`) that `status` reads.

A service is its whole process tree, not only its leader: when a leader exits for any
reason, what is left of its tree (an api-server's uvicorn workers, a scheduler's
LocalExecutor workers and their task processes) is ended (SIGTERM, a grace period,
SIGKILL) before the restart, so a restarted api-server never finds its port held by
the workers of the one that died.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import redis

from onboarding import intake
from onboarding.backoff import Backoff
from onboarding.functions import ensure_loaded
from onboarding.logs import configure_logging
from onboarding.redis_clients import Role, connect
from stack.processes import (
    ProcessRecord,
    descendants,
    end_processes,
    end_tree,
    new_tag,
    signal_all,
    spawn,
    start_time,
)

logger = logging.getLogger("stack.supervisor")

RESTART_BACKOFF = Backoff(initial_s=1.0, max_s=30.0)
REAP_GRACE_S = 10.0  # what is left of a dead leader's tree gets this long after SIGTERM
STABLE_AFTER_S = 60.0  # a service up this long has its backoff reset


@dataclass(frozen=True)
class Service:
    """One supervised command and how to tell that it is healthy.

    health: `http:<url>` (answers 2xx), `redis:<url>` (answers PING), `redis-functions:<url>`
    (answers PING and has the service's Redis Functions, loaded now if missing: the local
    stack's Redis is ready before any component starts) or `alive` (still running after
    `alive_s`). `ready_timeout_s` bounds the wait in the ordered start.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    health: str = "alive"
    ready_timeout_s: float = 120.0
    alive_s: float = 3.0
    stop_timeout_s: float = 30.0
    cwd: str | None = None

    def healthy(self) -> bool:
        kind, _, target = self.health.partition(":")
        try:
            if kind == "http":
                return httpx.get(target, timeout=2).is_success
            if kind == "redis":
                return bool(connect(target, Role.PROBE).ping())
            if kind == "redis-functions":
                client = connect(target, Role.PROBE)
                ensure_loaded(client)  # the local stack's user is its administrator
                intake.ensure_loaded(client)  # the per-app intake forwarder's library
                return bool(client.ping())
        except (httpx.HTTPError, redis.RedisError):
            return False
        return True  # `alive`: the caller checks that the process runs


@dataclass(frozen=True)
class Plan:
    services: list[Service]
    run_dir: Path
    log_dir: Path
    log_max_bytes: int = 50 * 1024 * 1024  # a log larger than this is rotated
    log_backups: int = 3  # <name>.log.1 (newest) .. <name>.log.N are kept

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "run_dir": str(self.run_dir),
            "log_dir": str(self.log_dir),
            "log_max_bytes": self.log_max_bytes,
            "log_backups": self.log_backups,
            "services": [asdict(s) for s in self.services],
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the environment
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)

    @classmethod
    def read(cls, path: Path) -> Plan:
        data = json.loads(path.read_text())
        return cls(
            services=[Service(**s) for s in data["services"]],
            run_dir=Path(data["run_dir"]),
            log_dir=Path(data["log_dir"]),
            log_max_bytes=int(data.get("log_max_bytes", cls.log_max_bytes)),
            log_backups=int(data.get("log_backups", cls.log_backups)),
        )


@dataclass
class _Child:
    service: Service
    proc: subprocess.Popen[bytes] | None = None
    state: str = "pending"  # pending, starting, up, reaping, backoff, failed, stopped
    record: ProcessRecord | None = None
    reap_deadline: float = 0.0
    seen: dict[int, int] = field(default_factory=dict)  # descendants seen: pid -> start time
    started_at: float = 0.0
    started_wall: float = 0.0  # time.time() at the start, for `status`' uptime
    restarts: int = 0
    restart_delays: Iterator[float] = field(default_factory=RESTART_BACKOFF.delays)
    retry_at: float = 0.0
    last_exit: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Supervisor:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.children = [_Child(s) for s in plan.services]
        self.stopping = False
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        plan.log_dir.mkdir(parents=True, exist_ok=True)

    # -- processes ---------------------------------------------------------------------

    def _spawn(self, child: _Child) -> None:
        service = child.service
        log_file, pid_file = self.plan.log_dir / f"{service.name}.log", self.plan.run_dir / f"{service.name}.pid"
        child.proc = spawn(
            service.argv, service.env, service.cwd, log_file, pid_file, new_tag(self.plan.run_dir, service.name)
        )
        child.record = ProcessRecord.read(pid_file)
        child.seen = {}
        child.started_at = time.monotonic()
        child.started_wall = time.time()
        child.state = "starting"
        logger.info("started %s (pid %s)", service.name, child.proc.pid)

    def _stop(self, child: _Child) -> None:
        proc, record = child.proc, child.record
        if proc is not None and proc.poll() is None:
            _signal_tree(proc, signal.SIGTERM)
            try:
                proc.wait(child.service.stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0f s; SIGKILL", child.service.name, child.service.stop_timeout_s)
                _signal_tree(proc, signal.SIGKILL)
                proc.wait()
            logger.info("stopped %s", child.service.name)
        if record is not None:  # what the leader left behind: workers, task processes
            leftover = end_tree(
                record, timeout_s=min(child.service.stop_timeout_s, REAP_GRACE_S), seen=child.seen.items()
            )
            if leftover:
                logger.warning("%s: SIGKILLed %d process(es) left after it stopped", child.service.name, len(leftover))
        (self.plan.run_dir / f"{child.service.name}.pid").unlink(missing_ok=True)
        if proc is not None and child.state != "failed":  # a failed or never started one says so
            child.state = "stopped"

    def _running(self, child: _Child) -> bool:
        return child.proc is not None and child.proc.poll() is None

    def _ready(self, child: _Child) -> bool:
        if not self._running(child):
            return False
        if child.service.health == "alive":
            return time.monotonic() - child.started_at >= child.service.alive_s
        return child.service.healthy()

    # -- the table ---------------------------------------------------------------------

    def write_state(self, phase: str) -> None:
        data = {
            "supervisor_pid": os.getpid(),
            "phase": phase,  # starting, running, failed, stopping, stopped
            "updated_at": time.time(),
            "services": {
                c.service.name: {
                    "state": c.state,
                    "pid": c.proc.pid if self._running(c) and c.proc else None,
                    "pgid": c.record.pgid if c.record else None,
                    "start": c.record.start if c.record else None,
                    "tag": c.record.tag if c.record else None,
                    "seen": sorted(c.seen.items()),
                    "restarts": c.restarts,
                    "started_at": c.started_wall if self._running(c) else None,
                    "last_exit": c.last_exit,
                    "health": c.service.health,
                }
                for c in self.children
            },
        }
        tmp = self.plan.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.plan.state_file)

    def start_in_order(self) -> bool:
        """Start each service and wait for it to be healthy before the next one."""
        for child in self.children:
            if self.stopping:
                return False
            self._spawn(child)
            self.write_state("starting")
            deadline = time.monotonic() + child.service.ready_timeout_s
            while not self._ready(child):
                if self.stopping:
                    return False
                if not self._running(child):
                    child.last_exit = child.proc.returncode if child.proc else None
                    child.state = "failed"
                    logger.error("%s exited during start (code %s)", child.service.name, child.last_exit)
                    return False
                if time.monotonic() > deadline:
                    child.state = "failed"
                    logger.error("%s not healthy after %.0f s", child.service.name, child.service.ready_timeout_s)
                    return False
                time.sleep(0.3)
            child.state = "up"
            logger.info("%s is up", child.service.name)
            self.write_state("starting")
        return True

    def watch_once(self) -> None:
        """Restart crashed services, with exponential backoff per service. A crashed
        leader's leftover processes are ended first (state `reaping`)."""
        now = time.monotonic()
        for child in self.children:
            if child.state in ("up", "starting") and not self._running(child):
                child.last_exit = child.proc.returncode if child.proc else None
                if now - child.started_at > STABLE_AFTER_S:
                    child.restart_delays = RESTART_BACKOFF.delays()
                leftover = child.record.members(child.seen.items()) if child.record else []
                logger.warning(
                    "%s exited (code %s); %d process(es) of it left",
                    child.service.name,
                    child.last_exit,
                    len(leftover),
                )
                signal_all(leftover, signal.SIGTERM)  # and SIGKILL at the deadline
                child.state = "reaping"
                child.reap_deadline = now + min(child.service.stop_timeout_s, REAP_GRACE_S)
            if child.state == "reaping":
                leftover = child.record.members(child.seen.items()) if child.record else []
                if leftover and now < child.reap_deadline:
                    continue
                if leftover:
                    logger.warning("%s: SIGKILL to %d leftover process(es)", child.service.name, len(leftover))
                    end_processes(leftover, timeout_s=0)
                delay_s = next(child.restart_delays)
                child.state = "backoff"
                child.retry_at = now + delay_s
                logger.warning("%s: restarting in %.0f s", child.service.name, delay_s)
            elif child.state == "backoff" and now >= child.retry_at:
                child.restarts += 1
                self._spawn(child)
            elif child.state == "starting" and self._ready(child):
                child.state = "up"
                logger.info("%s is up again (restart %d)", child.service.name, child.restarts)

    def restart_requested(self) -> None:
        """Restart each service whose restart an operator asked for (`onboarding-stack restart
        NAME` writes `run_dir/<name>.restart`): SIGTERM to its tree, wait for it to finish
        what it holds (its stop timeout, then SIGKILL), start it again at once, no backoff.
        The others are not touched; the loop watches them again once it is started."""
        for child in self.children:
            request = restart_request(self.plan.run_dir, child.service.name)
            if not request.exists():
                continue
            request.unlink(missing_ok=True)
            if child.state in ("pending", "failed"):
                logger.warning("%s: restart asked while %s; not started", child.service.name, child.state)
                continue
            logger.info("%s: restarting on request (SIGTERM, wait, start)", child.service.name)
            self._stop(child)
            child.restarts += 1
            child.restart_delays = RESTART_BACKOFF.delays()
            self._spawn(child)
            self.write_state("running")

    def snapshot_trees(self) -> None:
        """Remember each running leader's descendants (pid, start time): what left the
        leader's session and set its process title can still be found after a crash."""
        running = {c.proc.pid: c for c in self.children if c.proc is not None and self._running(c)}
        for pid, found in descendants(running).items():
            child = running[pid]
            child.seen = {p: s for p, s in child.seen.items() if start_time(p) == s}
            child.seen.update(found)

    def rotate_logs(self) -> None:
        """Copy-and-truncate each log larger than the cap (the children write with
        O_APPEND, so they go on at the start of the emptied file)."""
        for path in self.plan.log_dir.glob("*.log"):
            try:
                if path.stat().st_size <= self.plan.log_max_bytes:
                    continue
            except OSError:
                continue
            rotate(path, self.plan.log_backups)
            logger.info("rotated %s", path.name)

    def run(self) -> int:
        def on_signal(signum: int, _frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.write_state("starting")
        ok = self.start_in_order()
        if ok:
            self.write_state("running")
            while not self.stopping:
                self.restart_requested()
                self.watch_once()
                self.snapshot_trees()
                self.write_state("running")
                self.rotate_logs()
                time.sleep(0.5)
        self.write_state("stopping" if ok or self.stopping else "failed")
        failed = not ok and not self.stopping
        for child in reversed(self.children):  # the reverse of the start order
            self._stop(child)
        self.write_state("failed" if failed else "stopped")
        return 1 if failed else 0


def _signal_tree(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """The leader's process group (it leads its own session), else the leader alone."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        proc.send_signal(sig)


def rotate(path: Path, backups: int) -> None:
    """<name>.log -> <name>.log.1 -> ... -> <name>.log.<backups> (the oldest is dropped)."""
    for i in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{i + 1}"))
    if backups > 0:
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with path.open("r+b") as fh:
        fh.truncate(0)


def restart_request(run_dir: Path, name: str) -> Path:
    """The file `onboarding-stack restart NAME` writes and the supervisor acts on."""
    return run_dir / f"{name}.restart"


def read_state(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m stack.supervisor PLAN.json", file=sys.stderr)
        return 2
    configure_logging("supervisor")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return Supervisor(Plan.read(Path(args[0]))).run()


if __name__ == "__main__":
    raise SystemExit(main())
