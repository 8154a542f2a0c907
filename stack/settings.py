"""Settings of the local stack (`onboarding-stack`), read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from onboarding.env import Env
from onboarding.errors import ConfigError
from onboarding.settings import default_home
from stack.errors import StackError

# The checkout the stack runs: its deploy/ and dags/ folders. Only the local runner may
# know it; the service's data home is onboarding.settings.default_home, as everywhere.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/onboarding_realtime"
POSTGRES_BATCH_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/onboarding_batch"


@dataclass(frozen=True)
class StackSettings:
    """ONBOARDING_HOME (default: var/ in the current directory, so the checkout's var/ when run
    from the checkout root as scripts/demo does) holds every instance's state and logs.

    ONBOARDING_METADATA_DB: `sqlite` (default), `postgres` (a local server, databases
    onboarding_realtime and onboarding_batch) or a full SQLAlchemy URL of the realtime
    database; the batch instance then uses the same server with the database name
    suffixed `_batch` (or ONBOARDING_BATCH_METADATA_DB, a URL).

    REALTIME_DAGS_FOLDER / BATCH_DAGS_FOLDER: each instance's DAG folder (default: the
    checkout's dags/realtime and dags/batch); a team's own batch DAGs go in the batch one,
    next to (a link to) dags/batch/risk_model.py.
    """

    home: Path = field(default_factory=lambda: default_home({}))
    metadata_db: str = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    realtime_api_port: int = 28080
    realtime_scheduler_health_port: int = 28974
    listener_metrics_port: int = 9108  # listener i (0-based) serves on this port + i
    listener_processes: int = 2
    batch_api_port: int = 28090
    batch_scheduler_health_port: int = 28984
    archive_metrics_port: int = 9110
    intake_metrics_port: int = 9118  # onboarding-intake: the apps' intakes and stream retention
    sla_port: int = 9114
    review_port: int = 9116  # the review page (onboarding-review serve)
    # The schedulers serve task logs to the UI on this port (Airflow's default 8793 would
    # make the two instances collide).
    realtime_log_server_port: int = 28793
    batch_log_server_port: int = 28794
    batch_metadata_db: str | None = None
    # Each service's log is rotated (copy and truncate) above this size; N backups kept.
    log_max_bytes: int = 50 * 1024 * 1024
    log_backups: int = 3
    realtime_dags_folder: Path | None = None
    batch_dags_folder: Path | None = None

    @property
    def database_url(self) -> str | None:
        if self.metadata_db == "sqlite":
            return None
        if self.metadata_db == "postgres":
            return POSTGRES_DEFAULT_URL
        return self.metadata_db

    @property
    def batch_database_url(self) -> str | None:
        """The batch instance's own database: never the realtime one."""
        if self.batch_metadata_db:
            return self.batch_metadata_db
        if self.metadata_db == "sqlite":
            return None
        if self.metadata_db == "postgres":
            return POSTGRES_BATCH_URL
        from sqlalchemy.engine import make_url

        url = make_url(self.metadata_db)
        return url.set(database=f"{url.database}_batch").render_as_string(hide_password=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackSettings:
        if not (PROJECT_ROOT / "deploy").is_dir():
            raise StackError(
                f"the local stack runs the Airflow config and DAGs of a source checkout (deploy/, dags/), and "
                f"{PROJECT_ROOT} is none: this is an installed package; run onboarding-stack from a clone of the "
                "repository (scripts/demo)"
            )
        source = os.environ if environ is None else environ
        env = Env(source)
        metadata_db = env.str("ONBOARDING_METADATA_DB", cls.metadata_db)
        if metadata_db not in ("sqlite", "postgres") and "://" not in metadata_db:
            raise ConfigError(f"ONBOARDING_METADATA_DB={metadata_db!r} must be sqlite, postgres or a SQLAlchemy URL")
        return cls(
            home=default_home(source),
            metadata_db=metadata_db,
            redis_url=env.str("REDIS_URL", cls.redis_url),
            realtime_api_port=env.int("REALTIME_API_PORT", cls.realtime_api_port, minimum=1),
            realtime_scheduler_health_port=env.int(
                "REALTIME_SCHEDULER_HEALTH_PORT", cls.realtime_scheduler_health_port, minimum=1
            ),
            listener_metrics_port=env.int("LISTENER_METRICS_PORT", cls.listener_metrics_port, minimum=1),
            listener_processes=env.int("ONBOARDING_LISTENERS", cls.listener_processes, minimum=1),
            batch_api_port=env.int("BATCH_API_PORT", cls.batch_api_port, minimum=1),
            batch_scheduler_health_port=env.int(
                "BATCH_SCHEDULER_HEALTH_PORT", cls.batch_scheduler_health_port, minimum=1
            ),
            archive_metrics_port=env.int("ARCHIVE_METRICS_PORT", cls.archive_metrics_port, minimum=1),
            intake_metrics_port=env.int("INTAKE_METRICS_PORT", cls.intake_metrics_port, minimum=1),
            sla_port=env.int("SLA_PORT", cls.sla_port, minimum=1),
            review_port=env.int("REVIEW_PORT", cls.review_port, minimum=1),
            batch_metadata_db=env.optional_str("ONBOARDING_BATCH_METADATA_DB"),
            realtime_log_server_port=env.int("REALTIME_LOG_SERVER_PORT", cls.realtime_log_server_port, minimum=1),
            batch_log_server_port=env.int("BATCH_LOG_SERVER_PORT", cls.batch_log_server_port, minimum=1),
            log_max_bytes=env.int("ONBOARDING_LOG_MAX_BYTES", cls.log_max_bytes, minimum=1024),
            log_backups=env.int("ONBOARDING_LOG_BACKUPS", cls.log_backups, minimum=0),
            realtime_dags_folder=_folder(env.optional_str("REALTIME_DAGS_FOLDER"), "REALTIME_DAGS_FOLDER"),
            batch_dags_folder=_folder(env.optional_str("BATCH_DAGS_FOLDER"), "BATCH_DAGS_FOLDER"),
        )


def _folder(value: str | None, name: str) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"{name}={value!r} is not a directory")
    return path
