"""The fault matrix: the whole local stack under steady load, one component killed per cell.

Shared by the benchmark (`benchmarks/faults.py`, every cell, a table and a plot) and the CI
subset (`tests/e2e/test_fault_matrix.py`). What a cell does:

1. wait until every part of the stack is healthy (`Probe`);
2. label the signups the load publishes from now on with the cell's name, wait `pre_s`;
3. inject the fault: kill -9 one service's process (its pid from the supervisor's
   `state.json`), or what a `Fault` does for the other kinds of cell (the benchmark's
   archive run and PostgreSQL restart);
4. poll until every part is healthy again and `onboarding-stack status` exits 0: the
   recovery time;
5. keep the load on until `fault_s` after the fault (or the recovery, if later), then
   wait until the cell's signups are decided.

At the end `Tally` reads the decisions and dead-letter streams and the realtime metadata
database, and `summarize` gives each cell's figures: signups lost (published, neither
decided nor dead-lettered), duplicate DAG runs and decisions per event id, the recovery
time and the worst signup -> decision latency (publish -> the decision's `published_at`).

The stack is `onboarding-stack up` in a subprocess with its own ONBOARDING_HOME, ports and
Redis (a REDIS_URL where none answers, so the supervisor starts its own `redis-server` with
AOF), exactly what an operator runs; `FaultStack.down` also ends, and reports, what `down`
left behind (`FaultStack.leftovers`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from onboarding.keys import ONBOARDING_DAG_ID, RUN_ID_PREFIX
from onboarding.publisher import publish_signup
from onboarding.settings import StreamSettings
from risk.samples import new_signup
from testkit.services import free_port

ROOT = Path(__file__).resolve().parent.parent
PORT_SETTINGS = (
    "REALTIME_API_PORT",
    "REALTIME_SCHEDULER_HEALTH_PORT",
    "BATCH_API_PORT",
    "BATCH_SCHEDULER_HEALTH_PORT",
    "LISTENER_METRICS_PORT",  # listener i serves on this port + i: see stack_env
    "ARCHIVE_METRICS_PORT",
    "SLA_PORT",
    "REVIEW_PORT",
    "REALTIME_LOG_SERVER_PORT",
    "BATCH_LOG_SERVER_PORT",
)
# Settings the caller's environment may carry that would point the stack at someone else's.
OWN_SETTINGS = (
    "SIGNUPS_STREAM",
    "DECISIONS_STREAM",
    "DEAD_LETTER_STREAM",
    "ARCHIVE_QUEUE",
    "ARCHIVE_DIR",
    "ONBOARDING_BATCH_METADATA_DB",
    "ARCHIVE_REALTIME_DB_URL",
    "ARCHIVE_BATCH_DB_URL",
)


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the cells ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One fault: `kind` is `kill` (kill -9 the service's process), `archive` (kill -9 the rq
    worker and its work horse while an archive job runs) or `postgres` (restart the private
    PostgreSQL cluster, immediate mode)."""

    name: str
    service: str | None
    kind: str = "kill"


def all_cells(listeners: int = 2, postgres: bool = False) -> list[Cell]:
    """Every cell, in the order the matrix runs them (the stack's start order, then Redis and
    the database, whose faults touch everything)."""
    cells = [Cell(f"listener-{i}", f"listener-{i}") for i in range(1, listeners + 1)]
    cells += [
        Cell(name, name)
        for name in (
            "realtime-api-server",
            "realtime-scheduler",
            "realtime-dag-processor",
            "batch-api-server",
            "batch-scheduler",
            "batch-dag-processor",
        )
    ]
    cells += [
        Cell("rq-worker (archive run)", "rq-worker", "archive"),
        Cell("rq-cron", "rq-cron"),
        Cell("archive-metrics", "archive-metrics"),
        Cell("sla", "sla"),
        Cell("redis", "redis"),
    ]
    if postgres:
        cells.append(Cell("postgres (restart)", None, "postgres"))
    return cells


def select_cells(names: str | None, listeners: int = 2, postgres: bool = False) -> list[Cell]:
    """The cells named in a comma-separated list (a cell's name, or its service's), in matrix order."""
    cells = all_cells(listeners, postgres)
    if not names:
        return cells
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {c.name: c for c in cells} | {c.service: c for c in cells if c.service}
    known |= {c.kind: c for c in cells if c.kind != "kill"}  # "archive", "postgres"
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown cell(s) {', '.join(unknown)}; known: {', '.join(c.name for c in cells)}")
    chosen = {known[n].name for n in wanted}
    return [c for c in cells if c.name in chosen]


