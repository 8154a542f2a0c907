"""Settings of the metadata archiver, read once from the environment (see docs/archive.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from onboarding import keys
from onboarding.env import Env
from onboarding.errors import ConfigError
from onboarding.settings import default_home


@dataclass(frozen=True)
class InstanceDatabase:
    """One Airflow instance whose metadata is archived: its name (a folder in the store) and URL."""

    name: str
    url: str


@dataclass(frozen=True)
class ArchiveSettings:
    """Defaults under the service's home (`default_home`): the store in archive/, the local
    realtime instance's SQLite database in realtime/airflow.db. Constructed directly, the
    defaults are those of an empty environment."""

    archive_dir: Path = field(default_factory=lambda: default_home({}) / "archive")
    cutoff_days: float = 7.0
    batch_size: int = 2000  # DAG runs (or log/job rows) per copy-verify-delete transaction
    workers: int = 2  # batches moved at once (PostgreSQL; SQLite has one writer): docs/archive.md
    nice: int = 10  # CPU priority of the archiving process, below the realtime instance's
    instances: tuple[InstanceDatabase, ...] = field(default_factory=tuple)
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue: str = "maintenance"
    lock_name: str = keys.ARCHIVE_LOCK
    lock_ttl_s: int = 900  # renewed after every batch; a crashed run frees the lock this long after
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9110
    max_age_days: float = 8.0  # health turns red when the last success is older than this
    log_format: str = "json"
    # The review history stream `<decisions>:review:history` is archived in the same run.
    decisions_stream: str = keys.DECISIONS_STREAM
    # Decision records (archiver/decision_records.py): archived with the same cut-off, kept
    # this many months (US Regulation B: 25), erasure inside that period refused or pseudonymised.
    record_retention_months: int = 25
    record_erasure: str = "refuse"
    record_pseudonym_key: str | None = field(default=None, repr=False)

    def cutoff(self, now: datetime | None = None) -> datetime:
        return (now or datetime.now(UTC)) - timedelta(days=self.cutoff_days)

    def instance(self, name: str) -> InstanceDatabase:
        for instance in self.instances:
            if instance.name == name:
                return instance
        known = ", ".join(i.name for i in self.instances) or "none"
        raise ConfigError(f"no metadata database configured for instance {name!r} (configured: {known})")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ArchiveSettings:
        environ = os.environ if environ is None else environ
        env = Env(environ)
        home = default_home(environ)
        instances = [
            InstanceDatabase("realtime", env.str("ARCHIVE_REALTIME_DB_URL", f"sqlite:///{home}/realtime/airflow.db"))
        ]
        batch_url = env.optional_str("ARCHIVE_BATCH_DB_URL")
        if batch_url:
            instances.append(InstanceDatabase("batch", batch_url))
        for instance in instances:
            if "://" not in instance.url:
                key = f"ARCHIVE_{instance.name.upper()}_DB_URL"
                raise ConfigError(f"{key}={instance.url!r} is not a SQLAlchemy URL")
        log_format = env.str("LOG_FORMAT", cls.log_format)
        if log_format not in ("json", "text"):
            raise ConfigError(f"LOG_FORMAT={log_format!r} must be json or text")
        return cls(
            archive_dir=env.path("ARCHIVE_DIR", home / "archive"),
            cutoff_days=env.float("ARCHIVE_CUTOFF_DAYS", cls.cutoff_days, minimum=0),
            batch_size=env.int("ARCHIVE_BATCH_SIZE", cls.batch_size, minimum=1),
            workers=env.int("ARCHIVE_WORKERS", cls.workers, minimum=1),
            nice=env.int("ARCHIVE_NICE", cls.nice, minimum=0),
            instances=tuple(instances),
            redis_url=env.str("REDIS_URL", cls.redis_url),
            queue=env.str("ARCHIVE_QUEUE", cls.queue),
            lock_name=env.str("ARCHIVE_LOCK_NAME", cls.lock_name),
            lock_ttl_s=env.int("ARCHIVE_LOCK_TTL_S", cls.lock_ttl_s, minimum=10),
            metrics_host=env.str("ARCHIVE_METRICS_HOST", cls.metrics_host),
            metrics_port=env.int("ARCHIVE_METRICS_PORT", cls.metrics_port, minimum=0),
            max_age_days=env.float("ARCHIVE_MAX_AGE_DAYS", cls.max_age_days, minimum=0),
            log_format=log_format,
            decisions_stream=env.str("DECISIONS_STREAM", cls.decisions_stream),
            record_retention_months=env.int("DECISION_RECORD_RETENTION_MONTHS", cls.record_retention_months, minimum=1),
            record_erasure=_erasure_mode(env),
            record_pseudonym_key=_pseudonym_key(env),
        )


def _erasure_mode(env: Env) -> str:
    mode = env.str("DECISION_RECORD_ERASURE", "refuse")
    if mode not in ("refuse", "pseudonymise"):
        raise ConfigError(f"DECISION_RECORD_ERASURE={mode!r} must be refuse or pseudonymise")
    return mode


def _pseudonym_key(env: Env) -> str | None:
    key = env.secret("DECISION_RECORD_PSEUDONYM_KEY")
    if key is None and _erasure_mode(env) == "pseudonymise":
        raise ConfigError(
            "DECISION_RECORD_ERASURE=pseudonymise needs DECISION_RECORD_PSEUDONYM_KEY (or _FILE): "
            "the key of the pseudonyms"
        )
    if key is not None and len(key) < 16:
        raise ConfigError("DECISION_RECORD_PSEUDONYM_KEY is shorter than 16 characters; the value is not shown")
    return key
