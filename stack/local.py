"""The local deployment: every part of the service on this machine, under `stack.supervisor`.

Start order (each waits for the previous one to be healthy):
    redis (only when none answers) -> realtime Airflow -> batch Airflow -> listeners
    -> rq worker -> rq cron -> metrics endpoints -> SLA page -> review page
The service table is `Stack.services()`; `stop` goes in the reverse order.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from archiver.settings import ArchiveSettings
from onboarding import intake, redis_version
from onboarding.functions import ensure_loaded
from onboarding.redis_clients import Role, connect
from onboarding.settings import STACK_ENV_FILE, redacted_url
from risk.artifacts import current_pointer, load_model
from risk.errors import RiskError
from risk.settings import RiskSettings
from stack.errors import StackError
from stack.instance import AirflowInstance, InstanceSpec, current_env
from stack.processes import ManagedProcess, ProcessRecord, end_processes, stack_id, tagged
from stack.review import DEMO_REVIEWER, ReviewLogins
from stack.settings import StackSettings
from stack.supervisor import Plan, Service, read_state, restart_request

REALTIME_DAGS = ("onboarding",)
BATCH_DAGS = ("risk_model_retrain", "risk_drift")


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


class Stack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        home = settings.home
        self.run_dir = home / "run"
        self.log_dir = home / "logs"  # every service's log, in one place
        risk_settings = RiskSettings.from_env()
        self.model_dir = risk_settings.model_dir
        self.model_verifier = risk_settings.verifier()  # what the realtime task will check
        self.review_logins = ReviewLogins(home)
        self.base_env = {
            **current_env(),
            "ONBOARDING_HOME": str(home),
            "REDIS_URL": settings.redis_url,
            "RISK_MODEL_DIR": str(self.model_dir),
        }
        self.realtime = self._instance(
            "realtime",
            settings.realtime_api_port,
            settings.realtime_scheduler_health_port,
            settings.realtime_log_server_port,
        )
        self.batch = self._instance(
            "batch", settings.batch_api_port, settings.batch_scheduler_health_port, settings.batch_log_server_port
        )
        self.supervisor = ManagedProcess(
            name="supervisor",
            argv=[sys.executable, "-m", "stack.supervisor", str(self.plan_file)],
            env=current_env(),
            run_dir=self.run_dir,
            log_dir=self.log_dir,
        )

    def _instance(self, kind: str, api_port: int, health_port: int, log_server_port: int) -> AirflowInstance:
        db = self.settings.database_url if kind == "realtime" else self.settings.batch_database_url
        spec = InstanceSpec.from_deploy(kind, self.settings.home / kind, api_port, health_port, db)
        folder = self.settings.realtime_dags_folder if kind == "realtime" else self.settings.batch_dags_folder
        spec = dataclasses.replace(
            spec,
            dags_folder=folder or spec.dags_folder,
            run_dir=self.run_dir,
            log_dir=self.log_dir,
            extra_env={"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_server_port)},
        )
        return AirflowInstance(spec, self.base_env)

    @property
    def plan_file(self) -> Path:
        return self.run_dir / "plan.json"

    def listener_ports(self) -> list[int]:
        return [self.settings.listener_metrics_port + i for i in range(self.settings.listener_processes)]

    # -- the service table -----------------------------------------------------------------

    def services(self, start_redis: bool) -> list[Service]:
        """The process table, in start order."""
        bin_dir = Path(sys.executable).parent
        table: list[Service] = []
        if start_redis:
            table.append(
                Service(
                    "redis",
                    [
                        "redis-server",
                        *("--bind", "127.0.0.1", "--port", str(_redis_port(self.settings.redis_url))),
                        # AOF, fsync every second: a crash loses at most a second of signups.
                        *("--save", "", "--appendonly", "yes", "--dir", str(self.settings.home / "redis")),
                    ],
                    current_env(),
                    health=f"redis-functions:{self.settings.redis_url}",
                    ready_timeout_s=20,
                )
            )
        for instance in (self.realtime, self.batch):
            env = instance.env()
            api, scheduler, dag_processor = instance.processes()  # stack.instance.COMPONENTS order
            table += [
                Service(
                    api.name,
                    api.argv,
                    env,
                    health=f"http:{instance.spec.api_url}/api/v2/monitor/health",
                    ready_timeout_s=240,
                ),
                Service(
                    scheduler.name,
                    scheduler.argv,
                    env,
                    health=f"http:http://127.0.0.1:{instance.spec.scheduler_health_port}/health",
                    ready_timeout_s=180,
                ),
                Service(dag_processor.name, dag_processor.argv, env, health="alive", alive_s=3),
            ]
        # The apps' intakes forwarded into `signups` and the streams' retention (intake/): its
        # own process, so the listeners, which parse the payloads, never trim or write signups.
        intake_port = self.settings.intake_metrics_port
        table.append(
            Service(
                "intake",
                [sys.executable, "-m", "intake"],
                {**self.base_env, "INTAKE_METRICS_PORT": str(intake_port)},
                health=f"http:http://127.0.0.1:{intake_port}/healthz",
                ready_timeout_s=30,
                stop_timeout_s=10,  # it stops within INTAKE_BLOCK_MS (1 s)
            )
        )
        for i, port in enumerate(self.listener_ports(), start=1):
            table.append(
                Service(
                    f"listener-{i}",
                    [sys.executable, "-m", "listener"],
                    {
                        **self.base_env,
                        "AIRFLOW_API_URL": self.realtime.spec.api_url,
                        "AIRFLOW_USERNAME": "listener",
                        "AIRFLOW_PASSWORD_FILE": str(self.realtime.listener_password_file),
                        "LISTENER_METRICS_PORT": str(port),
                        "LISTENER_CONSUMER": f"local-listener-{i}",  # one consumer group, N consumers
                    },
                    health=f"http:http://127.0.0.1:{port}/healthz",
                    ready_timeout_s=60,
                    stop_timeout_s=40,  # it finishes the entries in hand
                )
            )
        archive_env = {
            **self.base_env,
            "ARCHIVE_REALTIME_DB_URL": self.realtime.database_url,
            "ARCHIVE_BATCH_DB_URL": self.batch.database_url,
            "ARCHIVE_METRICS_PORT": str(self.settings.archive_metrics_port),
        }
        redis_url = self.settings.redis_url
        queue = ArchiveSettings.from_env(archive_env).queue
        table += [
            Service("rq-worker", [str(bin_dir / "rq"), "worker", queue, "--url", redis_url], archive_env),
            Service("rq-cron", [str(bin_dir / "rq"), "cron", "archiver.cron", "--url", redis_url], archive_env),
            # Its /healthz is red until the first weekly run succeeded; /metrics says it serves.
            Service(
                "archive-metrics",
                [str(bin_dir / "onboarding-archive"), "serve-metrics"],
                archive_env,
                health=f"http:http://127.0.0.1:{self.settings.archive_metrics_port}/metrics",
                ready_timeout_s=30,
            ),
            # The SLA service: page, end-to-end latency metrics, overdue signups, both
            # schedulers' heartbeats and the archive's status (docs/sla.md).
            Service(
                "sla",
                [str(bin_dir / "onboarding-sla"), "serve"],
                {
                    **archive_env,
                    "AIRFLOW_API_URL": self.realtime.spec.api_url,
                    # Its own read-only Airflow user (ops/access.py SLA_ROLE).
                    "AIRFLOW_USERNAME": "sla",
                    "AIRFLOW_PASSWORD_FILE": str(self.realtime.sla_password_file),
                    "SLA_PORT": str(self.settings.sla_port),
                    "SLA_PAGE_TOKEN_FILE": str(self.sla_page_token_file),
                    "SLA_AIRFLOW_INSTANCES": f"realtime={self.realtime.spec.api_url},batch={self.batch.spec.api_url}",
                    "ARCHIVE_DIR": str(ArchiveSettings.from_env(archive_env).archive_dir),
                },
                health=f"http:http://127.0.0.1:{self.settings.sla_port}/healthz",
                ready_timeout_s=60,
            ),
            # The review page: reviewers decide the `review` cases there (docs/review.md).
            Service(
                "review",
                [str(bin_dir / "onboarding-review"), "serve"],
                {**self.base_env, **self.review_env()},
                health=f"http:{self.review_url}/readyz",
                ready_timeout_s=30,
            ),
        ]
        return table

    @property
    def sla_page_token_file(self) -> Path:
        """The SLA page's token (0600), made once by `up`: the page and /api/sla ask for it."""
        return self.settings.home / "sla-page.token"

    def prepare_sla_page_token(self) -> str:
        """The token in `sla_page_token_file`, generated when there is none; kept across `up`s."""
        path = self.sla_page_token_file
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
        os.replace(tmp, path)
        return token

    @property
    def review_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.review_port}"

    def review_env(self) -> dict[str, str]:
        """The review page's settings: its address and the login files `up` makes."""
        return {"REVIEW_HOST": "127.0.0.1", "REVIEW_PORT": str(self.settings.review_port), **self.review_logins.env()}

    def operator_env(self) -> dict[str, str]:
        """What an operator command run by hand needs to reach this stack (issue 20): the same
        Redis, metadata databases, archive and Airflow as the services, the admin's credential
        by file. `onboarding.settings.use_stack_defaults` reads it for variables left unset."""
        archive = ArchiveSettings.from_env(
            {**self.base_env, "ARCHIVE_REALTIME_DB_URL": self.realtime.database_url}
        ).archive_dir
        env = {
            "REDIS_URL": self.settings.redis_url,
            "ARCHIVE_REALTIME_DB_URL": self.realtime.database_url,
            "ARCHIVE_BATCH_DB_URL": self.batch.database_url,
            "ARCHIVE_DIR": str(archive),
            "RISK_MODEL_DIR": str(self.model_dir),
            "AIRFLOW_API_URL": self.realtime.spec.api_url,
            # `onboarding-sla redrive` clears runs: an operator's command, the admin's credential.
            "AIRFLOW_USERNAME": "admin",
            "AIRFLOW_PASSWORD_FILE": str(self.realtime.admin_password_file),
            "AIRFLOW_ADMIN_USERNAME": "admin",
            "AIRFLOW_ADMIN_PASSWORD_FILE": str(self.realtime.admin_password_file),
            "SLA_AIRFLOW_INSTANCES": f"realtime={self.realtime.spec.api_url},batch={self.batch.spec.api_url}",
            # `onboarding-review list|decide|add-reviewer|check` by hand: the page's queue and logins.
            **self.review_env(),
        }
        for key in ("SIGNUPS_STREAM", "DECISIONS_STREAM", "DEAD_LETTER_STREAM"):
            if key in self.base_env:
                env[key] = self.base_env[key]
        return env

    def write_operator_env(self) -> None:
        path = self.settings.home / STACK_ENV_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.operator_env(), fh, indent=2)
        os.replace(tmp, path)

    # -- commands ---------------------------------------------------------------------------

    def redis_answers(self) -> bool:
        try:
            return bool(connect(self.settings.redis_url, Role.PROBE).ping())
        except redis.RedisError:
            return False

    def redis_version_note(self) -> str | None:
        """`Redis X.Y.Z`, with a loud warning when the release has the Lua CVEs
        (onboarding/redis_version.py): the local stack takes whatever Redis answers."""
        try:
            info = connect(self.settings.redis_url, Role.CLI).info("server")
            version = redis_version.parse(str(info["redis_version"]))
        except (redis.RedisError, KeyError, ValueError):
            return None
        note = f"Redis {'.'.join(map(str, version))}"
        warning = redis_version.warning(version)
        return f"{note}; {warning}" if warning else note

    def ensure_model(self) -> None:
        try:
            # Refuses a CURRENT or a model not signed with the key the realtime task checks (from
            # a release before models or pointers were signed), or one that no longer fits the schema.
            version = current_pointer(self.model_dir, self.model_verifier).version
            load_model(self.model_dir, version, verifier=self.model_verifier)
            step(f"risk model {version}")
            return
        except RiskError as err:
            step(f"no usable risk model ({err}); training one (about a minute)")
        from risk.cli import train_main

        if train_main(["--repeats", "1"]) != 0:
            raise StackError("training the risk model failed")

    def up(self, timeout_s: float = 900) -> None:
        if self.supervisor.running():
            step(f"already up (supervisor pid {self.supervisor.pid()}); see `status`")
            return
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self._end_orphans("left by an earlier run whose supervisor died")
        start_redis = not self.redis_answers()
        if start_redis:
            if shutil.which("redis-server") is None:
                raise StackError(
                    f"no Redis answers at {redacted_url(self.settings.redis_url)} and redis-server is not installed; "
                    "install it (apt-get install redis-server) or set REDIS_URL"
                )
            (self.settings.home / "redis").mkdir(parents=True, exist_ok=True)
            step(f"no Redis at {redacted_url(self.settings.redis_url)}: the supervisor starts redis-server")
        else:
            step(f"Redis answers at {redacted_url(self.settings.redis_url)}")
            # The service's Redis Functions, before any component runs (an external Redis
            # set up with `onboarding-redis-acl apply` has them: then this changes nothing).
            ensure_loaded(connect(self.settings.redis_url, Role.CLI))
            intake.ensure_loaded(connect(self.settings.redis_url, Role.CLI))  # per-app intake forwarder
        self.ensure_model()
        db = "PostgreSQL" if self.settings.database_url else "SQLite"
        step(f"preparing the realtime and batch Airflow instances ({db} metadata) in {self.settings.home}")
        with ThreadPoolExecutor(2) as pool:  # two databases: migrate them side by side
            list(pool.map(lambda i: (i.prepare(), i.migrate()), (self.realtime, self.batch)))
        self.review_logins.prepare()
        self.prepare_sla_page_token()
        self.write_operator_env()
        plan = Plan(
            self.services(start_redis),
            self.run_dir,
            self.log_dir,
            log_max_bytes=self.settings.log_max_bytes,
            log_backups=self.settings.log_backups,
        )
        plan.write(self.plan_file)
        (self.run_dir / "state.json").unlink(missing_ok=True)
        self.supervisor.start()
        step(f"supervisor started (pid {self.supervisor.pid()}); starting {len(plan.services)} services in order")
        self._wait_running(plan, timeout_s)
        self.realtime.wait_ready(REALTIME_DAGS, timeout_s=240)
        self.batch.wait_ready(BATCH_DAGS, timeout_s=240, unpaused=False)
        note = self.redis_version_note()
        if note is not None:
            step(note)
            if "WARNING" in note:
                print(f"\n*** {note} ***\n", file=sys.stderr, flush=True)
        step(f"realtime Airflow {self.realtime.spec.api_url}, batch Airflow {self.batch.spec.api_url}")
        step(f"listeners: metrics and health on ports {', '.join(map(str, self.listener_ports()))}")
        step(f"intake (the apps' intakes, retention): metrics and health on port {self.settings.intake_metrics_port}")
        step(
            f"SLA page http://127.0.0.1:{self.settings.sla_port}/sla (metrics on /metrics; the page asks for the "
            f"token in {self.sla_page_token_file}: any user name, the token as password, or a bearer token)"
        )
        step(
            f"review page {self.review_url}/ (user {DEMO_REVIEWER}, password in "
            f"{self.review_logins.password_file}); `onboarding-review list` shows the queue"
        )

    def _wait_running(self, plan: Plan, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        announced: set[str] = set()
        while time.monotonic() < deadline:
            state = read_state(self.run_dir) or {}
            for name, service in state.get("services", {}).items():
                if service["state"] == "up" and name not in announced:
                    announced.add(name)
                    step(f"{name} up")
            if state.get("phase") == "running":
                return
            if state.get("phase") in ("failed", "stopped") or not self.supervisor.running():
                failed = [n for n, s in state.get("services", {}).items() if s["state"] == "failed"]
                tails = "\n".join(f"--- {n} ---\n{self._tail(n)}" for n in failed)
                raise StackError(f"the stack did not start ({', '.join(failed) or 'supervisor'} failed):\n{tails}")
            time.sleep(0.5)
        self.down()
        raise StackError(f"the stack was not up after {timeout_s:.0f} s; stopped it")

    def _tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join((self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def down(self) -> None:
        if self.supervisor.stop(timeout_s=300):
            step("stopped every service (reverse start order) and the supervisor")
        self._end_orphans("left behind by a supervisor that had died")

    def _end_orphans(self, why: str) -> None:
        """What a killed supervisor left running: each whole tree its pid files record (pid,
        process group, start time, tag) and its last snapshot of each tree names, in the
        reverse start order; then every process still tagged as this stack's."""
        state = read_state(self.run_dir) or {}
        for name, service in reversed(list(state.get("services", {}).items())):
            process = ManagedProcess(name, [], {}, self.run_dir, self.log_dir)
            seen = [(int(pid), start) for pid, start in service.get("seen") or []]
            if process.stop(timeout_s=30, seen=seen):
                step(f"stopped {name} ({why})")
        leftover = tagged(stack_id(self.run_dir))
        if leftover:
            step(f"ending {len(leftover)} more process(es) of this stack ({why})")
            end_processes(leftover, timeout_s=10)

    def restart(self, name: str, timeout_s: float | None = None) -> ServiceStatus:
        """Restart one service under the running supervisor: SIGTERM to its process tree, wait
        until it has stopped (it finishes what it holds: a listener the entries in hand), start
        it again, wait until it is healthy. The other services run on untouched."""
        state = read_state(self.run_dir)
        if state is None or state.get("phase") != "running" or not self.supervisor.running():
            raise StackError("the stack is not running here (`onboarding-stack up` first)")
        try:
            plan = {s.name: s for s in Plan.read(self.plan_file).services}
        except (OSError, ValueError, KeyError) as err:
            raise StackError(f"cannot read the stack's plan {self.plan_file}: {err}") from err
        if name not in plan:
            raise StackError(f"no service named {name!r}; known: {', '.join(plan)}")
        service = plan[name]
        before = state["services"][name]
        budget_s = timeout_s if timeout_s is not None else service.stop_timeout_s + service.ready_timeout_s + 30
        restart_request(self.run_dir, name).write_text(str(time.time()))
        step(f"restarting {name} (pid {before.get('pid')}): SIGTERM, wait up to {service.stop_timeout_s:.0f} s, start")
        deadline = time.monotonic() + budget_s
        stopped = False
        while time.monotonic() < deadline:
            now = (read_state(self.run_dir) or {}).get("services", {}).get(name, {})
            if not stopped and now.get("restarts", 0) > before.get("restarts", 0):
                stopped = True
                step(f"{name} stopped; started again (pid {now.get('pid')}), waiting for it to be healthy")
            if stopped and now.get("state") == "up":
                found = next(s for s in self.statuses() if s.name == name)
                if found.healthy:
                    step(f"{name} up (pid {found.pid})")
                    return found
            if not self.supervisor.running():
                raise StackError(f"the supervisor stopped while restarting {name}")
            time.sleep(0.3)
        restart_request(self.run_dir, name).unlink(missing_ok=True)
        raise StackError(f"{name} was not up again within {budget_s:.0f} s:\n{self._tail(name)}")

    def statuses(self) -> list[ServiceStatus]:
        """Each service's state: `up` only when its process runs (the recorded one, not a
        reused pid), the supervisor counts it up and its health check passes now."""
        state = read_state(self.run_dir)
        if state is None:
            return [ServiceStatus("supervisor", None, False, False, "down (never started here)")]
        supervisor = self.supervisor.pid()
        text = f"up (pid {supervisor})" if supervisor else "down"
        out = [ServiceStatus("supervisor", supervisor, bool(supervisor), bool(supervisor), text)]
        try:
            checks = {s.name: s for s in Plan.read(self.plan_file).services}
        except (OSError, ValueError, KeyError):
            checks = {}
        now = time.time()
        for name, service in state["services"].items():
            record = ProcessRecord.read(self.run_dir / f"{name}.pid")
            alive = record.pid if record is not None and record.leader_alive() else None
            restarts = f", {service['restarts']} restart(s)" if service["restarts"] else ""
            check = checks.get(name)
            port = _port_of(check.health) if check is not None else None
            started = service.get("started_at")
            uptime_s = round(now - started, 1) if alive and started else None
            healthy = False
            if alive and service["state"] == "up":
                healthy = check is None or check.healthy()
                if healthy:
                    text = f"up (pid {alive}{restarts})"
                else:
                    text = f"unhealthy (pid {alive}{restarts}): {check.health if check else ''} does not answer"
            elif alive:
                text = f"{service['state']} (pid {alive}{restarts})"
            else:
                text = "down" if service["state"] in ("up", "stopped", "pending") else service["state"]
            running = alive is not None
            out.append(ServiceStatus(name, alive, running, healthy, text, port, uptime_s, service["restarts"]))
        if "redis" not in {s.name for s in out}:
            answers = self.redis_answers()
            text = f"up (external, {redacted_url(self.settings.redis_url)})" if answers else "down"
            out.append(ServiceStatus("redis", None, answers, answers, text, _redis_port(self.settings.redis_url)))
        redis_status = next(s for s in out if s.name == "redis")
        if redis_status.text.startswith("up"):
            note = self.redis_version_note()
            if note:
                out[out.index(redis_status)] = dataclasses.replace(redis_status, text=f"{redis_status.text}; {note}")
        return out

    def status(self) -> dict[str, str]:
        """Each service's state as one line (`statuses()`)."""
        return {s.name: s.text for s in self.statuses()}

    def log_files(self) -> list[Path]:
        return sorted(self.log_dir.glob("*.log"))


@dataclasses.dataclass(frozen=True)
class ServiceStatus:
    """One line of `onboarding-stack status` (`--json`: these fields)."""

    name: str
    pid: int | None
    running: bool  # its recorded process runs
    healthy: bool  # the supervisor counts it up and its health check answers now
    text: str  # the line `status` prints
    port: int | None = None  # where its health check (HTTP, Redis) answers
    uptime_s: float | None = None  # since the supervisor last started it
    restarts: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "pid": self.pid,
            "running": self.running,
            "healthy": self.healthy,
            "port": self.port,
            "uptime_s": self.uptime_s,
            "restarts": self.restarts,
            "state": self.text,
        }


def _port_of(health: str) -> int | None:
    from urllib.parse import urlparse

    kind, _, target = health.partition(":")
    if kind == "http":
        return urlparse(target).port
    if kind in ("redis", "redis-functions"):
        return _redis_port(target)
    return None


def _redis_port(url: str) -> int:
    from urllib.parse import urlparse

    return urlparse(url).port or 6379
