"""The local deployment: every part of the service on this machine, under `stack.supervisor`.

Start order (each waits for the previous one to be healthy):
    redis (only when none answers) -> realtime Airflow -> batch Airflow -> listeners
    -> rq worker -> rq cron -> metrics endpoints
The service table is `Stack.services()`; `stop` goes in the reverse order.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from archiver.settings import ArchiveSettings
from onboarding.settings import STACK_ENV_FILE, redacted_url
from risk.artifacts import current_version, load_model
from risk.errors import RiskError
from risk.settings import RiskSettings
from stack.errors import StackError
from stack.instance import AirflowInstance, InstanceSpec, current_env
from stack.processes import ManagedProcess, ProcessRecord, end_processes, stack_id, tagged
from stack.settings import StackSettings
from stack.supervisor import Plan, Service, read_state

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
        self.model_dir = RiskSettings.from_env().model_dir
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
                    health=f"redis:{self.settings.redis_url}",
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
                    "AIRFLOW_USERNAME": "listener",
                    "AIRFLOW_PASSWORD_FILE": str(self.realtime.listener_password_file),
                    "SLA_PORT": str(self.settings.sla_port),
                    "SLA_AIRFLOW_INSTANCES": f"realtime={self.realtime.spec.api_url},batch={self.batch.spec.api_url}",
                    "ARCHIVE_DIR": str(ArchiveSettings.from_env(archive_env).archive_dir),
                },
                health=f"http:http://127.0.0.1:{self.settings.sla_port}/healthz",
                ready_timeout_s=60,
            ),
        ]
        return table

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
            return bool(redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=2).ping())
        except redis.RedisError:
            return False

    def ensure_model(self) -> None:
        try:
            version = current_version(self.model_dir)
            load_model(self.model_dir, version)  # refuses a model that no longer fits the schema
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
        self.ensure_model()
        db = "PostgreSQL" if self.settings.database_url else "SQLite"
        step(f"preparing the realtime and batch Airflow instances ({db} metadata) in {self.settings.home}")
        with ThreadPoolExecutor(2) as pool:  # two databases: migrate them side by side
            list(pool.map(lambda i: (i.prepare(), i.migrate()), (self.realtime, self.batch)))
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
        step(f"realtime Airflow {self.realtime.spec.api_url}, batch Airflow {self.batch.spec.api_url}")
        step(f"listeners: metrics and health on ports {', '.join(map(str, self.listener_ports()))}")
        step(f"SLA page http://127.0.0.1:{self.settings.sla_port}/sla (metrics on /metrics)")

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

    def status(self) -> dict[str, str]:
        """Each service's state: `up` only when its process runs (the recorded one, not a
        reused pid), the supervisor counts it up and its health check passes now."""
        state = read_state(self.run_dir)
        if state is None:
            return {"supervisor": "down (never started here)"}
        supervisor = self.supervisor.pid()
        out = {"supervisor": f"up (pid {supervisor})" if supervisor else "down"}
        try:
            checks = {s.name: s for s in Plan.read(self.plan_file).services}
        except (OSError, ValueError, KeyError):
            checks = {}
        for name, service in state["services"].items():
            record = ProcessRecord.read(self.run_dir / f"{name}.pid")
            alive = record.pid if record is not None and record.leader_alive() else None
            restarts = f", {service['restarts']} restart(s)" if service["restarts"] else ""
            if alive and service["state"] == "up":
                check = checks.get(name)
                if check is None or check.healthy():
                    out[name] = f"up (pid {alive}{restarts})"
                else:
                    out[name] = f"unhealthy (pid {alive}{restarts}): {check.health} does not answer"
            elif alive:
                out[name] = f"{service['state']} (pid {alive}{restarts})"
            else:
                out[name] = "down" if service["state"] in ("up", "stopped", "pending") else service["state"]
        if "redis" not in out:
            out["redis"] = f"up (external, {redacted_url(self.settings.redis_url)})" if self.redis_answers() else "down"
        return out

    def log_files(self) -> list[Path]:
        return sorted(self.log_dir.glob("*.log"))


def _redis_port(url: str) -> int:
    from urllib.parse import urlparse

    return urlparse(url).port or 6379