# -- the stack --------------------------------------------------------------------------------


def stack_env(
    home: Path, model_dir: Path, metadata_db: str = "sqlite", listeners: int = 2, **extra: str
) -> dict[str, str]:
    """The environment of a stack of its own: home, ports, Redis (none answers at its URL, so
    the supervisor starts one with AOF) and metadata database (`sqlite` or a URL)."""
    env = {k: v for k, v in os.environ.items() if k not in PORT_SETTINGS}
    for key in (
        "SIGNUPS_STREAM",
        "DECISIONS_STREAM",
        "DEAD_LETTER_STREAM",
        "ARCHIVE_QUEUE",
        "ONBOARDING_BATCH_METADATA_DB",
    ):
        env.pop(key, None)
    env |= {key: str(free_port()) for key in PORT_SETTINGS}
    # The listeners' ports are consecutive: find a free run of them.
    env["LISTENER_METRICS_PORT"] = str(_free_run(listeners))
    env |= {
        "ONBOARDING_HOME": str(home),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "RISK_MODEL_DIR": str(model_dir),
        "ONBOARDING_METADATA_DB": metadata_db,
        "ONBOARDING_LISTENERS": str(listeners),
        **extra,
    }
    return env


def _free_run(count: int) -> int:
    import socket

    for _ in range(50):
        first = free_port()
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


