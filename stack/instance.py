"""One Airflow instance on this machine: its home, secrets, database and three components.

The instance's tuned settings live in `deploy/<name>/airflow.cfg` (copied into its home);
this module only adds what differs per machine (paths, ports, database URL, secrets).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from onboarding import keys
from onboarding.airflow import AirflowClient, AirflowSettings
from onboarding.errors import AirflowError
from stack.errors import StackError
from stack.processes import ManagedProcess
from stack.settings import PROJECT_ROOT

COMPONENTS = ("api-server", "scheduler", "dag-processor")


@dataclass(frozen=True)
class InstanceSpec:
    """Where an instance lives and how it is reached."""

    name: str
    home: Path
    config_file: Path
    dags_folder: Path
    api_port: int
    scheduler_health_port: int
    database_url: str | None = None  # None: SQLite in the instance's home
    local_settings: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # Where the components' pid and log files go (default: run/ and logs/ in the home);
    # the local stack keeps every service's log in one folder.
    run_dir: Path | None = None
    log_dir: Path | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @classmethod
    def from_deploy(
        cls,
        kind: str,
        home: Path,
        api_port: int,
        scheduler_health_port: int,
        database_url: str | None = None,
        name: str | None = None,
    ) -> InstanceSpec:
        """The spec of a "realtime" or "batch" instance: its config and local settings from
        deploy/<kind>/, its DAGs from dags/<kind>/."""
        deploy = PROJECT_ROOT / "deploy" / kind
        local_settings = deploy / "airflow_local_settings.py"
        return cls(
            name=name or kind,
            home=home,
            config_file=deploy / "airflow.cfg",
            dags_folder=PROJECT_ROOT / "dags" / kind,
            api_port=api_port,
            scheduler_health_port=scheduler_health_port,
            database_url=database_url,
            local_settings=local_settings if local_settings.is_file() else None,
        )


class AirflowInstance:
    def __init__(self, spec: InstanceSpec, base_env: dict[str, str]) -> None:
        self.spec = spec
        self.base_env = base_env

    @property
    def home(self) -> Path:
        return self.spec.home

    @property
    def database_url(self) -> str:
        return self.spec.database_url or f"sqlite:///{self.home / 'airflow.db'}"

    def _secrets(self) -> dict[str, str]:
        path = self.home / "secrets.json"
        values = json.loads(path.read_text()) if path.exists() else {}
        # Generated at first start, never a default; a home from before a secret existed
        # gets it added (security: the FAB session key is shared like the JWT secret).
        wanted = {
            "jwt_secret": lambda: secrets.token_urlsafe(48),
            "api_secret_key": lambda: secrets.token_urlsafe(48),
            "admin_password": lambda: secrets.token_urlsafe(18),
            "listener_password": lambda: secrets.token_urlsafe(24),
            "sla_password": lambda: secrets.token_urlsafe(24),
        }
        missing = {key: make() for key, make in wanted.items() if key not in values}
        if missing:
            values.update(missing)
            self.home.mkdir(parents=True, exist_ok=True)
            _write_private(path, json.dumps(values))
        return values

    @property
    def uses_fab(self) -> bool:
        """Whether the instance's config selects the FAB auth manager (users live in its database)."""
        return "FabAuthManager" in self.spec.config_file.read_text()

    @property
    def passwords_file(self) -> Path:
        return self.home / "passwords.json"

    @property
    def listener_password_file(self) -> Path:
        return self.home / "listener.password"

    @property
    def sla_password_file(self) -> Path:
        """The SLA service's read-only Airflow user's password (0600; ops/access.py SLA_ROLE)."""
        return self.home / "sla.password"

    @property
    def admin_password_file(self) -> Path:
        """The admin's password alone (0600), for operator commands (AIRFLOW_ADMIN_PASSWORD_FILE)."""
        return self.home / "admin.password"

    def admin_password(self) -> str:
        return self._secrets()["admin_password"]

    def prepare(self) -> None:
        """Create the home, config, secrets and password files (idempotent)."""
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.spec.config_file, self.home / "airflow.cfg")
        if self.spec.local_settings is not None:
            (self.home / "config").mkdir(exist_ok=True)
            shutil.copyfile(self.spec.local_settings, self.home / "config" / "airflow_local_settings.py")
        values = self._secrets()
        for path, content in (
            (
                self.passwords_file,
                json.dumps({"admin": values["admin_password"], "listener": values["listener_password"]}),
            ),
            (self.listener_password_file, values["listener_password"]),
            (self.sla_password_file, values["sla_password"]),
            (self.admin_password_file, values["admin_password"]),
        ):
            _write_private(path, content)

    def env(self) -> dict[str, str]:
        values = self._secrets()
        return {
            **self.base_env,
            **self.spec.extra_env,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW_CONFIG": str(self.home / "airflow.cfg"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.spec.dags_folder),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
            "AIRFLOW__API__PORT": str(self.spec.api_port),
            "AIRFLOW__API__BASE_URL": self.spec.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.spec.api_url}/execution/",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.spec.scheduler_health_port),
            "AIRFLOW__API_AUTH__JWT_SECRET": values["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": values["api_secret_key"],
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "PYTHONUNBUFFERED": "1",
        }

    def airflow(self, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
        """Run an `airflow` CLI command against this instance; raise with its output on failure."""
        try:
            result = subprocess.run(
                [sys.executable, "-m", "airflow", *args],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as err:
            raise StackError(f"airflow {' '.join(args)} timed out after {timeout_s:.0f} s") from err
        if result.returncode != 0:
            raise StackError(
                f"airflow {' '.join(args)} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}"
            )
        return result

    def migrate(self) -> None:
        if self.database_url.startswith("postgresql"):
            ensure_postgres_database(self.database_url)
        self.airflow("db", "migrate")
        if self.uses_fab:
            self.create_users()
            if self.database_url.startswith("sqlite"):
                use_wal(self.home / "airflow.db")

    def create_users(self) -> None:
        """FAB: the admin, listener and SLA users with their generated passwords, and the
        listener's and SLA service's least-privilege roles (ops/access.py). Idempotent; run
        after every migrate."""
        values = self._secrets()
        env = {
            **self.env(),
            "ACCESS_ADMIN_PASSWORD": values["admin_password"],
            "ACCESS_LISTENER_PASSWORD": values["listener_password"],
            "ACCESS_SLA_PASSWORD": values["sla_password"],
            # The instance's config turns startup syncing off for the api-server; here it must run.
            "AIRFLOW__FAB__UPDATE_FAB_PERMS": "True",
        }
        result = subprocess.run(
            [sys.executable, "-m", "ops.access"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=PROJECT_ROOT,
        )
        if result.returncode != 0:
            raise StackError(f"creating the Airflow users failed:\n{(result.stdout + result.stderr)[-3000:]}")

    def processes(self) -> list[ManagedProcess]:
        env = self.env()
        return [
            ManagedProcess(
                name=f"{self.spec.name}-{component}",
                argv=[sys.executable, "-m", "airflow", component],
                env=env,
                run_dir=self.spec.run_dir or self.home / "run",
                log_dir=self.spec.log_dir or self.home / "logs",
            )
            for component in COMPONENTS
        ]

    def start(self) -> None:
        for process in self.processes():
            process.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        # Scheduler first, so no new task starts while the API goes away.
        for process in sorted(self.processes(), key=lambda p: not p.name.endswith("scheduler")):
            process.stop(timeout_s)

    def status(self) -> dict[str, bool]:
        return {p.name: p.running() for p in self.processes()}

    def client(self, dag_id: str = keys.ONBOARDING_DAG_ID) -> AirflowClient:
        """The REST client as this instance's admin (close it after use)."""
        return AirflowClient(
            AirflowSettings(url=self.spec.api_url, username="admin", password=self.admin_password(), dag_id=dag_id)
        )

    def token(self) -> str:
        """An admin access token for the instance's REST API."""
        client = self.client()
        try:
            return client.token()
        finally:
            client.close()

    def wait_ready(self, dag_ids: tuple[str, ...], timeout_s: float = 180.0, unpaused: bool = True) -> float:
        """Wait until the API answers, the scheduler is healthy and the DAGs are registered
        (and, with `unpaused`, not paused).

        Returns the seconds it took; raises StackError with the components' log tails.
        """
        started = time.monotonic()
        deadline = started + timeout_s
        pending, why = "the api-server", ""
        client = self.client()
        try:
            while time.monotonic() < deadline:
                for process in self.processes():
                    if not process.running():
                        raise StackError(f"{process.name} exited:\n{process.tail(40)}")
                try:
                    if pending == "the api-server":
                        client.health()
                        pending = "the scheduler"
                    if pending == "the scheduler":
                        url = f"http://127.0.0.1:{self.spec.scheduler_health_port}/health"
                        httpx.get(url, timeout=2).raise_for_status()
                        pending = "the DAGs"
                    if pending == "the DAGs":
                        errors = client.import_errors()
                        if errors:
                            raise StackError(
                                f"DAG file {errors[0].get('filename')} does not import:\n"
                                f"{errors[0].get('stack_trace', '')[-2000:]}"
                            )
                        paused = [d for d in dag_ids if client.get_dag(d).get("is_paused")]
                        if not (unpaused and paused):
                            return time.monotonic() - started
                        why = f" (paused: {', '.join(paused)})"
                except (httpx.HTTPError, AirflowError):
                    time.sleep(0.5)
                    continue
                time.sleep(0.5)
        finally:
            client.close()
        tails = "\n".join(f"--- {p.name} ---\n{p.tail(25)}" for p in self.processes())
        raise StackError(
            f"{self.spec.name} Airflow not ready after {timeout_s:.0f} s (waiting for {pending}{why})\n{tails}"
        )


def use_wal(db_file: Path) -> None:
    """SQLite in WAL mode (persistent in the file): readers no longer block writers.

    The FAB auth manager's login path leaves its session's read transaction open after a
    token request; in SQLite's default rollback-journal mode that shared lock blocks every
    commit of the scheduler and of running tasks until the session is next used (seen as
    "database is locked" and a scheduler exit under load). PostgreSQL is unaffected.
    """
    import sqlite3

    with sqlite3.connect(db_file) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def _write_private(path: Path, content: str) -> None:
    """Write a secret readable by the owner only, from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)


def _run_on_server(url: str, statement: str, query: str | None = None) -> None:
    """Run `statement` (with the URL's database name as identifier {}) on the server's
    `postgres` database, unless `query` (given the name) finds a row."""
    import psycopg2
    from psycopg2 import sql
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    try:
        conn = psycopg2.connect(
            host=parsed.host or "127.0.0.1",
            port=parsed.port or 5432,
            user=parsed.username or "postgres",
            password=parsed.password,
            dbname="postgres",
        )
    except psycopg2.Error as err:
        raise StackError(f"cannot reach PostgreSQL at {parsed.host}:{parsed.port or 5432}: {err}") from err
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            if query is not None:
                cur.execute(query, (parsed.database,))
                if cur.fetchone() is not None:
                    return
            cur.execute(sql.SQL(statement).format(sql.Identifier(parsed.database)))
    finally:
        conn.close()


def ensure_postgres_database(url: str) -> None:
    """Create the database named in a PostgreSQL URL if it does not exist yet."""
    _run_on_server(url, "CREATE DATABASE {}", "SELECT 1 FROM pg_database WHERE datname = %s")


def drop_postgres_database(url: str) -> None:
    _run_on_server(url, "DROP DATABASE IF EXISTS {} WITH (FORCE)")


def current_env() -> dict[str, str]:
    return dict(os.environ)
