"""Prometheus metrics of the listener and its /metrics + /healthz HTTP endpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class ListenerMetrics:
    """One registry per listener, so tests can inspect a fresh one."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "onboarding_listener_events_total",
            "Signup entries read from the stream, by outcome (triggered, duplicate, dead_lettered).",
            ["outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "onboarding_listener_dead_letters_total",
            "Signup entries sent to the dead-letter stream, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.airflow_errors = Counter(
            "onboarding_listener_airflow_errors_total",
            "Failed calls to the realtime Airflow API, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.trigger_seconds = Histogram(
            "onboarding_listener_trigger_seconds",
            "Time from reading a signup to Airflow accepting its run.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.reclaimed = Counter(
            "onboarding_listener_reclaimed_total",
            "Entries claimed from consumers that left them pending (crashed or stuck).",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "onboarding_listener_in_flight",
            "Signup entries read but not yet acknowledged by this process.",
            registry=self.registry,
        )
        self.last_loop = Gauge(
            "onboarding_listener_last_loop_timestamp_seconds",
            "Unix time of the consumer loop's last iteration (a stuck loop stops moving it).",
            registry=self.registry,
        )

    def loop_tick(self) -> None:
        self.last_loop.set(time.time())


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    healthy: Callable[[], tuple[bool, str]]

    def do_GET(self) -> None:
        if self.path.startswith("/metrics"):
            body, status, ctype = generate_latest(self.registry), 200, CONTENT_TYPE_LATEST
        elif self.path.startswith("/healthz"):
            ok, why = type(self).healthy()
            body, status, ctype = (why + "\n").encode(), 200 if ok else 503, "text/plain; charset=utf-8"
        else:
            body, status, ctype = b"not found\n", 404, "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # scrapes every few seconds would drown the log


def serve_http(
    host: str, port: int, registry: CollectorRegistry, healthy: Callable[[], tuple[bool, str]]
) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz on a daemon thread; returns the server (port 0 picks one)."""
    handler = type("Handler", (_Handler,), {"registry": registry, "healthy": staticmethod(healthy)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
