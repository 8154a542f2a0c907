"""The SLA service's HTTP endpoints: /metrics, the probes (/livez, /readyz, /healthz), the
page (/ and /sla) and /api/sla; with `page_token`, the page and /api/sla ask for it
(Bearer, or Basic with the token as password: onboarding/http.py), metrics and probes not."""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry

from onboarding.http import Page, serve_http
from sla.page import render
from sla.snapshot import Snapshot


def serve(
    host: str,
    port: int,
    registry: CollectorRegistry,
    healthy: Callable[[], tuple[bool, str]],
    snapshot: Callable[[], Snapshot],
    live: Callable[[], tuple[bool, str]] | None = None,
    page_token: str | None = None,
) -> ThreadingHTTPServer:
    """Serve on a daemon thread; returns the server (port 0 picks one)."""

    def page() -> tuple[bytes, str]:
        return render(snapshot()).encode(), "text/html; charset=utf-8"

    def api() -> tuple[bytes, str]:
        return json.dumps(snapshot().to_dict()).encode(), "application/json"  # JSON only here

    pages: dict[str, Page] = {"/": page, "/sla": page, "/api/sla": api}
    return serve_http(host, port, registry, healthy, pages, name="sla-http", live=live, page_token=page_token)
