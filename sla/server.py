"""The SLA service's HTTP endpoints: /metrics, /healthz, the page (/ and /sla) and /api/sla."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sla.page import render

logger = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    healthy: Callable[[], tuple[bool, str]]
    snapshot: Callable[[], dict[str, Any]]

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        cls = type(self)
        try:
            if path == "/metrics":
                body, status, ctype = generate_latest(self.registry), 200, CONTENT_TYPE_LATEST
            elif path == "/healthz":
                ok, why = cls.healthy()
                body, status, ctype = (why + "\n").encode(), 200 if ok else 503, "text/plain; charset=utf-8"
            elif path == "/api/sla":
                body, status, ctype = json.dumps(cls.snapshot()).encode(), 200, "application/json"
            elif path in ("/", "/sla"):
                body, status, ctype = render(cls.snapshot()).encode(), 200, "text/html; charset=utf-8"
            else:
                body, status, ctype = b"not found\n", 404, "text/plain; charset=utf-8"
        except Exception as err:  # one failed page must not take the metrics endpoint down
            logger.exception("sla: %s failed", path)
            body, status, ctype = f"error: {type(err).__name__}: {err}\n".encode(), 500, "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # scrapes every few seconds would drown the log


def serve(
    host: str,
    port: int,
    registry: CollectorRegistry,
    healthy: Callable[[], tuple[bool, str]],
    snapshot: Callable[[], dict[str, Any]],
) -> ThreadingHTTPServer:
    """Serve on a daemon thread; returns the server (port 0 picks one)."""
    handler = type(
        "Handler",
        (_Handler,),
        {"registry": registry, "healthy": staticmethod(healthy), "snapshot": staticmethod(snapshot)},
    )
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sla-http", daemon=True).start()
    return server
