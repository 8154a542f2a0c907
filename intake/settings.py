"""The intake process's settings, read once from the environment (docs/configuration.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from onboarding import keys
from onboarding.env import Env
from onboarding.logs import LOG_FORMATS
from onboarding.schema import DEFAULT_MAX_PAYLOAD_BYTES
from onboarding.settings import StreamSettings

# The environment variables this process reads (besides StreamSettings'), for `--help`.
ENVIRONMENT = (
    ("REDIS_URL", "Redis, as the `intake` user: redis://intake:<password>@host/0"),
    ("SIGNUPS_STREAM, DECISIONS_STREAM", "the stream names (defaults signups, decisions)"),
    ("ONBOARDING_APPS", "the apps whose intakes signups:app:<name> are forwarded (default none)"),
    ("LISTENER_GROUP", "the listeners' consumer group, created at start so retention keeps its entries"),
    ("INTAKE_BATCH_SIZE", "entries forwarded per app per atomic call (default 64)"),
    ("INTAKE_BLOCK_MS", "longest wait for a new intake entry, and for a stop (default 1000)"),
    ("LISTENER_MAX_PAYLOAD_BYTES", "the payload limit; larger entries are forwarded as a refused stub (65536)"),
    ("SIGNUPS_RETENTION_S", "acknowledged signups and intake entries older than this are trimmed (691200)"),
    ("DECISIONS_RETENTION_S", "acknowledged decisions, and app feed entries, older than this are trimmed (604800)"),
    ("INTAKE_TRIM_INTERVAL_S", "how often to trim (default 60)"),
    ("INTAKE_METRICS_HOST, INTAKE_METRICS_PORT", "/metrics and the probes (default 127.0.0.1:9118)"),
    ("LOG_FORMAT", "json or text (default json)"),
)


@dataclass(frozen=True)
class IntakeSettings:
    """Everything the intake process needs."""

    streams: StreamSettings = field(default_factory=StreamSettings)
    # Created on the signups stream at start (from its beginning) if no listener made it yet:
    # retention never trims below an entry a group has not read, so a forwarded signup
    # waits for the listeners however late they start.
    listener_group: str = keys.LISTENER_GROUP
    batch_size: int = 64
    # The loop blocks on the apps' intakes for at most this long: a new entry wakes it at
    # once (forwarding latency is one round trip, not a poll interval); a stop waits this.
    block_ms: int = 1000
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    retention_s: float = 8 * 24 * 3600.0  # the drift DAG reads the last week of signups
    decisions_retention_s: float = 7 * 24 * 3600.0
    trim_interval_s: float = 60.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9118
    log_format: str = "json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> IntakeSettings:
        source = os.environ if environ is None else environ
        env = Env(source)
        log_format = env.choice("LOG_FORMAT", cls.log_format, LOG_FORMATS)
        return cls(
            streams=StreamSettings.from_env(source),
            listener_group=env.str("LISTENER_GROUP", cls.listener_group),
            batch_size=env.int("INTAKE_BATCH_SIZE", cls.batch_size, minimum=1),
            block_ms=env.int("INTAKE_BLOCK_MS", cls.block_ms, minimum=1),
            max_payload_bytes=env.int("LISTENER_MAX_PAYLOAD_BYTES", cls.max_payload_bytes, minimum=256),
            retention_s=env.float("SIGNUPS_RETENTION_S", cls.retention_s, minimum=0),
            decisions_retention_s=env.float("DECISIONS_RETENTION_S", cls.decisions_retention_s, minimum=0),
            trim_interval_s=env.float("INTAKE_TRIM_INTERVAL_S", cls.trim_interval_s, minimum=0),
            metrics_host=env.str("INTAKE_METRICS_HOST", cls.metrics_host),
            metrics_port=env.int("INTAKE_METRICS_PORT", cls.metrics_port, minimum=0),
            log_format=log_format,
        )
