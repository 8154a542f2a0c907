"""The small HTTP side of every long-running process: /metrics, the probes, extra pages,
and the `check` probe that asks a running process for its health.

/livez    liveness: the process works (its loop turns). Never depends on Redis or Airflow,
          so an outage of either does not restart every pod.
/readyz   readiness: it can do its job now (its loop turns and Redis answers).
/healthz  the same as /readyz (what `check`, the local supervisor and older probes ask).

Pages (not /metrics or the probes: Prometheus and the kubelet) may be put behind a token
(`page_token`): a request must carry `Authorization: Bearer <token>`, or HTTP Basic with the
token as the password (any user name: what a browser's login prompt sends), compared in
constant time; anything else gets 401.
"""

from __future__ import annotations

import base64
import binascii
import hmac
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
    page_token: bytes | None
    realm: str

    def _authorized(self) -> bool:
        token = type(self).page_token
        if token is None:
            return True
        return hmac.compare_digest(presented_token(self.headers.get("Authorization")), token)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        cls = type(self)
        try:
            if path == "/metrics":
                body, status, ctype = generate_latest(self.registry), 200, CONTENT_TYPE_LATEST
            elif path in ("/healthz", "/readyz", "/livez"):
                ok, why = cls.live() if path == "/livez" else cls.healthy()
                body, status, ctype = (why + "\n").encode(), 200 if ok else 503, TEXT
            elif path in cls.pages and not self._authorized():
                body, status, ctype = b"unauthorized: send the page token (Authorization: Bearer ...)\n", 401, TEXT
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
            if status == 401:
                self.send_header("WWW-Authenticate", f'Basic realm="{cls.realm}", charset="UTF-8"')
            if path in cls.pages:
                self.send_header("Cache-Control", "no-store")
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
    page_token: str | None = None,
) -> ThreadingHTTPServer:
    """Serve /metrics, the probes and `pages` (exact paths) on a daemon thread; returns the
    server (port 0 picks one). Without `live`, /livez answers as long as the server does.
    With `page_token`, the pages answer only requests that present it (module docstring)."""
    if page_token is not None and not page_token:
        raise ValueError("an empty page token would let anyone in")
    attributes = {
        "registry": registry,
        "healthy": staticmethod(healthy),
        "live": staticmethod(live or _serving),
        "pages": dict(pages or {}),
        "page_token": page_token.encode() if page_token is not None else None,
        "realm": name,
    }
    server = ThreadingHTTPServer((host, port), type("Handler", (_Handler,), attributes))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


def presented_token(authorization: str | None) -> bytes:
    """The token a request presents: `Bearer <token>`, or Basic's password; b"" if none."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip().encode()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return b""
        return decoded.partition(b":")[2]
    return b""


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


def serve_loop(
    host: str,
    port: int,
    registry: CollectorRegistry,
    loop: str,
    seconds_since_loop: Callable[[], float],
    stale_after_s: float,
    ready_client: redis.Redis,
) -> ThreadingHTTPServer:
    """Serve /metrics and the probes of a process built around one loop over Redis: /livez
    (`loop_liveness`) and /readyz (`loop_health`, pinging Redis through `ready_client`)."""
    healthy = loop_health(loop, seconds_since_loop, stale_after_s, ready_client)
    live = loop_liveness(loop, seconds_since_loop, stale_after_s)
    return serve_http(host, port, registry, healthy, live=live)
