"""The SLA page behind a token (issue 28, item 6): the page (/ and /sla) and /api/sla answer
only a request that presents SLA_PAGE_TOKEN (Bearer, or Basic with the token as password);
/metrics and the probes stay open for Prometheus and the kubelet. Over real HTTP."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from onboarding.errors import ConfigError
from onboarding.http import presented_token
from sla.server import serve
from sla.settings import SlaSettings
from testkit.services import free_port

TOKEN = "a-long-random-page-token-0123456789"
PAGES = ("/", "/sla", "/api/sla")
OPEN = ("/metrics", "/livez", "/readyz", "/healthz")


class _Snapshot:
    def to_dict(self) -> dict[str, object]:
        return {"by_decision": {}}


@pytest.fixture
def base(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr("sla.server.render", lambda snap: "<html>the SLA page</html>")
    server = serve(
        "127.0.0.1",
        0,
        CollectorRegistry(),
        lambda: (True, "ok"),
        lambda: _Snapshot(),  # a stand-in: only to_dict() is read
        page_token=TOKEN,
    )
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("path", PAGES)
def test_the_page_and_api_need_the_token(base: str, path: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": TOKEN},
        {"Authorization": basic("sla", "wrong")},
        {"Authorization": "Basic !!not-base64!!"},
        {"Authorization": "Bearer"},
    ):
        response = httpx.get(f"{base}{path}", headers=headers, timeout=5)
        assert response.status_code == 401, (path, headers)
        assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert "SLA" not in response.text and "by_decision" not in response.text
    bearer = httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert bearer.status_code == 200 and bearer.headers["Cache-Control"] == "no-store"
    assert ("by_decision" if path == "/api/sla" else "the SLA page") in bearer.text
    browser = httpx.get(f"{base}{path}", auth=("anyone", TOKEN), timeout=5)  # a browser's login prompt
    assert browser.status_code == 200


@pytest.mark.parametrize("path", OPEN)
def test_metrics_and_probes_stay_open(base: str, path: str) -> None:
    assert httpx.get(f"{base}{path}", timeout=5).status_code == 200


def test_presented_token_reads_bearer_and_basic_only() -> None:
    assert presented_token(f"Bearer {TOKEN}") == TOKEN.encode()
    assert presented_token(f"bearer  {TOKEN}") == TOKEN.encode()
    assert presented_token(basic("x", "p:w")) == b"p:w"
    assert presented_token(None) == b"" and presented_token("Digest abc") == b""


def test_the_token_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert SlaSettings.from_env({"SLA_PAGE_TOKEN_FILE": str(path)}).page_token == TOKEN
    assert SlaSettings.from_env({"SLA_PAGE_TOKEN": "t"}).page_token == "t"
    assert TOKEN not in repr(SlaSettings.from_env({"SLA_PAGE_TOKEN_FILE": str(path)}))


def test_a_page_beyond_loopback_without_a_token_is_refused() -> None:
    assert SlaSettings.from_env({}).serving_token() is None  # 127.0.0.1: a laptop's page
    with pytest.raises(ConfigError, match="SLA_PAGE_TOKEN_FILE"):
        SlaSettings.from_env({"SLA_HOST": "0.0.0.0"}).serving_token()
    assert SlaSettings.from_env({"SLA_HOST": "0.0.0.0", "SLA_PAGE_TOKEN": "t"}).serving_token() == "t"


def test_serve_refuses_to_start_open_on_every_address() -> None:
    env = {**os.environ, "SLA_HOST": "0.0.0.0", "SLA_PORT": str(free_port())}
    env.pop("SLA_PAGE_TOKEN", None)
    env.pop("SLA_PAGE_TOKEN_FILE", None)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "sla", "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "SLA_PAGE_TOKEN_FILE" in result.stderr
    assert time.monotonic() - started < 60