class FaultStack:
    """`onboarding-stack` with an environment of its own, and what the matrix needs of it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.home = Path(env["ONBOARDING_HOME"])
        self.run_dir = self.home / "run"
        self.streams = StreamSettings.from_env(env)
        self.redis = redis.Redis.from_url(self.streams.redis_url, socket_timeout=5, socket_connect_timeout=2)
        self.leaders: dict[int, int | None] = {}  # every service leader seen: pid -> start time

    # the operator's commands
    def cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stack.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def up(self, timeout_s: float = 1200) -> None:
        result = self.cli("up", timeout_s=timeout_s)
        if result.returncode != 0:
            raise RuntimeError(f"onboarding-stack up failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def status_code(self) -> int:
        try:
            return self.cli("status", timeout_s=60).returncode
        except subprocess.TimeoutExpired:
            return -1

    def down(self) -> list[str]:
        """`onboarding-stack down`, then end whatever of the stack is still running; returns
        a description of each leftover (empty when `down` stopped everything)."""
        self.remember_leaders()
        try:
            result = self.cli("down", timeout_s=600)
            if result.returncode != 0:
                log(f"onboarding-stack down exited {result.returncode}: {result.stderr.strip()[-500:]}")
        except subprocess.TimeoutExpired:
            log("onboarding-stack down did not return within 600 s")
        time.sleep(1)
        left = self.leftovers()
        described = [f"{pid} {_cmdline(pid)[:100]}" for pid in left]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return described

    def leftovers(self) -> list[int]:
        """Live processes of this stack, the caller excluded: those whose environment names its
        home (every process the stack starts inherits ONBOARDING_HOME), and every member of a
        session one of its services led. The session is needed: a process that sets its title
        (Airflow's api_server, LocalExecutor workers and serve-logs, rq's worker and work
        horse, redis-server) overwrites what /proc/<pid>/environ shows; every service starts
        its own session, and its descendants stay in it."""
        self.remember_leaders()
        marker = f"ONBOARDING_HOME={self.home}".encode()
        found = []
        for pid in _pids():
            stat = _stat(pid)
            if stat is None or stat.state == "Z":
                continue
            if self._leader_ours(stat.session) or marker in _environ(pid).split(b"\0"):
                found.append(pid)
        return found

    def remember_leaders(self) -> None:
        """Note each service leader's pid and start time: from state.json, and every pid the
        supervisor's log says it started (a leader may have come and gone between polls)."""
        state = self.state()
        pids = [state.get("supervisor_pid")] + [s.get("pid") for s in state.get("services", {}).values()]
        with contextlib.suppress(OSError):
            for line in (self.home / "logs" / "supervisor.log").read_text(errors="replace").splitlines():
                if "started " in line and "(pid " in line:
                    with contextlib.suppress(ValueError):
                        pids.append(int(line.split("(pid ", 1)[1].split(")", 1)[0]))
        for pid in pids:
            if pid and int(pid) not in self.leaders:
                stat = _stat(int(pid))
                self.leaders[int(pid)] = stat.start if stat else None

    def _leader_ours(self, session: int) -> bool:
        """Whether a session is one a service of this stack led. The kernel gives no new
        process a pid that is still some live session's id, so a session whose leader is gone
        is still the one we saw; a live leader must be the process we noted."""
        if session not in self.leaders or session == os.getsid(0):
            return False
        leader = _stat(session)
        if leader is None or leader.state == "Z":
            return True
        return self.leaders[session] == leader.start  # None: it was gone when noted, so this one is another

    def session(self, pid: int) -> list[int]:
        """The live members of the session `pid` leads (a service and what it started)."""
        return [p for p in _pids() if (stat := _stat(p)) is not None and stat.session == pid and stat.state != "Z"]

    # the supervisor's view
    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.run_dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def plan(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "plan.json").read_text())

    def pid(self, service: str) -> int | None:
        pid = self.state().get("services", {}).get(service, {}).get("pid")
        return int(pid) if pid else None

    def service_env(self, service: str) -> dict[str, str]:
        return next(s["env"] for s in self.plan()["services"] if s["name"] == service)

    @property
    def realtime_db_url(self) -> str:
        return self.service_env("realtime-scheduler")["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


@dataclass(frozen=True)
class _Stat:
    state: str
    session: int
    start: int  # clock ticks after boot


def _stat(pid: int) -> _Stat | None:
    """Fields 3, 6 and 22 of /proc/<pid>/stat (after the command, which may hold spaces)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        return _Stat(fields[0], int(fields[3]), int(fields[19]))
    except (OSError, IndexError, ValueError):
        return None


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _pids() -> Iterator[int]:
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            yield int(entry)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    stat = _stat(pid)
    return stat is not None and stat.state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


# -- health -----------------------------------------------------------------------------------


def seed_old_runs(stack: FaultStack, count: int, prefix: str) -> list[str]:
    """`count` finished onboarding runs from 8 days ago (with their task instances, XComs, log
    rows, ...) in the stack's realtime metadata database, older than the archive's cut-off;
    returns their run ids. In a process of its own, with the instance's Airflow settings
    (`testkit.seed` imports Airflow's models)."""
    code = (
        "import sys; from datetime import UTC, datetime, timedelta; import sqlalchemy as sa;"
        "from testkit.seed import seed_runs;"
        "runs = seed_runs(sa.create_engine(sys.argv[1]), int(sys.argv[2]),"
        " datetime.now(UTC) - timedelta(days=8), step=timedelta(seconds=30), prefix=sys.argv[3]);"
        "print('\\n'.join(r.run_id for r in runs))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, stack.realtime_db_url, str(count), prefix],
        env={**stack.service_env("realtime-scheduler"), "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        raise RuntimeError(f"seeding old runs failed:\n{result.stderr[-3000:]}")
    return [line for line in result.stdout.split() if line.startswith(f"signup__{prefix}")]


class Probe:
    """Is every part healthy? The supervisor says each service is `up`, its process runs (not
    a zombie), and its health check answers; an Airflow api-server's health also reports its
    metadata database and scheduler healthy; and `onboarding-stack status` exits 0."""

    def __init__(self, stack: FaultStack, checks: list[Callable[[], str | None]] | None = None) -> None:
        self.stack = stack
        self.checks = checks or []
        self.services = {s["name"]: s["health"] for s in stack.plan()["services"]}
        # Generous: an api-server busy with a backlog on SQLite takes seconds to answer.
        self.http = httpx.Client(timeout=10)

    def unhealthy(self) -> list[str]:
        self.stack.remember_leaders()
        state = self.stack.state()
        problems = []
        if not _alive(state.get("supervisor_pid")):
            problems.append("supervisor: not running")
        services = state.get("services", {})
        for name, health in self.services.items():
            service = services.get(name, {})
            if service.get("state") != "up":
                problems.append(f"{name}: {service.get('state', 'unknown')}")
            elif not _alive(service.get("pid")):
                problems.append(f"{name}: exited")
            elif not self._answers(health):
                problems.append(f"{name}: health check fails")
        problems += [p for check in self.checks if (p := check())]
        return problems

    def _answers(self, health: str) -> bool:
        kind, _, target = health.partition(":")
        try:
            if kind == "http":
                response = self.http.get(target)
                if not response.is_success:
                    return False
                if target.endswith("/monitor/health"):
                    body = response.json()
                    return all(body.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler"))
                return True
            if kind == "redis":
                return bool(redis.Redis.from_url(target, socket_connect_timeout=1, socket_timeout=2).ping())
        except (httpx.HTTPError, redis.RedisError, ValueError):
            return False
        return True

    def wait_healthy(self, timeout_s: float, since: float | None = None) -> tuple[float | None, list[str], int]:
        """Poll until healthy and `status` exits 0. Returns (seconds since `since` when the
        parts were healthy, or None on time-out; the last problems seen; status's exit code)."""
        since = time.monotonic() if since is None else since
        deadline = since + timeout_s
        problems: list[str] = []
        code = -1
        last_report = time.monotonic()
        shown: list[str] = []
        while time.monotonic() < deadline:
            problems = self.unhealthy()
            if not problems:
                healthy_at = time.monotonic()
                code = self.stack.status_code()
                if code == 0:
                    return healthy_at - since, [], code
                problems = [f"onboarding-stack status exits {code}"]
            if problems != shown:  # what is still wrong, each time it changes
                shown = problems
                last_report = time.monotonic()
                log(f"    {time.monotonic() - since:.1f} s: {'; '.join(problems)}")
            elif time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                log(f"    waiting for health ({time.monotonic() - since:.0f} s): {'; '.join(problems)}")
            time.sleep(0.5)
        return None, problems, code

    def close(self) -> None:
        self.http.close()


# -- load -------------------------------------------------------------------------------------


@dataclass
class Sample:
    event_id: str
    label: str
    published: float  # wall clock, when Redis accepted the signup
    first_try: float


class Load(threading.Thread):
    """Publishes sample signups at `rate` per second on a fixed schedule (an open loop: a
    slow or broken stack does not slow the app down), each labelled with the current cell.
    While Redis refuses, a signup is retried until it is accepted, as an app would."""

    def __init__(self, stack: FaultStack, rate: float) -> None:
        super().__init__(daemon=True, name="fault-load")
        self.client = redis.Redis.from_url(stack.streams.redis_url, socket_timeout=5, socket_connect_timeout=2)
        self.stream = stack.streams.signups_stream
        self.rate = rate
        self.label = "between"
        self.samples: list[Sample] = []
        self.publish_errors = 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        t0 = time.monotonic()
        i = 0
        while not self.stopping.is_set():
            delay = t0 + i / self.rate - time.monotonic()
            if delay > 0 and self.stopping.wait(delay):
                return
            event = new_signup(user_id=f"fault-user-{i}")
            label, first_try = self.label, time.time()
            while not self.stopping.is_set():
                try:
                    publish_signup(self.client, self.stream, event)
                    break
                except redis.RedisError:
                    self.publish_errors += 1
                    self.stopping.wait(0.2)
            else:
                return
            with self.lock:
                self.samples.append(Sample(event["event_id"], label, time.time(), first_try))
            i += 1

    def of(self, label: str) -> list[Sample]:
        with self.lock:
            return [s for s in self.samples if s.label == label]

    def all(self) -> list[Sample]:
        with self.lock:
            return list(self.samples)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


# -- counting ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """Per event id: its decisions (the `published_at` of the first), its dead letters, its
    DAG runs. `update` reads what the streams gained since the last call."""

    decisions: Counter[str] = field(default_factory=Counter)
    published_at: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    dead: Counter[str] = field(default_factory=Counter)
    runs: Counter[str] = field(default_factory=Counter)
    read_up_to: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, stack: FaultStack, with_runs: bool = True) -> Tally:
        tally = cls().update(stack)
        if with_runs:
            tally.runs = runs_per_event(stack.realtime_db_url)
        return tally

    def update(self, stack: FaultStack) -> Tally:
        decisions, dead = stack.streams.decisions_stream, stack.streams.dead_letter_stream
        for _entry, fields in self._new(stack.redis, decisions):
            data = json.loads(fields[b"payload"])
            event_id = data["event_id"]
            self.decisions[event_id] += 1
            if event_id not in self.published_at:
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    published = data["timestamps"]["published_at"]
                    self.published_at[event_id] = datetime.fromisoformat(published).timestamp()
                if data.get("error"):
                    self.errors[event_id] = str(data["error"])[:200]
        for _entry, fields in self._new(stack.redis, dead):
            with contextlib.suppress(KeyError, ValueError, TypeError):
                self.dead[json.loads(fields[b"original.payload"])["event_id"]] += 1
        return self

    def _new(self, client: redis.Redis, stream: str) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
        while True:
            after = self.read_up_to.get(stream)
            page = client.xrange(stream, min=f"({after}" if after else "-", count=1000)
            if not page:
                return
            yield from page
            self.read_up_to[stream] = page[-1][0].decode()

    def settled(self, event_id: str) -> bool:
        return self.decisions[event_id] > 0 or self.dead[event_id] > 0


def runs_per_event(database_url: str) -> Counter[str]:
    """The onboarding DAG's runs per signup event id, read from the realtime metadata database
    (the event id of the run's `conf`; the run id's where there is none)."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT run_id, conf FROM dag_run WHERE dag_id = :dag"), {"dag": ONBOARDING_DAG_ID}
            ).all()
    finally:
        engine.dispose()
    counts: Counter[str] = Counter()
    for run_id, conf in rows:
        if isinstance(conf, bytes | str):
            with contextlib.suppress(ValueError):
                conf = json.loads(conf)
        event_id = conf.get("event_id") if isinstance(conf, dict) else None
        counts[event_id or str(run_id).removeprefix(RUN_ID_PREFIX)] += 1
    return counts


def retry(fn: Callable[[], Any], timeout_s: float = 60, what: str = "", why: Callable[[], str] | None = None) -> Any:
    """Call `fn` until it does not raise a Redis or database error (a cell may have just
    killed what it reads); `why` says what might be wrong, every 10 s."""
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:  # redis, sqlalchemy, psycopg2 errors alike
            if time.monotonic() > deadline:
                raise
            if attempt % 10 == 0:
                log(f"    {what or fn.__name__}: {type(err).__name__}; retrying{f' ({why()})' if why else ''}")
            attempt += 1
            time.sleep(1)


# -- the matrix -------------------------------------------------------------------------------


@dataclass
class CellRun:
    """What happened in one cell while it ran; the signup figures come from `summarize`."""

    cell: Cell
    fault_at: float = 0.0  # wall clock
    window_end: float = 0.0
    killed_pid: int | None = None
    recovery_s: float | None = None
    status_exit: int | None = None
    unhealthy_at_end: list[str] = field(default_factory=list)
    restarted_pid: int | None = None
    relapses: list[str] = field(default_factory=list)  # unhealthy again after the recovery
    details: dict[str, Any] = field(default_factory=dict)  # what a special fault found
    note: str = ""


class Fault:
    """A fault other than kill -9 of one service's leader (the benchmark's archive and
    PostgreSQL cells): what to do right before the fault (`prepare`), the fault itself, and
    after the window. `problem` names a health problem the stack's own checks cannot see."""

    def prepare(self, matrix: FaultMatrix, run: CellRun, tag: str) -> None:
        return None

    def inject(self, matrix: FaultMatrix, run: CellRun, tag: str) -> None:
        raise NotImplementedError

    def after_window(self, matrix: FaultMatrix, run: CellRun, tag: str) -> None:
        return None

    def problem(self) -> str | None:
        return None


@dataclass
class MatrixSettings:
    rate: float = 1.5
    fault_s: float = 30.0  # the fault window: load on for this long after the fault
    pre_s: float = 5.0  # signups published this long before the fault belong to the cell
    recovery_timeout_s: float = 240.0
    drain_timeout_s: float = 240.0


class FaultMatrix:
    """Runs cells one after the other on one stack under one continuous load. `faults` maps
    a cell kind other than `kill` to what injects it."""

    def __init__(self, stack: FaultStack, settings: MatrixSettings, faults: dict[str, Fault] | None = None) -> None:
        self.stack = stack
        self.settings = settings
        self.faults = faults or {}
        self.probe = Probe(stack, [f.problem for f in self.faults.values()])
        self.load = Load(stack, settings.rate)
        self.runs: list[CellRun] = []
        self.started_at = 0.0
        self.tally = Tally()  # read as the run goes, for progress

    def warm_up(self, seconds: float) -> None:
        """Start the load; after `seconds`, wait until those first signups are decided (the
        first runs after a start are slow: imports, caches)."""
        self.load.label = "warm-up"
        self.started_at = time.time()
        self.load.start()
        log(f"load: {self.settings.rate} signups/s; warming up for {seconds:.0f} s")
        time.sleep(seconds)
        self.load.label = "between"
        self._drain(self.load.of("warm-up"), self.settings.drain_timeout_s, "[warm-up]")

    def run_cell(self, cell: Cell, index: int = 0, total: int = 0) -> CellRun:
        s = self.settings
        run = CellRun(cell)
        tag = f"[{index}/{total} {cell.name}]" if total else f"[{cell.name}]"
        seconds, problems, _code = self.probe.wait_healthy(s.recovery_timeout_s)
        if seconds is None:
            run.note = f"not healthy before the fault: {'; '.join(problems)}"
            log(f"{tag} {run.note}")
        fault = self.faults.get(cell.kind)
        if fault is None and cell.kind != "kill":
            raise ValueError(f"cell {cell.name}: no fault injects kind {cell.kind!r}")
        self.load.label = cell.name
        time.sleep(s.pre_s)
        if fault is not None:
            fault.prepare(self, run, tag)  # e.g. start what the fault must hit in the middle
        elif cell.service == "realtime-scheduler":
            # While a task runs: the worst moment for it, and the same one every run.
            run.details["tasks_running_at_kill"] = self._running_tasks(wait_s=15)
        started = time.monotonic()
        run.fault_at = time.time()
        if fault is not None:
            fault.inject(self, run, tag)
        else:
            assert cell.service is not None
            run.killed_pid = self.stack.pid(cell.service)
            if run.killed_pid is None:
                run.note = f"{cell.service} had no running process to kill"
                log(f"{tag} {run.note}")
            else:
                log(f"{tag} kill -9 {cell.service} (pid {run.killed_pid})")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(run.killed_pid, signal.SIGKILL)
        self._await_recovery(run, started, tag)
        if cell.service:
            run.restarted_pid = self.stack.pid(cell.service)
        # The rest of the window: a part that falls over again (a consequence of the fault)
        # counts, and the recovery time becomes the time it was healthy again.
        end = started + max(s.fault_s, (run.recovery_s or 0) + 5)
        while run.recovery_s is not None and time.monotonic() < end:
            problems = self.probe.unhealthy()
            if problems:
                run.relapses.append(f"{time.monotonic() - started:.0f} s: {'; '.join(problems)}")
                log(f"{tag} unhealthy again: {'; '.join(problems)}")
                self._await_recovery(run, started, tag)
                end = max(end, started + (run.recovery_s or 0) + 5)
            time.sleep(1)
        if time.monotonic() < end:
            time.sleep(end - time.monotonic())
        self.load.label = "between"
        run.window_end = time.time()
        if fault is not None:
            fault.after_window(self, run, tag)
        self._drain(self.load.of(cell.name), s.drain_timeout_s, tag)
        self.runs.append(run)
        return run

    def _running_tasks(self, wait_s: float) -> int:
        """Onboarding task instances running now; waits up to `wait_s` for one."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.stack.realtime_db_url)
        query = sa.text("SELECT count(*) FROM task_instance WHERE dag_id = :dag AND state = 'running'")
        deadline = time.monotonic() + wait_s
        try:
            while True:
                with engine.connect() as conn:
                    running = int(conn.execute(query, {"dag": ONBOARDING_DAG_ID}).scalar() or 0)
                if running or time.monotonic() > deadline:
                    return running
                time.sleep(0.05)
        finally:
            engine.dispose()

    def _await_recovery(self, run: CellRun, started: float, tag: str) -> None:
        timeout_s = self.settings.recovery_timeout_s
        run.recovery_s, run.unhealthy_at_end, run.status_exit = self.probe.wait_healthy(timeout_s, started)
        if run.recovery_s is None:
            log(f"{tag} NOT healthy within {timeout_s:.0f} s: {'; '.join(run.unhealthy_at_end)}")
        else:
            log(f"{tag} every part healthy again after {run.recovery_s:.1f} s")

    def _drain(self, samples: list[Sample], timeout_s: float, tag: str) -> None:
        deadline = time.monotonic() + timeout_s
        last_report = time.monotonic()
        while True:
            tally = retry(lambda: self.tally.update(self.stack), what="reading the streams", why=self.services_summary)
            open_ = [s for s in samples if not tally.settled(s.event_id)]
            now = time.monotonic()
            if not open_:
                log(f"{tag} all {len(samples)} signups of the cell decided")
                return
            if now > deadline:
                log(f"{tag} {len(open_)} of {len(samples)} signups still undecided after {timeout_s:.0f} s")
                return
            if now - last_report > 10:
                last_report = now
                log(f"{tag} {len(samples) - len(open_)}/{len(samples)} signups decided")
            time.sleep(1)

    def services_summary(self) -> str:
        """What the supervisor says of the services that are not up (for a log line)."""
        state = self.stack.state()
        supervisor = "running" if _alive(state.get("supervisor_pid")) else "NOT running"
        down = {n: s.get("state") for n, s in state.get("services", {}).items() if s.get("state") != "up"}
        return f"supervisor {supervisor}, services not up: {down or 'none'}"

    def finish(self) -> Tally:
        """Stop the load, wait for every signup's decision, and count. If Redis or the
        database stays away, what was read as the run went is the tally (runs uncounted)."""
        self.load.stop()
        try:
            self._drain(self.load.all(), self.settings.drain_timeout_s, "[end]")
            time.sleep(3)  # a duplicate would show up right behind
            return retry(lambda: Tally.read(self.stack), what="the final tally", why=self.services_summary)
        except Exception as err:  # the figures so far are still worth reporting
            log(f"[end] the final tally failed ({type(err).__name__}: {err}); reporting what was read")
            return self.tally


def summarize(matrix: FaultMatrix, tally: Tally) -> list[dict[str, Any]]:
    """One row per cell (and one for the signups published between cells). A cell's
    signups are those published from `pre_s` before its fault to the end of its window,
    and those published earlier, between cells, that were still undecided when it hit."""
    cells: dict[str, list[Sample]] = {run.cell.name: matrix.load.of(run.cell.name) for run in matrix.runs}
    between = []
    faults = sorted((run.fault_at, run.cell.name) for run in matrix.runs)
    for sample in matrix.load.of("between"):
        hit = next((name for at, name in faults if at > sample.published), None)
        decided_at = tally.published_at.get(sample.event_id, float("inf"))
        if hit is not None and decided_at > next(at for at, name in faults if name == hit):
            cells[hit].append(sample)
        else:
            between.append(sample)
    rows = [figures(run.cell.name, cells[run.cell.name], tally) | _cell_fields(run) for run in matrix.runs]
    rows.append(figures("between cells", between, tally))
    return rows


def _cell_fields(run: CellRun) -> dict[str, Any]:
    return {
        "kind": run.cell.kind,
        "service": run.cell.service,
        "recovery_s": None if run.recovery_s is None else round(run.recovery_s, 1),
        "status_exit": run.status_exit,
        "unhealthy_at_end": run.unhealthy_at_end,
        "relapses": run.relapses,
        "killed_pid": run.killed_pid,
        "restarted_pid": run.restarted_pid,
        "fault_at": run.fault_at,
        "window_end": run.window_end,
        "details": run.details,
        "note": run.note,
    }


def figures(name: str, samples: list[Sample], tally: Tally) -> dict[str, Any]:
    latencies = [tally.published_at[s.event_id] - s.published for s in samples if s.event_id in tally.published_at]
    undecided = [s.event_id for s in samples if not tally.settled(s.event_id)]
    return {
        "cell": name,
        "published": len(samples),
        "decided": sum(1 for s in samples if tally.decisions[s.event_id] > 0),
        "dead_lettered": sum(1 for s in samples if tally.dead[s.event_id] > 0),
        "lost": len(undecided),
        "lost_ids": undecided[:20],
        "duplicate_runs": sum(max(0, tally.runs[s.event_id] - 1) for s in samples),
        "duplicate_decisions": sum(max(0, tally.decisions[s.event_id] - 1) for s in samples),
        "failed_pipeline_reviews": sum(1 for s in samples if s.event_id in tally.errors),
        "worst_latency_s": round(max(latencies), 2) if latencies else None,
        "p50_latency_s": round(statistics.median(latencies), 2) if latencies else None,
        "latencies": [
            [round(s.published, 3), round(tally.published_at[s.event_id] - s.published, 3)]
            for s in samples
            if s.event_id in tally.published_at
        ],
    }
