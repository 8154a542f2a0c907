"""A rehearsal of the production topology on one machine: hosts are Linux network namespaces
on one switch (`testkit.netns`), every component talks to the others by the hosts' addresses.

    data       redis-server (streams on database 0, the Celery broker on database 1), and a
               throwaway PostgreSQL cluster: the metadata database and the Celery result backend
    control    the realtime Airflow's api-server, scheduler and dag-processor (CeleryExecutor)
    workera    `airflow celery worker` "worker-a"
    workerb    `airflow celery worker` "worker-b"
    listeners  two listener processes in the one consumer group
    app        the product app and the observer: publishes signups, reads decisions, queries
               the metadata database and the Celery workers

The instance is prepared as in production (docs/operations.md): `airflow db migrate` and then
`onboarding-access` (the users and the listener's least-privilege role) from the control
host, the FAB auth manager of deploy/realtime/airflow.cfg, one JWT secret and API secret key
shared by every Airflow process (`AirflowInstance.env`), the listeners with the restricted
`listener` credential, and one Redis ACL user per component as the Kubernetes Secrets give
them (ops/redis_acl.py): `listener`, `publisher` (every Airflow process: the tasks and the
failure callbacks publish decisions), `app`, and the Celery broker as BROKER_ROLE (below); the
default user off. Each worker runs in a UTS namespace of its own named after it, so the
metadata database's `task_instance.hostname` and Celery's `worker-a@worker-a` say where a task
ran. Used by tests/e2e/test_multihost.py and benchmarks/multihost.py; docs/rehearsal.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import redis

from onboarding import keys
from onboarding.functions import ensure_loaded
from onboarding.publisher import publish_signup
from onboarding.settings import StreamSettings
from onboarding.streams import live_entries, payload
from ops import redis_acl
from risk.samples import new_signup
from stack.instance import AirflowInstance, InstanceSpec
from stack.processes import ManagedProcess
from stack.settings import PROJECT_ROOT
from testkit.celery_stack import WORKER_CONCURRENCY, celery_env
from testkit.faults import runs_per_event
from testkit.netns import Network, network

__all__ = [
    "HOSTS",
    "WORKERS",
    "MultihostStack",
    "TaskRow",
    "missing_tools",
    "multihost_stack",
]

HOSTS = ("data", "control", "workera", "workerb", "listeners", "app")
# netns host -> the worker's host name (its UTS namespace) and Celery node name.
WORKERS = {"workera": "worker-a", "workerb": "worker-b"}
LISTENERS = 2
# The Celery broker's Redis user: production's `broker` role (ops/redis_acl.py), which a real
# `airflow celery worker` needs and tests/unit/test_redis_acl.py proves with a Celery worker.
BROKER_ROLE = "broker"
REDIS_ROLES = [role.name for role in (*redis_acl.roles(), *redis_acl.SERVER_ROLES)]
REDIS_PORT = 6379
PG_PORT = 5432
API_PORT = 8080
SCHEDULER_HEALTH_PORT = 8974
LISTENER_PORT = 9108  # listener i on LISTENER_PORT + i

_started = time.monotonic()
_SUCCEEDED = re.compile(r"^(\S+Z) .*Task execute_workload\[[^]]+\] succeeded in ([0-9.]+)s")


def say(message: str) -> None:
    """Progress, on stderr."""
    print(f"[{time.monotonic() - _started:7.1f} s] {message}", file=sys.stderr, flush=True)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")


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
    """What the rehearsal needs from the machine and does not find."""
    missing = [tool for tool in ("redis-server", "setpriv", "unshare") if not shutil.which(tool)]
    try:
        postgres_bin()
        pwd.getpwnam("postgres")
    except (FileNotFoundError, KeyError):
        missing.append("PostgreSQL server binaries and the postgres user")
    return missing


def named_host(name: str, argv: list[str]) -> list[str]:
    """`argv` in a UTS namespace of its own whose host name is `name` (exec'd: same pid)."""
    return ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', name, *argv]


@dataclass(frozen=True)
class TaskRow:
    """One onboarding task instance, as the metadata database has it."""

    run_id: str
    try_number: int
    state: str | None
    hostname: str | None
    start: datetime | None
    end: datetime | None

    @property
    def event_id(self) -> str:
        return self.run_id.removeprefix(keys.RUN_ID_PREFIX)


@dataclass
class Decided:
    """Per event id: how many decisions the stream holds, the first one's accept and publish
    times, and its error if it was a `review` because the pipeline failed."""

    count: Counter[str] = field(default_factory=Counter)
    published_at: dict[str, float] = field(default_factory=dict)  # epoch seconds
    accepted_at: dict[str, float] = field(default_factory=dict)  # by the listener, epoch seconds
    errors: dict[str, str] = field(default_factory=dict)


class MultihostStack:
    """The rehearsal's components on their hosts; build it with `multihost_stack()`."""

    def __init__(
        self,
        net: Network,
        work: Path,
        model_dir: Path,
        pg_dir: Path,
        extra_env: dict[str, str] | None = None,
        broker_role: str = BROKER_ROLE,
    ) -> None:
        self.net = net
        self.extra_env = dict(extra_env or {})
        self.work = work
        self.model_dir = model_dir
        self.pg_dir = pg_dir
        self.run_dir = work / "run"
        self.log_dir = work / "logs"
        # One Redis ACL user per component, as in production (ops/redis_acl.py, operations.md):
        # the listeners as `listener`, the Airflow processes (tasks, failure callbacks) as
        # `publisher`, the product app as `app`, the Celery broker as `broker_role`; the
        # observer as the server's `admin`. The default user is off.
        self.redis_passwords = {role: secrets.token_hex(16) for role in REDIS_ROLES}
        self.streams = StreamSettings(redis_url=self.redis_url("admin"))
        self.broker_url = self.redis_url(broker_role, 1)  # a database of its own, as in production
        self.database_url = f"postgresql+psycopg2://postgres@{net.ip('data')}:{PG_PORT}/onboarding_realtime"
        self.api_url = f"http://{net.ip('control')}:{API_PORT}"
        spec = InstanceSpec.from_deploy(
            "realtime", work / "airflow", API_PORT, SCHEDULER_HEALTH_PORT, self.database_url
        )
        self.instance = AirflowInstance(spec, {**os.environ, **self.stream_env})
        self.processes: dict[str, ManagedProcess] = {}
        self.seed = 0

    def redis_url(self, role: str, db: int = 0) -> str:
        """The URL of Redis on the data host as ACL user `role`."""
        return f"redis://{role}:{self.redis_passwords[role]}@{self.net.ip('data')}:{REDIS_PORT}/{db}"

    @property
    def stream_env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis_url("publisher"),
            "SIGNUPS_STREAM": self.streams.signups_stream,
            "DECISIONS_STREAM": self.streams.decisions_stream,
            "DEAD_LETTER_STREAM": self.streams.dead_letter_stream,
            "RISK_MODEL_DIR": str(self.model_dir),
        }

    def airflow_env(self) -> dict[str, str]:
        """One environment for every Airflow process (same JWT secret, same broker, same
        database), with every address on the hosts' network."""
        return {
            **self.instance.env(),
            **{
                key: value
                for key, value in celery_env(self.database_url, self.broker_url, "").items()
                # A Redis of its own: no key prefix, so the broker's keys are those the `broker`
                # ACL user is allowed (Celery's queue, kombu's bindings, unacked, pidbox).
                if key != "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"
            },
            "AIRFLOW__API__HOST": self.net.ip("control"),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            **self.extra_env,
        }

    def _process(self, host: str, name: str, argv: list[str], env: dict[str, str]) -> ManagedProcess:
        process = self.net.process(host, name, argv, env, self.run_dir, self.log_dir, cwd=PROJECT_ROOT)
        self.processes[name] = process
        process.start()
        return process

    def app(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn` on a thread inside the app host (its sockets live there)."""
        return self.net.call("app", fn, *args, **kwargs)

    # -- start and stop ------------------------------------------------------------------

    def start(self, workers: Iterable[str] = tuple(WORKERS)) -> None:
        self._start_postgres()
        self._start_redis()
        self._start_airflow()
        for host in workers:
            self.start_worker(host)
        for i in range(1, LISTENERS + 1):
            self._start_listener(i)

    def _start_postgres(self) -> None:
        say("data: PostgreSQL (a throwaway cluster)")
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
            "listen_addresses": self.net.ip("data"),
            "port": str(PG_PORT),
            "unix_socket_directories": str(self.pg_dir),
            "max_connections": "200",
            # A throwaway cluster: durability against power loss is not what is rehearsed.
            "fsync": "off",
            "full_page_writes": "off",
        }
        options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        self._process("data", "postgres", [*as_postgres, str(bin_dir / "postgres"), "-D", str(data), *options], env)
        wait_until(lambda: self.app(self._postgres_answers), 60, "PostgreSQL")
        self.app(self._sql, "CREATE DATABASE onboarding_realtime", (), "postgres")

    def _connect(self, dbname: str = "onboarding_realtime") -> Any:
        import psycopg2

        return psycopg2.connect(
            host=self.net.ip("data"), port=PG_PORT, user="postgres", dbname=dbname, connect_timeout=3
        )

    def _postgres_answers(self) -> bool:
        import psycopg2

        try:
            self._connect("postgres").close()
            return True
        except psycopg2.Error:
            return False

    def _sql(
        self, statement: str, params: tuple[Any, ...] = (), dbname: str = "onboarding_realtime"
    ) -> list[tuple[Any, ...]]:
        conn = self._connect(dbname)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def _start_redis(self) -> None:
        say("data: redis-server (AOF; one ACL user per role, the default user off)")
        data = self.work / "redis"
        data.mkdir(parents=True, exist_ok=True)
        acl_file = data / "users.acl"
        environ = {f"REDIS_ACL_PASSWORD_{role.upper()}": pw for role, pw in self.redis_passwords.items()}
        fd = os.open(acl_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(redis_acl.render(StreamSettings(), environ, server=True))
        argv = ["redis-server", "--bind", self.net.ip("data"), "--port", str(REDIS_PORT), "--protected-mode", "no"]
        argv += ["--aclfile", str(acl_file)]
        argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data), "--save", ""]
        self._process("data", "redis", argv, dict(os.environ))
        wait_until(lambda: self.app(self._redis_answers), 30, "Redis")
        # The deploy step: the service's Redis Functions, loaded by the administrator.
        self.app(lambda: ensure_loaded(self.redis_client("admin")))

    def redis_client(self, role: str = "admin") -> redis.Redis:
        """A client of the streams' Redis as ACL user `role`; use it on a thread inside a host."""
        return redis.Redis.from_url(self.redis_url(role), socket_timeout=10, socket_connect_timeout=5)

    def _redis_answers(self) -> bool:
        client = self.redis_client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _airflow_command(self, argv: list[str], env: dict[str, str], what: str) -> None:
        # From the control host, as a migration job would run beside the scheduler.
        result = self.net.run("control", [sys.executable, *argv], env=env, timeout_s=900, cwd=PROJECT_ROOT)
        if result.returncode != 0:
            raise RuntimeError(f"{what} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")

    def _start_airflow(self) -> None:
        self.instance.prepare()
        env = self.airflow_env()
        say("control: airflow db migrate")
        self._airflow_command(["-m", "airflow", "db", "migrate"], env, "airflow db migrate")
        say("control: onboarding-access (users, the listener's role)")
        access_env = {
            **env,
            "ACCESS_ADMIN_PASSWORD": self.instance.admin_password(),
            "ACCESS_LISTENER_PASSWORD": self.instance.listener_password_file.read_text(),
            "AIRFLOW__FAB__UPDATE_FAB_PERMS": "True",
        }
        self._airflow_command(["-m", "ops.access"], access_env, "onboarding-access")
        say("control: api-server, scheduler, dag-processor")
        for component in ("api-server", "scheduler", "dag-processor"):
            argv = named_host("control", [sys.executable, "-m", "airflow", component])
            self._process("control", component, argv, env)
        self.app(self._wait_airflow_ready, 300.0)

    def _wait_airflow_ready(self, timeout_s: float) -> None:
        from onboarding.airflow import AirflowClient, AirflowSettings
        from onboarding.errors import AirflowError

        client = AirflowClient(
            AirflowSettings(url=self.api_url, username="admin", password=self.instance.admin_password())
        )
        health = f"http://{self.net.ip('control')}:{SCHEDULER_HEALTH_PORT}/health"
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                self.check_running()
                try:
                    client.health()
                    httpx.get(health, timeout=2).raise_for_status()
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
        raise TimeoutError(f"Airflow not ready after {timeout_s:.0f} s\n{self.tails()}")

    def start_worker(self, host: str) -> ManagedProcess:
        """`airflow celery worker` on `host`, named after it; waits until it answers a ping."""
        name = WORKERS[host]
        say(f"{host}: airflow celery worker {name}")
        argv = [sys.executable, "-m", "airflow", "celery", "worker", "--celery-hostname", f"{name}@%h"]
        # No log server: the api-server does not fetch task logs here (they stay on the worker).
        argv += ["--concurrency", str(WORKER_CONCURRENCY), "--skip-serve-logs"]
        process = self._process(host, name, named_host(name, argv), self.airflow_env())
        wait_until(lambda: f"{name}@{name}" in self.celery_workers(), 120, f"Celery worker {name}", 1.0)
        return process

    def stop_worker(self, host: str) -> None:
        self.processes[WORKERS[host]].stop(timeout_s=30)

    def _start_listener(self, i: int) -> None:
        say(f"listeners: listener {i}")
        env = {
            **os.environ,
            **self.stream_env,
            "REDIS_URL": self.redis_url("listener"),
            "AIRFLOW_API_URL": self.api_url,
            "AIRFLOW_USERNAME": "listener",
            "AIRFLOW_PASSWORD_FILE": str(self.instance.listener_password_file),
            "LISTENER_METRICS_HOST": self.net.ip("listeners"),
            "LISTENER_METRICS_PORT": str(LISTENER_PORT + i),
            "LISTENER_CONSUMER": f"listeners-{i}",
        }
        self._process("listeners", f"listener-{i}", [sys.executable, "-m", "listener"], env)
        url = f"http://{self.net.ip('listeners')}:{LISTENER_PORT + i}/healthz"

        def healthy() -> bool:
            self.check_running()
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(lambda: self.app(healthy), 60, f"listener {i}")

    def check_running(self, except_: Iterable[str] = ()) -> None:
        for name, process in self.processes.items():
            if name not in except_ and not process.running():
                raise RuntimeError(f"{name} exited:\n{process.tail(40)}")

    def stop(self) -> None:
        # Listeners and the scheduler first, so nothing new starts while the rest goes.
        first = [f"listener-{i}" for i in range(1, LISTENERS + 1)] + ["scheduler", *WORKERS.values()]
        order = [*first, *(name for name in self.processes if name not in first and name not in ("redis", "postgres"))]
        for name in [*order, "redis", "postgres"]:
            if name in self.processes:
                self.processes[name].stop(timeout_s=20)

    def tails(self, lines: int = 25) -> str:
        return "\n".join(f"--- {name} ---\n{p.tail(lines)}" for name, p in self.processes.items())

    # -- the network -------------------------------------------------------------------------

    def isolate(self, host: str) -> float:
        """Take `host`'s link down: every packet between it and every other host dropped
        (both ways, in the switch). Returns when (time.time())."""
        for other in self.net.hosts:
            if other != host:
                self.net.cut(host, other)
        return time.time()

    def rejoin(self, host: str) -> float:
        for other in self.net.hosts:
            if other != host:
                self.net.heal(host, other)
        return time.time()

    # -- what the app host sees ------------------------------------------------------------

    def publish(self, count: int, rate: float | None = None, on_each: Callable[[int], None] | None = None) -> list[str]:
        """Publish `count` signups from the app host, at `rate` per second (None: at once);
        `on_each(i)` after each. Returns their event ids."""

        def run() -> list[str]:
            client = self.redis_client("app")
            rng = random.Random(self.seed)
            self.seed += 1
            began = time.monotonic()
            ids = []
            try:
                for i in range(count):
                    if rate:
                        time.sleep(max(0.0, began + i / rate - time.monotonic()))
                    event = new_signup(rng=rng)
                    publish_signup(client, self.streams.signups_stream, event)
                    ids.append(event["event_id"])
                    if on_each is not None:
                        on_each(i)
            finally:
                client.close()
            return ids

        result: list[str] = self.app(run)
        return result

    def decided(self) -> Decided:
        """Every decision on the stream, per event id."""

        def read() -> Decided:
            client = self.redis_client()
            found = Decided()
            try:
                for _id, fields in live_entries(client.xrange(self.streams.decisions_stream)):
                    data = json.loads(payload(fields))
                    event_id = data["event_id"]
                    found.count[event_id] += 1
                    if event_id not in found.published_at:
                        with contextlib.suppress(KeyError, ValueError, TypeError):
                            published = data["timestamps"]["published_at"]
                            found.published_at[event_id] = datetime.fromisoformat(published).timestamp()
                            accepted = data["timestamps"]["accepted_at"]
                            found.accepted_at[event_id] = datetime.fromisoformat(accepted).timestamp()
                    if data.get("error"):
                        found.errors[event_id] = str(data["error"])[:200]
            finally:
                client.close()
            return found

        result: Decided = self.app(read)
        return result

    def wait_decided(self, event_ids: Iterable[str], timeout_s: float) -> Decided:
        wanted = set(event_ids)
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.decided()
            if wanted <= set(found.count) or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    def dead_letters(self) -> int:
        def read() -> int:
            client = self.redis_client()
            try:
                return int(client.xlen(self.streams.dead_letter_stream))
            finally:
                client.close()

        result: int = self.app(read)
        return result

    def runs_per_event(self) -> Counter[str]:
        """DAG runs per event id, from the metadata database (testkit.faults.runs_per_event)."""
        result: Counter[str] = self.app(runs_per_event, self.database_url)
        return result

    def tasks(self) -> list[TaskRow]:
        """Every onboarding task instance, every try (task_instance and its history)."""
        query = (
            "SELECT run_id, try_number, state, hostname, start_date, end_date FROM task_instance "
            "WHERE dag_id = %s UNION ALL "
            "SELECT run_id, try_number, state, hostname, start_date, end_date FROM task_instance_history "
            "WHERE dag_id = %s"
        )
        dag = keys.ONBOARDING_DAG_ID
        rows: list[tuple[Any, ...]] = self.app(self._sql, query, (dag, dag))
        return [TaskRow(*row) for row in rows]

    def running_on(self, worker: str) -> list[TaskRow]:
        """The onboarding tasks running now on `worker` (its host name), newest first."""
        query = (
            "SELECT run_id, try_number, state, hostname, start_date, end_date FROM task_instance "
            "WHERE dag_id = %s AND state = 'running' AND hostname = %s ORDER BY start_date DESC"
        )
        rows: list[tuple[Any, ...]] = self.app(self._sql, query, (keys.ONBOARDING_DAG_ID, worker))
        return [TaskRow(*row) for row in rows]

    def celery(self, expression: str, timeout_s: float = 30) -> Any:
        """A Celery control expression on the instance's Celery app (`app`), from the app host."""
        code = (
            "import json\n"
            "from airflow.providers.celery.executors.celery_executor_utils import app\n"
            f"print('RESULT ' + json.dumps({expression}))\n"
        )
        result = self.net.run("app", [sys.executable, "-c", code], env=self.airflow_env(), timeout_s=timeout_s)
        for line in reversed(result.stdout.splitlines()):  # Airflow may log to stdout first
            if line.startswith("RESULT "):
                return json.loads(line.removeprefix("RESULT "))
        raise RuntimeError(f"Celery call failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")

    def celery_workers(self) -> list[str]:
        """The Celery node names that answer a ping now."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            answers = self.celery("app.control.ping(timeout=2.0)")
            return sorted(name for answer in answers for name in answer)
        return []

    def workload_seconds(self, since: float, until: float) -> list[float]:
        """How long each Celery workload held a worker slot (Celery's "succeeded in N s", from
        the workers' logs), for the workloads that ended between `since` and `until` (time.time())."""
        found = []
        for name in WORKERS.values():
            process = self.processes.get(name)
            if process is None or not process.log_file.exists():
                continue
            for line in process.log_file.read_text(errors="replace").splitlines():
                match = _SUCCEEDED.match(line)
                if match and since <= datetime.fromisoformat(match.group(1)).timestamp() <= until:
                    found.append(float(match.group(2)))
        return found

    # -- CPU -----------------------------------------------------------------------------------

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each component's whole process tree:
        every live process's own and its reaped children's, so a task process that has
        ended still counts (in the pool process that waited for it)."""
        found: dict[str, float] = {}
        for name, process in self.processes.items():
            pid = process.pid()
            if pid is None:
                continue
            total = 0.0
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        t = proc.cpu_times()
                        total += t.user + t.system + t.children_user + t.children_system
            found[name] = total
        return found


@contextlib.contextmanager
def multihost_stack(
    work: Path,
    model_dir: Path,
    workers: Iterable[str] = tuple(WORKERS),
    sysctls: dict[str, str] | None = None,
    airflow_env: dict[str, str] | None = None,
    broker_role: str = BROKER_ROLE,
) -> Iterator[MultihostStack]:
    """The rehearsal started on its hosts (with `workers` running); every process stopped and
        every host deleted afterwards, also when the body raises. `airflow_env`: settings added to
        every Airflow process (e.g. AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL); `broker_role`: the
    Redis user of the Celery broker (see BROKER_ROLE)."""
    pg_dir = Path(tempfile.mkdtemp(prefix="onbt-pg-"))
    try:
        with network(HOSTS) as net:
            say(f"network: {', '.join(f'{h.name}={h.ip}' for h in net.hosts.values())}")
            for key, value in (sysctls or {}).items():
                for host in HOSTS:
                    net.sysctl(host, key, value)
            stack = MultihostStack(net, work, model_dir, pg_dir, airflow_env, broker_role)
            try:
                stack.start(workers)
                yield stack
            finally:
                stack.stop()
    finally:
        shutil.rmtree(pg_dir, ignore_errors=True)


# -- the worker cut ------------------------------------------------------------------------------


@dataclass
class CutOutcome:
    """What happened around one worker's link going down mid-task (times: time.time())."""

    worker: str
    signups: list[str]  # every event id published, warm-up and after the heal included
    victim: TaskRow | None  # the task found running on the worker when its link went down
    cut_at: float
    healed_at: float
    victim_decided_at: float | None
    victim_tries: list[TaskRow]
    rejoined_after_s: float | None  # from the heal until the worker answered a Celery ping
    ran_after_heal: int  # tasks the worker started after the heal
    decided: Decided
    runs: Counter[str]
    tasks: list[TaskRow]
    dead_letters: int

    @property
    def decision_after_cut_s(self) -> float | None:
        return None if self.victim_decided_at is None else self.victim_decided_at - self.cut_at

    def tasks_per_host(self) -> Counter[str]:
        return Counter(t.hostname or "?" for t in self.tasks if t.state == "success")


def rehearse_worker_cut(
    stack: MultihostStack,
    signups: int = 30,
    rate: float = 2.0,
    cut_s: float = 60.0,
    host: str = "workera",
    after_heal: int = 10,
    timeout_s: float = 300.0,
) -> CutOutcome:
    """Signups at `rate`; once `host`'s worker holds a running onboarding task, its link goes
    down for `cut_s` while publishing goes on; then it comes back, and `after_heal` more
    signups are published at once (some of which it should run). Waits until everything is
    decided (at most `timeout_s` per wait) and returns what it saw."""
    worker = WORKERS[host]
    say("warm-up: 4 signups")
    warm = stack.publish(4)
    stack.wait_decided(warm, timeout_s)
    published: list[str] = []
    done = False

    def publisher() -> None:
        nonlocal done
        client = stack.redis_client("app")
        rng = random.Random(1000)
        began = time.monotonic()
        try:
            for i in range(signups):
                time.sleep(max(0.0, began + i / rate - time.monotonic()))
                event = new_signup(rng=rng)
                publish_signup(client, stack.streams.signups_stream, event)
                published.append(event["event_id"])
        finally:
            client.close()
            done = True

    say(f"flow: {signups} signups at {rate:g}/s; waiting for a task running on {worker}")
    thread = stack.net.thread("app", publisher, "publisher")
    victim = None
    while victim is None:
        if len(published) >= 3:
            running = stack.running_on(worker)
            if running:
                victim = running[0]
                break
        if done:
            break
        time.sleep(0.1)
    if victim is None:
        thread.join()
        raise AssertionError(f"no task was seen running on {worker} while {signups} signups were published")
    cut_at = stack.isolate(host)
    say(f"cut: {host}'s link down while it runs {victim.event_id} (try {victim.try_number}); {cut_s:.0f} s")
    victim_decided_at = None
    while time.time() < cut_at + cut_s:
        if victim_decided_at is None:
            victim_decided_at = stack.decided().published_at.get(victim.event_id)
            if victim_decided_at is not None:
                say(f"cut: {victim.event_id} decided {victim_decided_at - cut_at:.1f} s after the cut")
        time.sleep(1.0)
    thread.join()
    healed_at = stack.rejoin(host)
    say(f"heal: {host}'s link up again; waiting for {worker} to answer")
    rejoined_after_s = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if f"{worker}@{worker}" in stack.celery_workers():
            rejoined_after_s = time.time() - healed_at
            break
        time.sleep(2.0)
    say(f"heal: {worker} answers a ping {rejoined_after_s} s after the heal; {after_heal} more signups")
    more = stack.publish(after_heal)
    everything = [*warm, *published, *more]
    decided = stack.wait_decided(everything, timeout_s)
    if victim_decided_at is None:
        victim_decided_at = decided.published_at.get(victim.event_id)
    time.sleep(3)  # a late duplicate, if any, would show now
    decided = stack.decided()
    tasks = stack.tasks()
    heal_dt = datetime.fromtimestamp(healed_at).astimezone()
    return CutOutcome(
        worker=worker,
        signups=everything,
        victim=victim,
        cut_at=cut_at,
        healed_at=healed_at,
        victim_decided_at=victim_decided_at,
        victim_tries=sorted((t for t in tasks if t.run_id == victim.run_id), key=lambda t: t.try_number),
        rejoined_after_s=rejoined_after_s,
        ran_after_heal=sum(1 for t in tasks if t.hostname == worker and t.start is not None and t.start > heal_dt),
        decided=decided,
        runs=stack.runs_per_event(),
        tasks=tasks,
        dead_letters=stack.dead_letters(),
    )
