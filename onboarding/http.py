"""The small HTTP side of every long-running process: /metrics, the probes, extra pages,
and the `check` probe that asks a running process for its health.

/livez    liveness: the process works (its loop turns). Never depends on Redis or Airflow,
          so an outage of either does not restart every pod.
/readyz   readiness: it can do its job now (its loop turns and Redis answers).
/healthz  the same as /readyz (what `check`, the local supervisor and older probes ask).
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"
# A page: () -> (body, content type).
Page = Callable[[], tuple[bytes, str]]


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    healthy: Callable[[], tuple[bool, str]]
    live: Callable[[], tuple[bool, str]]
    pages: Mapping[str, Page]

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        cls = type(self)
        try:
            if path == "/metrics":
                body, status, ctype = generate_latest(self.registry), 200, CONTENT_TYPE_LATEST
            elif path in ("/healthz", "/readyz", "/livez"):
                ok, why = cls.live() if path == "/livez" else cls.healthy()
                body, status, ctype = (why + "\n").encode(), 200 if ok else 503, TEXT
            elif path in cls.pages:
                body, ctype = cls.pages[path]()
                status = 200
            else:
                body, status, ctype = b"not found\n", 404, TEXT
        except Exception as err:  # one failed page must not take the metrics endpoint down
            logger.exception("http: %s failed", path)
            body, status, ctype = f"error: {type(err).__name__}: {err}\n".encode(), 500, TEXT
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the prober gave up waiting (its own timeout)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # scrapes every few seconds would drown the log


def serve_http(
    host: str,
    port: int,
    registry: CollectorRegistry,
    healthy: Callable[[], tuple[bool, str]],
    pages: Mapping[str, Page] | None = None,
    name: str = "metrics-http",
    live: Callable[[], tuple[bool, str]] | None = None,
) -> ThreadingHTTPServer:
    """Serve /metrics, the probes and `pages` (exact paths) on a daemon thread; returns the
    server (port 0 picks one). Without `live`, /livez answers as long as the server does."""
    attributes = {
        "registry": registry,
        "healthy": staticmethod(healthy),
        "live": staticmethod(live or _serving),
        "pages": dict(pages or {}),
    }
    server = ThreadingHTTPServer((host, port), type("Handler", (_Handler,), attributes))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


def _serving() -> tuple[bool, str]:
    return True, "serving"


def probe(url: str) -> int:
    """A `check` command: print a running process's /healthz answer; 0 if healthy, else 1."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (scheme checked above)
            print(response.read().decode().strip())
            return 0
    except urllib.error.HTTPError as err:
        print(f"unhealthy: {err.read().decode().strip()}")
    except OSError as err:
        print(f"unhealthy: {url} did not answer: {err}")
    return 1


def loop_liveness(
    loop: str, seconds_since_loop: Callable[[], float], stale_after_s: float
) -> Callable[[], tuple[bool, str]]:
    """The /livez of a process built around one loop: red only when the loop has not turned
    for `stale_after_s` (the loop keeps turning through a Redis outage, onboarding.outages)."""

    def live() -> tuple[bool, str]:
        age = seconds_since_loop()
        if age > stale_after_s:
            return False, f"{loop} stalled for {age:.0f} s"
        return True, "ok"

    return live


def loop_health(
    loop: str, seconds_since_loop: Callable[[], float], stale_after_s: float, client: redis.Redis
) -> Callable[[], tuple[bool, str]]:
    """The /readyz (and /healthz) of a process built around one loop over Redis: red when
    the loop has not turned for `stale_after_s` or Redis does not answer."""
    live = loop_liveness(loop, seconds_since_loop, stale_after_s)

    def healthy() -> tuple[bool, str]:
        ok, why = live()
        if not ok:
            return ok, why
        try:
            client.ping()
        except redis.RedisError as err:
            return False, f"redis unreachable: {err}"
        return True, "ok"

    return healthy
