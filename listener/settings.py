"""Listener settings, read once from the environment (see docs/configuration.md)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from onboarding import keys
from onboarding.airflow import AirflowSettings
from onboarding.env import Env
from onboarding.logs import LOG_FORMATS
from onboarding.schema import DEFAULT_MAX_PAYLOAD_BYTES
from onboarding.settings import StreamSettings


@dataclass(frozen=True)
class ListenerSettings:
    """Everything the listener process needs."""

    streams: StreamSettings = field(default_factory=StreamSettings)
    airflow: AirflowSettings = field(default_factory=AirflowSettings)
    group: str = keys.LISTENER_GROUP
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    batch_size: int = 16
    block_ms: int = 1000
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    # Answer a refused signup on its decision key and channel (onboarding/refusal.py).
    answer_refusals: bool = True
    retry_initial_s: float = 0.5
    retry_max_s: float = 5.0
    shutdown_timeout_s: float = 30.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108
    log_format: str = "json"
    claim_idle_ms: int = 30_000
    claim_interval_s: float = 5.0
    max_deliveries: int = 5
    fingerprint_ttl_s: int = keys.FINGERPRINT_TTL_S
    # Stream retention and the apps' intake forwarding are the intake process's
    # (intake/, onboarding-intake): this process holds no XTRIM and no XADD on the signups.

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ListenerSettings:
        source = os.environ if environ is None else environ
        env = Env(source)
        log_format = env.choice("LOG_FORMAT", cls.log_format, LOG_FORMATS)
        return cls(
            streams=StreamSettings.from_env(source),
            airflow=AirflowSettings.from_env(source),
            group=env.str("LISTENER_GROUP", cls.group),
            consumer=env.str("LISTENER_CONSUMER", f"{socket.gethostname()}-{os.getpid()}"),
            batch_size=env.int("LISTENER_BATCH_SIZE", cls.batch_size, minimum=1),
            block_ms=env.int("LISTENER_BLOCK_MS", cls.block_ms, minimum=1),
            max_payload_bytes=env.int("LISTENER_MAX_PAYLOAD_BYTES", cls.max_payload_bytes, minimum=256),
            answer_refusals=env.bool("LISTENER_ANSWER_REFUSALS", cls.answer_refusals),
            retry_initial_s=env.float("LISTENER_RETRY_INITIAL_S", cls.retry_initial_s, minimum=0.01),
            retry_max_s=env.float("LISTENER_RETRY_MAX_S", cls.retry_max_s, minimum=0.01),
            shutdown_timeout_s=env.float("LISTENER_SHUTDOWN_TIMEOUT_S", cls.shutdown_timeout_s, minimum=0),
            metrics_host=env.str("LISTENER_METRICS_HOST", cls.metrics_host),
            metrics_port=env.int("LISTENER_METRICS_PORT", cls.metrics_port, minimum=0),
            log_format=log_format,
            claim_idle_ms=env.int("LISTENER_CLAIM_IDLE_MS", cls.claim_idle_ms, minimum=1),
            claim_interval_s=env.float("LISTENER_CLAIM_INTERVAL_S", cls.claim_interval_s, minimum=0),
            max_deliveries=env.int("LISTENER_MAX_DELIVERIES", cls.max_deliveries, minimum=1),
            fingerprint_ttl_s=env.int("LISTENER_FINGERPRINT_TTL_S", cls.fingerprint_ttl_s, minimum=60),
        )
