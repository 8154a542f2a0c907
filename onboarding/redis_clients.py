"""The one Redis client factory: every process makes its clients here, by role.

A client without a socket timeout waits for ever on a host that silently drops packets
(a partition), and the loop, its liveness and its pod with it; so every preset sets both
timeouts. The presets differ in how long a command may take:

    ROLE       socket timeout        used by
    listener   block + 10 s          the consumer loop (XREADGROUP BLOCK), the SLA observer
    task       5 s, cached per URL   the DAG's task (warm connections across task calls)
    probe      1 s                   readiness probes (answer before the prober gives up)
    cli        10 s                  CLIs, the archive, operator tools
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cache

import redis


class Role(Enum):
    LISTENER = "listener"
    TASK = "task"
    PROBE = "probe"
    CLI = "cli"


@dataclass(frozen=True)
class Preset:
    connect_timeout_s: float
    socket_timeout_s: float
    keepalive: bool
    health_check_interval_s: int


PRESETS: dict[Role, Preset] = {
    Role.LISTENER: Preset(connect_timeout_s=5, socket_timeout_s=10, keepalive=True, health_check_interval_s=30),
    Role.TASK: Preset(connect_timeout_s=5, socket_timeout_s=5, keepalive=True, health_check_interval_s=30),
    Role.PROBE: Preset(connect_timeout_s=1, socket_timeout_s=1, keepalive=False, health_check_interval_s=0),
    Role.CLI: Preset(connect_timeout_s=5, socket_timeout_s=10, keepalive=False, health_check_interval_s=30),
}


def connect(url: str, role: Role, block_s: float = 0.0) -> redis.Redis:
    """A new client for `url` with the preset of `role`; `block_s` is the longest blocking
    read the caller issues (added to the socket timeout)."""
    preset = PRESETS[role]
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=preset.connect_timeout_s,
        socket_timeout=preset.socket_timeout_s + block_s,
        socket_keepalive=preset.keepalive,
        health_check_interval=preset.health_check_interval_s,
    )


@cache
def shared(url: str, role: Role = Role.TASK) -> redis.Redis:
    """One client per URL and role per process (its pool keeps connections warm)."""
    return connect(url, role)
