"""The listener process's entry point (`onboarding-listener`, `python -m listener`).

onboarding-listener [--burst] [--max-messages N]   run the consumer
onboarding-listener check                           health probe: exit 0 healthy, 1 not

It imports only what consuming needs: no model, no numpy (a listener replica stays near
50 MB; tests/unit/test_entry_points.py). The publish, decisions and dead-letter commands
are in `listener.tools_cli`.
"""

from __future__ import annotations

import argparse
import logging
import signal

import redis

from listener.consumer import Listener
from listener.metrics import ListenerMetrics
from listener.settings import ListenerSettings
from onboarding.airflow import AirflowClient
from onboarding.console import add_version, environment_epilog, read_settings, stop_on_signals
from onboarding.http import probe, serve_loop
from onboarding.logs import configure_logging
from onboarding.redis_clients import Role, connect
from risk.drift_metrics import DriftCollector

logger = logging.getLogger("listener.cli")

# listener/settings.py (with the streams' and the Airflow client's settings).
ENVIRONMENT = (
    "REDIS_URL", "SIGNUPS_STREAM", "DECISIONS_STREAM", "DEAD_LETTER_STREAM",
    "ONBOARDING_APPS",
    "AIRFLOW_API_URL", "AIRFLOW_USERNAME", "AIRFLOW_PASSWORD[_FILE]", "AIRFLOW_DAG_ID",
    "AIRFLOW_TIMEOUT_S", "AIRFLOW_TOKEN_REFRESH_MARGIN_S",
    "LISTENER_GROUP", "LISTENER_CONSUMER", "LISTENER_BATCH_SIZE", "LISTENER_BLOCK_MS", "LISTENER_MAX_PAYLOAD_BYTES",
    "LISTENER_ANSWER_REFUSALS", "LISTENER_RETRY_INITIAL_S", "LISTENER_RETRY_MAX_S", "LISTENER_SHUTDOWN_TIMEOUT_S",
    "LISTENER_METRICS_HOST", "LISTENER_METRICS_PORT", "LISTENER_CLAIM_IDLE_MS", "LISTENER_CLAIM_INTERVAL_S",
    "LISTENER_MAX_DELIVERIES", "LISTENER_FINGERPRINT_TTL_S", "LOG_FORMAT",
)  # fmt: skip


def listener_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onboarding-listener",
        description="Consume signups, trigger runs.",
        epilog=environment_epilog(ENVIRONMENT),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    parser.add_argument("command", nargs="?", choices=["run", "check"], default="run")
    parser.add_argument("--burst", action="store_true", help="process what is queued, then exit")
    parser.add_argument("--max-messages", type=int, default=None, help="exit after settling this many")
    args = parser.parse_args(argv)
    settings = read_settings("onboarding-listener", ListenerSettings.from_env)
    if settings is None:
        return 2
    if args.command == "check":
        return _check(settings)
    configure_logging("listener", settings.log_format)
    client = connect(settings.streams.redis_url, Role.LISTENER, block_s=settings.block_ms / 1000)
    airflow = AirflowClient(settings.airflow)
    listener = Listener(client, airflow, settings, ListenerMetrics())
    # The batch instance's drift DAG writes PSI values to Redis; expose them here.
    listener.metrics.registry.register(DriftCollector(client))
    stale_after_s = max(10.0, 3 * settings.block_ms / 1000 + settings.airflow.timeout_s)

    # Readiness pings Redis with short timeouts: it answers before a prober gives up.
    ready_client = connect(settings.streams.redis_url, Role.PROBE)
    server = serve_loop(
        settings.metrics_host,
        settings.metrics_port,
        listener.metrics.registry,
        "consumer loop",
        listener.seconds_since_loop,
        stale_after_s,
        ready_client,
    )

    def stop(signum: signal.Signals) -> None:
        logger.info("listener: received %s; finishing the entry in hand", signum.name)
        listener.stop()
        # A second signal (stop_on_signals), or the timeout, ends the process even if Airflow hangs.
        signal.setitimer(signal.ITIMER_REAL, max(settings.shutdown_timeout_s, 0.001))

    stop_on_signals(stop)
    signal.signal(signal.SIGALRM, lambda *_: _shutdown_timeout(settings.shutdown_timeout_s))
    logger.info(
        "listener: consumer %s in group %s on stream %s -> %s (metrics on %s:%s)",
        settings.consumer,
        settings.group,
        settings.streams.signups_stream,
        settings.airflow.url,
        settings.metrics_host,
        server.server_address[1],
    )
    try:
        settled = listener.run(burst=args.burst, max_messages=args.max_messages)
    except redis.RedisError as err:
        logger.error("listener: redis failed: %s", err)
        return 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        server.shutdown()
        airflow.close()
    logger.info("listener: stopped after settling %d entries", settled)
    return 0


def _shutdown_timeout(timeout_s: float) -> None:
    # Unacknowledged entries stay pending and are re-read on the next start: nothing is lost.
    logger.error("listener: shutdown took longer than %.1f s; exiting with entries left pending", timeout_s)
    raise SystemExit(1)


def _check(settings: ListenerSettings) -> int:
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/healthz"
    return probe(url)
