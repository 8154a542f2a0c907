"""SLA service settings, read once from the environment (see docs/configuration.md)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from onboarding import keys
from onboarding.airflow import AirflowSettings
from onboarding.env import Env
from onboarding.errors import ConfigError
from onboarding.settings import StreamSettings

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _parse_instances(raw: str) -> tuple[tuple[str, str], ...]:
    """`realtime=http://host:28080,batch=http://host:28090` -> ((name, url), ...)."""
    pairs = []
    for item in raw.split(","):
        name, sep, url = item.strip().partition("=")
        if not item.strip():
            continue
        if not sep or not name.strip() or not url.strip():
            raise ConfigError(f"SLA_AIRFLOW_INSTANCES item {item.strip()!r} is not name=url")
        pairs.append((name.strip(), url.strip().rstrip("/")))
    return tuple(pairs)


@dataclass(frozen=True)
class SlaSettings:
    """Everything `onboarding-sla` needs."""

    streams: StreamSettings = field(default_factory=StreamSettings)
    airflow: AirflowSettings = field(default_factory=AirflowSettings)
    group: str = keys.SLA_GROUP
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    listener_group: str = keys.LISTENER_GROUP
    slo_threshold_s: float = 10.0
    slo_target: float = 0.99
    overdue_after_s: float = 30.0
    page_window_s: float = 3600.0
    block_ms: int = 1000
    host: str = "127.0.0.1"
    port: int = 9114
    log_format: str = "json"
    archive_dir: Path | None = None
    # Instances whose scheduler heartbeat is exported (name, API base URL).
    airflow_instances: tuple[tuple[str, str], ...] = ()
    # Accepted signups (and their run conf, which holds the application) still awaiting a
    # decision after this long are forgotten: the decisions stream's retention
    # (DECISIONS_RETENTION_S), after which their decision could never be observed.
    awaiting_retention_s: float = 7 * 24 * 3600.0
    # The token the page, / and /api/sla ask for (SLA_PAGE_TOKEN or SLA_PAGE_TOKEN_FILE);
    # /metrics and the probes stay open. Required unless the page listens on loopback only.
    page_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SlaSettings:
        source = os.environ if environ is None else environ
        env = Env(source)
        airflow = AirflowSettings.from_env(source)
        log_format = env.str("LOG_FORMAT", cls.log_format)
        if log_format not in ("json", "text"):
            raise ConfigError(f"LOG_FORMAT={log_format!r} must be json or text")
        target = env.float("SLO_TARGET", cls.slo_target, minimum=0.5)
        if target >= 1:
            raise ConfigError(f"SLO_TARGET={target!r} must be below 1 (a 100% target leaves no error budget)")
        archive = env.optional_str("ARCHIVE_DIR")
        return cls(
            streams=StreamSettings.from_env(source),
            airflow=airflow,
            group=env.str("SLA_GROUP", cls.group),
            consumer=env.str("SLA_CONSUMER", f"{socket.gethostname()}-{os.getpid()}"),
            listener_group=env.str("LISTENER_GROUP", cls.listener_group),
            slo_threshold_s=env.float("SLO_THRESHOLD_S", cls.slo_threshold_s, minimum=0.1),
            slo_target=target,
            overdue_after_s=env.float("SLA_OVERDUE_AFTER_S", cls.overdue_after_s, minimum=1),
            page_window_s=env.float("SLA_PAGE_WINDOW_S", cls.page_window_s, minimum=60),
            block_ms=env.int("SLA_BLOCK_MS", cls.block_ms, minimum=1),
            host=env.str("SLA_HOST", cls.host),
            port=env.int("SLA_PORT", cls.port, minimum=0),
            log_format=log_format,
            archive_dir=Path(archive).expanduser() if archive else None,
            airflow_instances=_parse_instances(env.str("SLA_AIRFLOW_INSTANCES", f"realtime={airflow.url}")),
            awaiting_retention_s=env.float("DECISIONS_RETENTION_S", cls.awaiting_retention_s, minimum=0),
            page_token=env.secret("SLA_PAGE_TOKEN"),
        )

    def serving_token(self) -> str | None:
        """The page token to serve with. Without one the page (it names overdue signups' event
        ids and their runs) is served only on a loopback address: a laptop's demo."""
        if self.page_token is None and self.host not in LOOPBACK:
            raise ConfigError(
                f"SLA_HOST={self.host} serves the SLA page beyond this machine: set SLA_PAGE_TOKEN_FILE "
                "(or SLA_PAGE_TOKEN) to the token its readers present (docs/sla.md)"
            )
        return self.page_token
