"""Network partitions between the hosts of the realtime service, under a steady signup flow.

    python benchmarks/partitions.py [--cuts listener-redis,listener-api,task-redis,scheduler-db]
                                    [--seconds 30] [--rate 1.5] [--settle 10]
                                    [--recovery-timeout 240] [--sysctl KEY=VALUE]
                                    [--json FILE] [--plot FILE] [--keep]

Every component runs on a host of its own, a Linux network namespace on a private switch
(`testkit.netns`; needs root):

    redis     redis-server with AOF (appendfsync everysec), its own
    pg        PostgreSQL, a throwaway cluster (initdb into a temporary directory): the
              realtime Airflow's metadata database
    api       the realtime Airflow api-server (also the tasks' execution API)
    sched     the scheduler and the dag-processor; the LocalExecutor runs the tasks here,
              so the decision publish goes from this host to Redis
    listener  one listener
    app       the product app: publishes signups (--rate per second, an open loop on a
              fixed schedule), reads the decisions stream, and probes every part's health

After a warm-up, for each cut in turn: --settle seconds of steady flow, then the link is
cut (every packet between the two hosts dropped, both ways; every other link stays up)
for --seconds, then healed; the benchmark waits until every part is healthy and the flow
has caught up (no signup published more than 5 s earlier still waiting), at most
--recovery-timeout, then --settle seconds more, so that each cut starts from a steady
flow. At the end publishing stops and every signup is waited for.

Per cut, over the signups published in its window: lost (neither decided nor
dead-lettered), duplicate DAG runs, duplicate decisions, dead letters, `review` answers
caused by an error; seconds from the heal until every part's health probe is green (and
stays green), until the first signup the fault held back is decided, until the flow has
caught up; and the worst signup -> decision latency of the signups the fault touched
(published before the heal, not decided before the cut). Latency is the app's view, from
publishing to seeing the decision.

Output: a Markdown table on stdout with the command that produced it (progress on
stderr); --json and --plot write the figures and a picture of every signup's latency.
Results and what each cut does: docs/partitions.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import pwd
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis  # noqa: E402

from onboarding import intake, keys  # noqa: E402
from onboarding.functions import ensure_loaded  # noqa: E402
from onboarding.publisher import publish_signup  # noqa: E402
from onboarding.settings import StreamSettings  # noqa: E402
from onboarding.streams import live_entries, payload, text, xread_entries  # noqa: E402
from risk.samples import new_signup  # noqa: E402
from stack.instance import AirflowInstance, InstanceSpec  # noqa: E402
from stack.processes import ManagedProcess  # noqa: E402
from testkit.netns import Network, network  # noqa: E402

HOSTS = ("redis", "pg", "api", "sched", "listener", "app")
REDIS_PORT = 6379
PG_PORT = 5432
API_PORT = 8080
SCHEDULER_HEALTH_PORT = 8974
LISTENER_PORT = 9108
PROBE_TIMEOUT_S = 2.0
PROBE_INTERVAL_S = 0.5
# The flow keeps up when no signup published longer ago than this waits for its decision.
CAUGHT_UP_LAG_S = 5.0
# The parts whose health is probed, and the process behind each.
PARTS = {
    "redis": "redis",
    "postgres": "postgres",
    "api-server": "api-server",
    "scheduler": "scheduler",
    "dag-processor": "dag-processor",
    "listener": "listener",  # readiness (/healthz = /readyz): its loop turns and Redis answers
    "listener-live": "listener",  # liveness (/livez): what a Kubernetes liveness probe asks
}
# Which parts each prober thread answers for.
PROBES = {
    "redis": ("redis",),
    "postgres": ("postgres",),
    "api": ("api-server", "dag-processor"),
    "scheduler": ("scheduler",),
    "listener": ("listener", "listener-live"),
}


@dataclass(frozen=True)
class CutSpec:
    key: str
    a: str
    b: str
    what: str


CUTS = {
    spec.key: spec
    for spec in (
        CutSpec("listener-redis", "listener", "redis", "listener ↔ Redis"),
        CutSpec("listener-api", "listener", "api", "listener ↔ Airflow API"),
        CutSpec("task-redis", "sched", "redis", "task ↔ Redis (decision publish)"),
        CutSpec("scheduler-db", "sched", "pg", "scheduler + dag-processor ↔ metadata DB"),
    )
}

_started = time.monotonic()


def say(message: str) -> None:
    """Progress, on stderr."""
    print(f"[{time.monotonic() - _started:7.1f} s] {message}", file=sys.stderr, flush=True)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s")


def postgres_bin() -> Path:
    """The directory of PostgreSQL's server binaries (initdb, postgres)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not candidates:
        raise FileNotFoundError("PostgreSQL's initdb was not found (PATH, /usr/lib/postgresql/*/bin)")
    return candidates[-1].parent


