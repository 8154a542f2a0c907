"""The intake process's entry point (`onboarding-intake`, `python -m intake`).

onboarding-intake [--burst]   forward the apps' intakes and keep the streams' retention
onboarding-intake check       health probe: exit 0 healthy, 1 not
"""

from __future__ import annotations

import argparse
import logging
import signal

import redis

from intake.forwarder import IntakeForwarder
from intake.metrics import IntakeMetrics
from intake.settings import ENVIRONMENT, IntakeSettings
from onboarding.console import add_version, read_settings, stop_on_signals
from onboarding.http import probe, serve_loop
from onboarding.logs import configure_logging
from onboarding.redis_clients import Role, connect

logger = logging.getLogger("intake.cli")


def _parser() -> argparse.ArgumentParser:
    width = max(len(name) for name, _ in ENVIRONMENT)
    epilog = "environment variables:\n" + "\n".join(f"  {name:<{width}}  {what}" for name, what in ENVIRONMENT)
    parser = argparse.ArgumentParser(
        prog="onboarding-intake",
        description="Forward each app's intake stream into the signups stream (Redis Function forward_intake) "
        "and trim the streams past their retention. Never parses a payload.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", choices=["run", "check"], default="run")
    parser.add_argument("--burst", action="store_true", help="forward what is waiting, trim once, then exit")
    add_version(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = read_settings("onboarding-intake", IntakeSettings.from_env)
    if settings is None:
        return 2
    if args.command == "check":
        return probe(f"http://{settings.metrics_host}:{settings.metrics_port}/healthz")
    configure_logging("intake", settings.log_format)
    client = connect(settings.streams.redis_url, Role.LISTENER, block_s=settings.block_ms / 1000)
    forwarder = IntakeForwarder(client, settings, IntakeMetrics())
    stale_after_s = max(10.0, 3 * settings.block_ms / 1000)
    ready_client = connect(settings.streams.redis_url, Role.PROBE)
    server = serve_loop(
        settings.metrics_host,
        settings.metrics_port,
        forwarder.metrics.registry,
        "intake loop",
        forwarder.seconds_since_loop,
        stale_after_s,
        ready_client,
    )

    def stop(signum: signal.Signals) -> None:
        # The call in hand is one atomic FCALL: an entry is forwarded and acknowledged, or not
        # touched; the loop returns after it (at most INTAKE_BLOCK_MS later when it waits).
        logger.info("intake: received %s; stopping after the call in hand", signum.name)
        forwarder.stop()

    stop_on_signals(stop)  # a second signal ends it at once
    logger.info(
        "intake: forwarding %s into %s; retention on (metrics on %s:%s)",
        ", ".join(settings.streams.apps) or "no apps",
        settings.streams.signups_stream,
        settings.metrics_host,
        server.server_address[1],
    )
    try:
        forwarded = forwarder.run(burst=args.burst)
    except redis.RedisError as err:
        logger.error("intake: redis failed: %s", err)
        return 1
    finally:
        server.shutdown()
    logger.info("intake: stopped after forwarding %d entries", forwarded)
    return 0