def missing_tools() -> list[str]:
    """What the partitioned stack needs from the machine and does not find."""
    missing = [tool for tool in ("redis-server", "setpriv") if not shutil.which(tool)]
    try:
        postgres_bin()
        pwd.getpwnam("postgres")
    except (FileNotFoundError, KeyError):
        missing.append("PostgreSQL server binaries and the postgres user")
    return missing


# -- the stack, one component per host ------------------------------------------------------


class PartitionedStack:
    """Redis, PostgreSQL, the realtime Airflow and a listener, each on its own host."""

    def __init__(self, net: Network, work: Path, model_dir: Path, pg_dir: Path) -> None:
        self.net = net
        self.work = work
        self.model_dir = model_dir
        self.pg_dir = pg_dir
        self.run_dir = work / "run"
        self.log_dir = work / "logs"
        self.streams = StreamSettings(redis_url=f"redis://{net.ip('redis')}:{REDIS_PORT}/0")
        self.database_url = f"postgresql+psycopg2://postgres@{net.ip('pg')}:{PG_PORT}/airflow"
        self.api_url = f"http://{net.ip('api')}:{API_PORT}"
        spec = InstanceSpec.from_deploy(
            "realtime", work / "airflow", API_PORT, SCHEDULER_HEALTH_PORT, self.database_url
        )
        self.instance = AirflowInstance(spec, {**os.environ, **self.stream_env})
        self.processes: dict[str, ManagedProcess] = {}

    @property
    def stream_env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.streams.redis_url,
            "SIGNUPS_STREAM": self.streams.signups_stream,
            "DECISIONS_STREAM": self.streams.decisions_stream,
            "DEAD_LETTER_STREAM": self.streams.dead_letter_stream,
            "RISK_MODEL_DIR": str(self.model_dir),
        }

    def airflow_env(self) -> dict[str, str]:
        """The instance's environment with every address on the hosts' network."""
        return {
            **self.instance.env(),
            "AIRFLOW__API__HOST": self.net.ip("api"),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
        }

    def _process(self, host: str, name: str, argv: list[str], env: dict[str, str]) -> ManagedProcess:
        process = self.net.process(host, name, argv, env, self.run_dir, self.log_dir, cwd=ROOT)
        self.processes[name] = process
        process.start()
        return process

    # -- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        self._start_postgres()
        self._start_redis()
        self._start_airflow()
        self._start_listener()

    def _start_postgres(self) -> None:
        say("postgres: initdb (a throwaway cluster) and start on host pg")
        user = pwd.getpwnam("postgres")
        as_postgres = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]
        os.chown(self.pg_dir, user.pw_uid, user.pw_gid)
        data = self.pg_dir / "data"
        bin_dir = postgres_bin()
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        result = subprocess.run(
            [*as_postgres, *initdb, "--locale=C", "--no-sync"], capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stdout}{result.stderr}")
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.net.subnet} trust\n")
        settings = {
            "listen_addresses": "*",
            "port": str(PG_PORT),
            "unix_socket_directories": str(self.pg_dir),
            "max_connections": "200",
            # A throwaway cluster: durability against power loss is not what is measured.
            "fsync": "off",
            "full_page_writes": "off",
        }
        options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        self._process("pg", "postgres", [*as_postgres, str(bin_dir / "postgres"), "-D", str(data), *options], env)
        wait_until(lambda: self.net.call("app", self._postgres_answers), 60, "PostgreSQL")
        self.net.call("app", self._create_database)

    def _postgres_answers(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(
                host=self.net.ip("pg"), port=PG_PORT, user="postgres", dbname="postgres", connect_timeout=2
            ).close()
            return True
        except psycopg2.Error:
            return False

    def _create_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(host=self.net.ip("pg"), port=PG_PORT, user="postgres", dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE DATABASE airflow")
        finally:
            conn.close()

    def _start_redis(self) -> None:
        say("redis: start with AOF on host redis")
        data = self.work / "redis"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            "redis-server",
            "--bind",
            self.net.ip("redis"),
            "127.0.0.1",
            "--port",
            str(REDIS_PORT),
            "--protected-mode",
            "no",
        ]
        argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data), "--save", ""]
        self._process("redis", "redis", argv, dict(os.environ))
        wait_until(lambda: self.net.call("app", self._redis_answers), 30, "Redis")
        # The service's Redis Functions, as the deploy step loads them (a fresh server has none).
        self.net.call("app", self._load_functions)

    def _load_functions(self) -> None:
        client = redis.Redis.from_url(self.streams.redis_url, socket_timeout=5, socket_connect_timeout=5)
        try:
            ensure_loaded(client)
            intake.ensure_loaded(client)
        finally:
            client.close()

    def _redis_answers(self) -> bool:
        client = redis.Redis.from_url(self.streams.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _airflow_command(self, argv: list[str], env: dict[str, str], what: str) -> None:
        # On the scheduler's host: it reaches the database, as the migration job would.
        result = self.net.run("sched", [sys.executable, *argv], env=env, timeout_s=900, cwd=ROOT)
        if result.returncode != 0:
            raise RuntimeError(f"{what} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")

    def _start_airflow(self) -> None:
        self.instance.prepare()
        env = self.airflow_env()
        say("airflow: db migrate (from host sched)")
        self._airflow_command(["-m", "airflow", "db", "migrate"], env, "airflow db migrate")
        say("airflow: users and the listener's role (onboarding-access)")
        access_env = {
            **env,
            "ACCESS_ADMIN_PASSWORD": self.instance.admin_password(),
            "ACCESS_LISTENER_PASSWORD": self.instance.listener_password_file.read_text(),
            "AIRFLOW__FAB__UPDATE_FAB_PERMS": "True",
        }
        self._airflow_command(["-m", "ops.access"], access_env, "onboarding-access")
        say("airflow: api-server on host api; scheduler and dag-processor on host sched")
        self._process("api", "api-server", [sys.executable, "-m", "airflow", "api-server"], env)
        self._process("sched", "scheduler", [sys.executable, "-m", "airflow", "scheduler"], env)
        self._process("sched", "dag-processor", [sys.executable, "-m", "airflow", "dag-processor"], env)
        self.net.call("app", self._wait_airflow_ready, 300.0)

    def _wait_airflow_ready(self, timeout_s: float) -> None:
        from onboarding.airflow import AirflowClient, AirflowSettings
        from onboarding.errors import AirflowError

        client = AirflowClient(
            AirflowSettings(url=self.api_url, username="admin", password=self.instance.admin_password())
        )
        deadline = time.monotonic() + timeout_s
        why = "the api-server"
        try:
            while time.monotonic() < deadline:
                self._check_running()
                try:
                    client.health()
                    why = "the scheduler"
                    httpx.get(self.scheduler_health_url, timeout=PROBE_TIMEOUT_S).raise_for_status()
                    why = "the onboarding DAG"
                    errors = client.import_errors()
                    if errors:
                        raise RuntimeError(f"DAG import error: {errors[0].get('stack_trace', '')[-2000:]}")
                    if not client.get_dag(keys.ONBOARDING_DAG_ID).get("is_paused"):
                        return
                except (httpx.HTTPError, AirflowError):
                    pass
                time.sleep(0.5)
        finally:
            client.close()
        raise TimeoutError(f"Airflow not ready after {timeout_s:.0f} s (waiting for {why})\n{self.tails()}")

    def _start_listener(self) -> None:
        say("listener: start on host listener")
        env = {
            **os.environ,
            **self.stream_env,
            "AIRFLOW_API_URL": self.api_url,
            "AIRFLOW_USERNAME": "listener",
            "AIRFLOW_PASSWORD_FILE": str(self.instance.listener_password_file),
            "LISTENER_METRICS_HOST": self.net.ip("listener"),
            "LISTENER_METRICS_PORT": str(LISTENER_PORT),
            "LISTENER_CONSUMER": "partitions-listener-1",
        }
        self._process("listener", "listener", [sys.executable, "-m", "listener"], env)

        def healthy() -> bool:
            self._check_running()
            try:
                return httpx.get(self.listener_health_url, timeout=PROBE_TIMEOUT_S).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(lambda: self.net.call("app", healthy), 60, "the listener")

    def _check_running(self) -> None:
        for name, process in self.processes.items():
            if not process.running():
                raise RuntimeError(f"{name} exited:\n{process.tail(40)}")

    def stop(self) -> None:
        # The listener and the scheduler first, so nothing new starts while the rest goes.
        order = ["listener", "scheduler", "dag-processor", "api-server", "redis", "postgres"]
        for name in order:
            if name in self.processes:
                self.processes[name].stop(timeout_s=20)

    def tails(self, lines: int = 25) -> str:
        return "\n".join(f"--- {name} ---\n{p.tail(lines)}" for name, p in self.processes.items())

    # -- what the app host sees ------------------------------------------------------------

    @property
    def scheduler_health_url(self) -> str:
        return f"http://{self.net.ip('sched')}:{SCHEDULER_HEALTH_PORT}/health"

    @property
    def listener_health_url(self) -> str:
        return f"http://{self.net.ip('listener')}:{LISTENER_PORT}/healthz"

    def probe(self, group: str) -> Callable[[], dict[str, tuple[bool, str]]]:
        """The health probe of one group of parts (PROBES), with clients of its own: build and
        call it on a thread inside the app host (`Network.thread`). Never raises."""
        http = httpx.Client(timeout=PROBE_TIMEOUT_S)
        client = redis.Redis.from_url(
            self.streams.redis_url, socket_timeout=PROBE_TIMEOUT_S, socket_connect_timeout=PROBE_TIMEOUT_S
        )

        def http_ok(url: str) -> tuple[bool, str]:
            response = http.get(url)
            return response.status_code == 200, f"HTTP {response.status_code} {response.text.strip()[:80]}"

        def api() -> dict[str, tuple[bool, str]]:
            # One call answers for both: the api-server's own database access, and the
            # dag-processor's heartbeat as the database has it.
            response = http.get(f"{self.api_url}/api/v2/monitor/health")
            if response.status_code != 200:
                return dict.fromkeys(("api-server", "dag-processor"), (False, f"HTTP {response.status_code}"))
            body = response.json()
            found = {}
            for part, key in (("api-server", "metadatabase"), ("dag-processor", "dag_processor")):
                status = (body.get(key) or {}).get("status")
                found[part] = (status == "healthy", f"{key} {status}")
            return found

        checks: dict[str, Callable[[], tuple[bool, str]]] = {
            "redis": lambda: (bool(client.ping()), "PING"),
            "postgres": self._postgres_probe,
            "scheduler": lambda: http_ok(self.scheduler_health_url),
            "listener": lambda: http_ok(self.listener_health_url),
            "listener-live": lambda: http_ok(self.listener_health_url.replace("/healthz", "/livez")),
        }

        def guarded(
            parts: tuple[str, ...], check: Callable[[], dict[str, tuple[bool, str]]]
        ) -> dict[str, tuple[bool, str]]:
            down = [part for part in parts if not self.processes[PARTS[part]].running()]
            if down:
                return dict.fromkeys(parts, (False, f"exited: {', '.join(down)}"))
            try:
                return check()
            except Exception as err:  # a probe reports, it never raises
                return dict.fromkeys(parts, (False, f"{type(err).__name__}: {err}"[:120]))

        def single(part: str) -> Callable[[], dict[str, tuple[bool, str]]]:
            return lambda: {part: checks[part]()}

        parts = PROBES[group]
        if group == "api":
            return lambda: guarded(parts, api)
        return lambda: {part: guarded((part,), single(part))[part] for part in parts}

    def _postgres_probe(self) -> tuple[bool, str]:
        import psycopg2

        conn = psycopg2.connect(
            host=self.net.ip("pg"), port=PG_PORT, user="postgres", dbname="airflow", connect_timeout=2
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True, "SELECT 1"
        finally:
            conn.close()

    def dag_runs(self) -> list[dict[str, Any]]:
        """Every onboarding DAG run, read from the app host as the admin."""
        from onboarding.airflow import AirflowClient, AirflowSettings

        def read() -> list[dict[str, Any]]:
            client = AirflowClient(
                AirflowSettings(url=self.api_url, username="admin", password=self.instance.admin_password())
            )
            headers = {"Authorization": f"Bearer {client.token()}"}
            client.close()
            runs: list[dict[str, Any]] = []
            with httpx.Client(base_url=self.api_url, headers=headers, timeout=30) as http:
                while True:
                    url = f"/api/v2/dags/{keys.ONBOARDING_DAG_ID}/dagRuns?limit=100&offset={len(runs)}"
                    response = http.get(url)
                    response.raise_for_status()
                    page = response.json()["dag_runs"]
                    runs.extend(page)
                    if len(page) < 100:
                        return runs

        return self.net.call("app", read)


@contextlib.contextmanager
def partitioned_stack(work: Path, model_dir: Path, sysctls: dict[str, str] | None = None) -> Iterator[PartitionedStack]:
    """The stack on its hosts, started; stopped and every host deleted afterwards.
    `sysctls`: network settings for every host (e.g. net.ipv4.tcp_rto_max_ms)."""
    pg_dir = Path(tempfile.mkdtemp(prefix="onbt-pg-"))
    try:
        with network(HOSTS) as net:
            say(f"network: hosts {', '.join(f'{h.name}={h.ip}' for h in net.hosts.values())}")
            for key, value in (sysctls or {}).items():
                say(f"network: {key}={value} on every host")
                for host in HOSTS:
                    net.sysctl(host, key, value)
            stack = PartitionedStack(net, work, model_dir, pg_dir)
            try:
                stack.start()
                yield stack
            finally:
                stack.stop()
    finally:
        shutil.rmtree(pg_dir, ignore_errors=True)


# -- the app: steady signups, decisions read back, every part probed ----------------------


@dataclass
class Signup:
    event_id: str
    published: float  # time.monotonic()
    decided: list[float] = field(default_factory=list)  # when each decision for it appeared
    errors: list[str | None] = field(default_factory=list)


class Flow:
    """The app host's threads: a publisher on a fixed schedule, a reader of the decisions
    stream and one health prober per part; everything stamped with time.monotonic()."""

    def __init__(self, stack: PartitionedStack, rate: float, seed: int = 15) -> None:
        self.stack = stack
        self.rate = rate
        self.seed = seed
        self.lock = threading.Lock()
        self.signups: dict[str, Signup] = {}
        self.unknown_decisions: list[str] = []
        self.health: dict[str, list[tuple[float, bool, str]]] = {part: [] for part in PARTS}
        self._publishing = threading.Event()
        self._running = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._running.set()
        self._publishing.set()
        net = self.stack.net
        self._threads = [
            net.thread("app", self._observe, "decisions"),
            net.thread("app", self._publish, "publisher"),
            *(net.thread("app", functools.partial(self._watch, group), f"probe-{group}") for group in PROBES),
        ]

    def stop_publishing(self) -> None:
        self._publishing.clear()

    def stop(self) -> None:
        self._publishing.clear()
        self._running.clear()
        for thread in self._threads:
            thread.join(timeout=10)

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(self.stack.streams.redis_url, socket_timeout=5, socket_connect_timeout=5)

    def _publish(self) -> None:
        client = self._client()
        rng = random.Random(self.seed)
        began = time.monotonic()
        sent = 0
        while self._publishing.is_set():
            pause = began + sent / self.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
                continue
            event = new_signup(rng=rng)
            at = time.monotonic()
            try:
                publish_signup(client, self.stack.streams.signups_stream, event)
            except redis.RedisError as err:  # the app's own link is never cut; say so if it fails
                say(f"app: publishing failed: {err}")
                time.sleep(0.5)
                continue
            with self.lock:
                self.signups[event["event_id"]] = Signup(event["event_id"], at)
            sent += 1

    def _observe(self) -> None:
        client = self._client()
        last = "0-0"
        stream = self.stack.streams.decisions_stream
        while self._running.is_set():
            try:
                reply = client.xread({stream: last}, count=500, block=500)
            except redis.RedisError as err:
                say(f"app: reading decisions failed: {err}")
                time.sleep(0.5)
                continue
            seen = time.monotonic()
            for entry_id, fields in live_entries(xread_entries(reply)):
                last = entry_id
                data = json.loads(payload(fields))
                with self.lock:
                    signup = self.signups.get(data["event_id"])
                    if signup is None:
                        self.unknown_decisions.append(data["event_id"])
                        continue
                    signup.decided.append(seen)
                    signup.errors.append(data.get("error"))

    def _watch(self, group: str) -> None:
        probe = self.stack.probe(group)
        while self._running.is_set():
            at = time.monotonic()  # a probe counts from when it was sent
            answers = probe()
            with self.lock:
                for part, (ok, detail) in answers.items():
                    self.health[part].append((at, ok, detail))
            time.sleep(max(0.0, PROBE_INTERVAL_S - (time.monotonic() - at)))

    # -- reading it ----------------------------------------------------------------------

    def snapshot(self) -> list[Signup]:
        with self.lock:
            return [Signup(s.event_id, s.published, list(s.decided), list(s.errors)) for s in self.signups.values()]

    def unhealthy_now(self) -> list[str]:
        with self.lock:
            return [part for part, samples in self.health.items() if samples and not samples[-1][1]]

    def green_since(self, t: float, until: float = float("inf")) -> float | None:
        """When every part's probes turned green for good (up to `until`) after `t`: the
        first green sample after the last red one (a part red at `t` counts as red then);
        `t` itself if every part was green at `t` and stayed so; None while some part is
        red, or has not been probed since `t`."""
        latest = t
        with self.lock:
            for samples in self.health.values():
                before = [ok for at, ok, _ in samples if at < t]
                after = [(at, ok) for at, ok, _ in samples if t <= at < until]
                if not after:
                    return None
                reds = [at for at, ok in after if not ok]
                if not reds and (not before or before[-1]):
                    continue
                last_red = reds[-1] if reds else t
                greens = [at for at, ok in after if ok and at >= last_red]
                if not greens:
                    return None
                latest = max(latest, greens[0])
        return latest

    def unhealthy_between(self, t0: float, t1: float) -> dict[str, str]:
        """The parts with a red probe in [t0, t1), each with its first red answer."""
        found: dict[str, str] = {}
        with self.lock:
            for part, samples in self.health.items():
                for at, ok, detail in samples:
                    if t0 <= at < t1 and not ok:
                        found[part] = detail
                        break
        return found

    def dead_letters(self) -> dict[str, str]:
        """event id -> reason of every dead letter, read from the app host."""

        def read() -> dict[str, str]:
            client = self._client()
            found: dict[str, str] = {}
            for _entry, fields in live_entries(client.xrange(self.stack.streams.dead_letter_stream)):
                reason = text(fields.get(b"reason", b"?"))
                try:
                    event_id = json.loads(fields.get(b"original.payload", b"{}")).get("event_id", "?")
                except (ValueError, AttributeError):
                    event_id = "?"
                found[str(event_id)] = reason
            client.close()
            return found

        return self.stack.net.call("app", read)


# -- one cut ---------------------------------------------------------------------------------


@dataclass
class Window:
    """One cut's stretch of the run, in time.monotonic() seconds."""

    key: str
    begin: float
    cut: float
    healed: float
    end: float


def warmed_up(flow: Flow, count: int = 5) -> bool:
    """Decisions flow: the first `count` signups are decided (the first runs of a fresh
    instance are slow: the task workers load the model), and the flow keeps up."""
    signups = sorted(flow.snapshot(), key=lambda s: s.published)[:count]
    return len(signups) == count and all(s.decided for s in signups) and keeping_up(flow.snapshot())


def keeping_up(signups: list[Signup], now: float | None = None, lag_s: float = CAUGHT_UP_LAG_S) -> bool:
    """No signup published more than lag_s before `now` is waiting for its decision."""
    at = time.monotonic() if now is None else now
    return all(s.decided and s.decided[0] <= at for s in signups if s.published < at - lag_s)


def caught_up_at(signups: list[Signup], after: float, until: float, lag_s: float = CAUGHT_UP_LAG_S) -> float | None:
    """The first moment in [after, until) at which the flow keeps up again (`keeping_up`):
    only a decision can make it so, so the decision times are the moments to try."""
    moments = sorted({after, *(t for s in signups for t in s.decided[:1] if after <= t < until)})
    for moment in moments:
        if keeping_up(signups, moment, lag_s):
            return moment
    return None


def run_cut(
    stack: PartitionedStack,
    flow: Flow,
    spec: CutSpec,
    seconds: float,
    settle_s: float,
    recovery_timeout_s: float,
) -> Window:
    """Steady flow for settle_s, the cut for `seconds`, the heal, the wait for recovery."""
    begin = time.monotonic()
    say(f"{spec.key}: {settle_s:.0f} s of steady flow before the cut")
    time.sleep(settle_s)
    with stack.net.partition(spec.a, spec.b, seconds) as cut:
        say(f"{spec.key}: cut {spec.a} <-> {spec.b} for {seconds:.0f} s")
        while time.monotonic() < cut.started + seconds:
            time.sleep(min(5.0, max(0.0, cut.started + seconds - time.monotonic())))
            _progress(flow, spec.key, "cut", begin)
    healed = cut.healed if cut.healed is not None else time.monotonic()
    say(f"{spec.key}: healed; waiting for every part to be healthy and the flow to catch up")
    deadline = healed + recovery_timeout_s
    last_report = time.monotonic()
    while time.monotonic() < deadline:
        # Caught up, so that the next cut starts from a steady flow, not from this one's backlog.
        if flow.green_since(healed) is not None and keeping_up(flow.snapshot()):
            break
        if time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            _progress(flow, spec.key, "recovering", begin)
        time.sleep(0.5)
    else:
        say(f"{spec.key}: not recovered {recovery_timeout_s:.0f} s after the heal")
    time.sleep(settle_s)  # "healthy again" must stay so for a while
    return Window(spec.key, begin, cut.started, healed, time.monotonic())


def _progress(flow: Flow, key: str, phase: str, begin: float) -> None:
    window = [s for s in flow.snapshot() if s.published >= begin]
    decided = sum(1 for s in window if s.decided)
    red = flow.unhealthy_now()
    say(f"{key}: {phase}: {len(window)} published, {decided} decided; red: {', '.join(red) or 'none'}")


@dataclass
class CutResult:
    key: str
    what: str
    seconds: float
    signups: int
    lost: int
    duplicate_runs: int
    duplicate_decisions: int
    dead_letters: int
    error_reviews: int
    healthy_after_s: float | None
    first_decision_after_s: float | None
    decided_during: int
    caught_up_after_s: float | None
    worst_latency_s: float | None
    unhealthy_during: dict[str, str]
    points: list[tuple[float, float | None]]  # (published - cut, latency) of every signup of the window

    @property
    def recovered_after_s(self) -> float | None:
        """Every part healthy again and decisions flowing: the later of the two."""
        if self.healthy_after_s is None or self.first_decision_after_s is None:
            return None
        return max(self.healthy_after_s, self.first_decision_after_s)


def measure(
    window: Window, spec: CutSpec, flow: Flow, runs_per_event: dict[str, int], dead: dict[str, str]
) -> CutResult:
    """The figures of one cut, from the whole run's record (taken once everything settled)."""
    signups = [s for s in flow.snapshot() if window.begin <= s.published < window.end]
    before_heal = [s for s in signups if s.published < window.healed]
    touched = [s for s in before_heal if not (s.decided and s.decided[0] < window.cut)]
    latencies = [s.decided[0] - s.published if s.decided else float("inf") for s in touched]
    # Decisions flow again: the first signup the fault held back is decided after the heal.
    held_back = [s.decided[0] for s in touched if s.decided and s.decided[0] >= window.healed]
    caught_up = caught_up_at(flow.snapshot(), window.healed, window.end)
    green = flow.green_since(window.healed, window.end)
    return CutResult(
        key=spec.key,
        what=spec.what,
        seconds=window.healed - window.cut,
        signups=len(signups),
        lost=sum(1 for s in signups if not s.decided and s.event_id not in dead),
        duplicate_runs=sum(max(0, runs_per_event.get(s.event_id, 0) - 1) for s in signups),
        duplicate_decisions=sum(max(0, len(s.decided) - 1) for s in signups),
        dead_letters=sum(1 for s in signups if s.event_id in dead),
        error_reviews=sum(1 for s in signups if any(e is not None for e in s.errors)),
        healthy_after_s=None if green is None else green - window.healed,
        first_decision_after_s=min(held_back) - window.healed if held_back else None,
        decided_during=sum(1 for s in touched if s.decided and s.decided[0] < window.healed),
        caught_up_after_s=None if caught_up is None else caught_up - window.healed,
        worst_latency_s=max(latencies) if latencies else None,
        unhealthy_during=flow.unhealthy_between(window.cut, window.healed),
        points=[(s.published - window.cut, s.decided[0] - s.published if s.decided else None) for s in signups],
    )


def runs_by_event(runs: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        event_id = (run.get("conf") or {}).get("event_id") or str(run.get("dag_run_id", "")).removeprefix(
            keys.RUN_ID_PREFIX
        )
        counts[event_id] = counts.get(event_id, 0) + 1
    return counts


# -- the whole benchmark -----------------------------------------------------------------------


@dataclass
class Report:
    command: str
    when: str
    host: str
    args: dict[str, Any]
    results: list[CutResult]
    published: int = 0
    decided: int = 0
    lost_overall: int = 0
    load_average: list[float] = field(default_factory=list)  # the machine's, 1/5/15 min, at the end


def run(args: argparse.Namespace, command: str) -> Report:
    from testkit.model import train_baseline

    cuts = [CUTS[key] for key in args.cuts]
    work = Path(tempfile.mkdtemp(prefix="onboarding-partitions-"))
    report = Report(command, datetime.now(UTC).isoformat(timespec="seconds"), host_description(), vars(args), [])
    try:
        say("model: training the baseline")
        model_dir = train_baseline(work / "model")
        with partitioned_stack(work, model_dir, dict(item.split("=", 1) for item in args.sysctl)) as stack:
            flow = Flow(stack, args.rate)
            flow.start()
            try:
                say(f"warm-up: {args.warmup:.0f} s at {args.rate:g} signups/s")
                wait_until(lambda: warmed_up(flow), args.recovery_timeout, "the first decisions")
                time.sleep(args.warmup)
                _progress(flow, "warm-up", "done", 0.0)
                windows = [
                    run_cut(stack, flow, spec, args.seconds, args.settle, args.recovery_timeout) for spec in cuts
                ]
                flow.stop_publishing()
                drain(flow, args.recovery_timeout)
                dead = flow.dead_letters()
                runs = runs_by_event(stack.dag_runs())
            finally:
                flow.stop()
            signups = flow.snapshot()
            report.published = len(signups)
            report.decided = sum(1 for s in signups if s.decided)
            report.lost_overall = sum(1 for s in signups if not s.decided and s.event_id not in dead)
            report.results = [measure(w, CUTS[w.key], flow, runs, dead) for w in windows]
            report.load_average = [round(x, 2) for x in os.getloadavg()]
            if report.lost_overall or args.keep:
                say(f"logs kept in {work / 'logs'}")
                args.keep = True
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report


def drain(flow: Flow, timeout_s: float) -> None:
    say("publishing stopped; waiting for every signup to be decided")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pending = [s for s in flow.snapshot() if not s.decided]
        if not pending:
            return
        time.sleep(1)
    say(f"{len(pending)} signups still undecided after {timeout_s:.0f} s")


def host_description() -> str:
    return f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "not within the run"
    if value == float("inf"):
        return "undecided"
    return f"{value:.1f}"


def markdown(report: Report) -> str:
    lines = [
        f"`{report.command}` ({report.when}, {report.host})",
        "",
        "| link cut | cut (s) | signups | lost | duplicate runs | duplicate decisions | dead letters "
        "| `review` by error | decided during the cut | recovered after heal (s) | all parts healthy (s) "
        "| decisions flow (s) | caught up (s) | worst latency in the fault (s) | red during the cut |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.results:
        red = ", ".join(sorted(r.unhealthy_during)) or "none"
        lines.append(
            f"| {r.what} | {r.seconds:.0f} | {r.signups} | {r.lost} | {r.duplicate_runs} | {r.duplicate_decisions} "
            f"| {r.dead_letters} | {r.error_reviews} | {r.decided_during} | {_seconds(r.recovered_after_s)} "
            f"| {_seconds(r.healthy_after_s)} | {_seconds(r.first_decision_after_s)} "
            f"| {_seconds(r.caught_up_after_s)} | {_seconds(r.worst_latency_s)} | {red} |"
        )
    lines += [
        "",
        f"Whole run: {report.published} signups published, {report.decided} decided, "
        f"{report.lost_overall} lost (published, neither decided nor dead-lettered). Load average of the "
        f"machine at the end (1, 5, 15 min): {', '.join(f'{x:g}' for x in report.load_average)}.",
        "",
        "Seconds are from the heal. Recovered: every part healthy again and decisions flowing (the later of "
        "the next two). All parts healthy: every health probe green, for good. Decisions flow: the first signup "
        "the fault held back is decided. Caught up: no signup published more than "
        f"{CAUGHT_UP_LAG_S:g} s earlier waits for its decision (the backlog is worked off). "
        "Worst latency: publish to decision seen by the app, over the signups published before the heal and "
        "not decided before the cut.",
    ]
    return "\n".join(lines)


def plot(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(report.results)
    fig, axes = plt.subplots(count, 1, figsize=(9, 2.6 * count), squeeze=False, sharex=True)
    for ax, r in zip(axes[:, 0], report.results, strict=True):
        decided = [(x, y) for x, y in r.points if y is not None]
        ax.scatter([x for x, _ in decided], [y for _, y in decided], s=6, color="tab:blue")
        ax.axvspan(0, r.seconds, color="tab:red", alpha=0.15, label="link cut")
        ax.set_yscale("log")
        ax.set_ylabel("latency (s)")
        ax.set_title(f"{r.what}: cut {r.seconds:.0f} s", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[-1, 0].set_xlabel("signup published, seconds from the cut")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    fig.suptitle("signup -> decision latency around each partition", fontsize=11)
    fig.text(0.01, 0.003, report.command, fontsize=7, family="monospace")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", default=",".join(CUTS), help=f"which links, in order (of {', '.join(CUTS)})")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each link stays cut")
    parser.add_argument("--rate", type=float, default=1.5, help="signups per second, all the run long")
    parser.add_argument("--settle", type=float, default=10.0, help="steady flow before each cut and after recovery")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of flow before the first cut")
    parser.add_argument("--recovery-timeout", type=float, default=240.0, help="the longest wait after a heal")
    parser.add_argument(
        "--sysctl",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a network setting for every host, to try one (net.ipv4.tcp_rto_max_ms=5000)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--plot", type=Path, help="write a PNG of every signup's latency around each cut")
    parser.add_argument("--keep", action="store_true", help="keep the components' logs (kept anyway if any is lost)")
    args = parser.parse_args(argv)
    args.cuts = [key.strip() for key in args.cuts.split(",") if key.strip()]
    unknown = [key for key in args.cuts if key not in CUTS]
    if unknown:
        parser.error(f"unknown cut(s) {', '.join(unknown)}; choose from {', '.join(CUTS)}")
    missing = missing_tools()
    if missing:
        parser.error(f"needs {', '.join(missing)}")
    # Stopped by SIGTERM: unwind, so every process and namespace is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = "python benchmarks/partitions.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    report = run(args, command.strip())
    table = markdown(report)
    print(table)
    if args.json:
        data = asdict(report)
        data["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in data["args"].items()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    if args.plot:
        plot(report, args.plot)
    return 1 if report.lost_overall else 0


if __name__ == "__main__":
    sys.exit(main())
