"""The SLA page's charts: the observer's per-minute series on a real Redis (known decisions,
a restart that rebuilds them, no double count), and the page as headless Chromium renders
it: every plotted point, read back from its SVG coordinates, is a point /api/sla returns.

The screenshot in docs/img/sla-page.png is made by this module, on the test Redis database
(flushed), with a realistic quiet day of decisions (0.3-1.5 s):

    .venv/bin/python -m tests.sla.test_sla_page docs/img/sla-page.png
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import redis

from onboarding.awaiting import record_accepted
from onboarding.decision import DecisionEvent
from onboarding.keys import run_id_for
from onboarding.settings import StreamSettings
from ops.redis_acl import apply
from sla.metrics import SlaMetrics
from sla.observer import DecisionObserver
from sla.page import snapshot
from sla.series import RANGES
from sla.server import serve
from sla.settings import SlaSettings
from testkit.services import require
from tests.conftest import TEST_REDIS_URL

STREAMS = StreamSettings(redis_url=TEST_REDIS_URL)
SETTINGS = SlaSettings(streams=STREAMS, consumer="test-sla", block_ms=50, overdue_after_s=30)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def decision_at(
    client: redis.Redis, written_at: float, latency_s: float, outcome: str = "approve", seq: int = 0
) -> str:
    """A decision event written to the stream at `written_at` (its entry id), accepted `latency_s` before."""
    event_id = f"e-{written_at:.3f}-{seq}"
    event = DecisionEvent(
        event_id=event_id,
        user_id="u-1",
        decision=outcome,
        score=0.2,
        reason_codes=[],
        model_version="v1",
        run_id=run_id_for(event_id),
        timestamps={"accepted_at": iso(written_at - latency_s), "published_at": iso(written_at)},
    )
    entry_id = f"{int(written_at * 1000)}-{seq}"
    client.xadd(STREAMS.decisions_stream, {"event_id": event_id, "payload": json.dumps(event.to_dict())}, id=entry_id)
    return entry_id


def bucket(chart: dict[str, Any], start: int) -> dict[str, Any]:
    i = chart["t"].index(start)
    return {key: values[i] for key, values in chart.items() if isinstance(values, list)}


def feed_known(client: redis.Redis) -> tuple[DecisionObserver, int]:
    """A day's history on the stream, then decisions the running observer reads; returns it and
    `base`, a 10-minute boundary 40-50 minutes ago."""
    base = int(time.time()) // 600 * 600 - 2400
    for seq, (latency, outcome) in enumerate(
        [(0.4, "approve"), (0.6, "approve"), (0.8, "approve"), (1.0, "review"), (1.2, "decline")]
    ):
        decision_at(client, base + 61, latency, outcome, seq)
    decision_at(client, base + 900, 150.0, "review")  # overdue from base + 780 until base + 900
    client.xadd(STREAMS.dead_letter_stream, {"reason": "not_json"})
    client.xadd(STREAMS.dead_letter_stream, {"reason": "schema"})
    observer = DecisionObserver(client, SETTINGS, SlaMetrics(SETTINGS))
    assert observer.run(burst=True) == 0  # all of it is history: rebuilt, not read
    for seq, latency in enumerate((1.0, 2.0, 3.0)):
        decision_at(client, base + 1201, latency, "decline", seq)
    record_accepted(client, STREAMS, "still-waiting", time.time() - 100, {"event_id": "still-waiting"})
    assert observer.run(burst=True) == 3
    return observer, base


def test_series_hold_known_decisions_and_survive_a_restart(redis_client: redis.Redis) -> None:
    observer, base = feed_known(redis_client)
    now = time.time()
    day = observer.series.chart(now, 86400, 600, [now - 70])
    assert bucket(day, base) == {
        "t": base, "p50_s": 0.8, "p99_s": 1.2, "approve": 0.3, "review": 0.1, "decline": 0.1, "decisions": 5,
        "dead_letters": None, "overdue": 0,
    }  # fmt: skip
    assert bucket(day, base + 600)["overdue"] == 1 and bucket(day, base + 600)["p50_s"] == 150.0
    assert bucket(day, base + 1200)["p50_s"] == 2.0 and bucket(day, base + 1200)["p99_s"] == 3.0
    assert day["overdue"][-1] == 1  # the signup still waiting, overdue since 70 s ago
    assert day["dead_letters"][-1] == 2 and day["dead_letters"].count(None) == len(day["t"]) - 1
    hour = observer.series.chart(now, 3600, 60, [now - 70])
    assert bucket(hour, base + 60)["approve"] == 3.0
    assert [bucket(hour, base + m)["overdue"] for m in (720, 780, 840, 900)] == [0, 1, 1, 0]
    assert sum(hour["decisions"]) == 9

    restarted = DecisionObserver(redis_client, SETTINGS, SlaMetrics(SETTINGS))
    assert restarted.run(burst=True) == 0
    assert restarted.series.chart(now, 86400, 600, [now - 70]) == day  # the sample of the dead letters included
    # A decision delivered but not acknowledged when the service stopped: re-read, counted once.
    entry = decision_at(redis_client, time.time(), 0.5)
    redis_client.xreadgroup(SETTINGS.group, SETTINGS.consumer, {STREAMS.decisions_stream: ">"})
    again = DecisionObserver(redis_client, SETTINGS, SlaMetrics(SETTINGS))
    assert again.run(burst=True) == 1  # the pending entry, acknowledged now
    assert again.series.rebuilt_through == entry
    assert sum(again.series.chart(time.time(), 3600, 60)["decisions"]) == 10


def test_the_sla_redis_user_may_do_all_the_charts_need(redis_client: redis.Redis) -> None:
    """Rebuild, dead-letter samples and the page's snapshot, as the SLA service's ACL user."""
    password, prefix = secrets.token_urlsafe(16), f"test-charts-{os.getpid()}-"
    created = apply(redis_client, STREAMS, {"REDIS_ACL_PASSWORD_SLA": password}, user_prefix=prefix)
    url = redis.connection.parse_url(TEST_REDIS_URL)
    sla = redis.Redis(
        host=url.get("host", "127.0.0.1"),
        port=url.get("port", 6379),
        db=url.get("db", 0),
        username=f"{prefix}sla",
        password=password,
    )
    try:
        decision_at(redis_client, time.time() - 600, 0.7)
        redis_client.xadd(STREAMS.dead_letter_stream, {"reason": "not_json"})
        redis_client.xgroup_create(STREAMS.decisions_stream, SETTINGS.group, id="$")
        observer = DecisionObserver(sla, SETTINGS, SlaMetrics(SETTINGS))
        assert observer.run(burst=True) == 0
        data = snapshot(sla, SETTINGS, observer, list, None)
        assert sum(data.series["1h"]["decisions"]) == 1
        assert data.series["1h"]["dead_letters"][-1] == 1
    finally:
        sla.close()
        redis_client.execute_command("ACL", "DELUSER", *created)


class Svg(HTMLParser):
    """Each chart's scale and its series' points, as the browser's DOM has them."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, Any]] = {}
        self._chart: dict[str, Any] | None = None
        self._series: list[tuple[float, float]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg" and "chart" in a.get("class", ""):
            self._chart = {k[5:]: float(v) for k, v in a.items() if k.startswith("data-")}
            self._chart["series"] = {}
            self.charts[a["id"]] = self._chart
        elif self._chart is not None and tag == "g" and "data-series" in a:
            self._series = self._chart["series"].setdefault(a["data-series"], [])
        elif self._series is not None and tag == "polyline":
            for pair in a["points"].split():
                px, py = pair.split(",")
                self._series.append((float(px), float(py)))
        elif self._series is not None and tag == "circle":
            self._series.append((float(a["cx"]), float(a["cy"])))
        elif self._chart is not None and tag == "line" and "threshold" in a.get("class", ""):
            self._chart["threshold_y"] = float(a["y1"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "g":
            self._series = None
        elif tag == "svg":
            self._chart = None


def plotted(chart: dict[str, Any], key: str, step_s: int) -> list[tuple[float, float]]:
    """(bucket start, value) of every point of a series, from its pixel coordinates."""

    def value(py: float) -> float:
        return chart["v0"] + (chart["y0"] - py) / (chart["y0"] - chart["y1"]) * (chart["v1"] - chart["v0"])

    out = []
    for px, py in chart["series"].get(key, []):
        t = chart["t0"] + (px - chart["x0"]) / (chart["x1"] - chart["x0"]) * (chart["t1"] - chart["t0"])
        out.append((t - step_s / 2, value(py)))
    return sorted(out)


def chromium_base(profile: Path) -> list[str]:
    chromium = shutil.which("chromium")
    require(chromium is not None, "chromium (Debian package chromium)")
    return [
        str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-extensions",
        "--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,1450",
    ]  # fmt: skip


@contextmanager
def serving(client: redis.Redis, observer: DecisionObserver) -> Iterator[str]:
    """The page behind a token, as served (tests/sla/test_sla_page_auth.py); the URL carries
    it as Basic credentials, which httpx and Chromium both send."""
    settings = observer.settings
    token = secrets.token_urlsafe(24)
    server = serve(
        "127.0.0.1",
        0,
        observer.metrics.registry,
        lambda: (True, "ok"),
        lambda: snapshot(client, settings, observer, list, None),
        page_token=token,
    )
    try:
        yield f"http://sla:{token}@127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


CHARTS = {
    "latency": ("p50_s", "p99_s"),
    "decisions": ("approve", "review", "decline"),
    "dead": ("dead_letters", "overdue"),
}


def test_chromium_plots_exactly_the_points_the_api_returns(redis_client: redis.Redis, tmp_path: Path) -> None:
    base_cmd = chromium_base(tmp_path / "profile")
    observer, base = feed_known(redis_client)
    with serving(redis_client, observer) as url:
        for _attempt in range(3):  # a new minute between the two reads shifts the hour's buckets: read again
            before = httpx.get(f"{url}/api/sla", timeout=10).json()["series"]
            dom = subprocess.run([*base_cmd, "--dump-dom", f"{url}/sla"], capture_output=True, text=True, timeout=120)
            assert dom.returncode == 0, dom.stderr[-2000:]
            after = httpx.get(f"{url}/api/sla", timeout=10).json()["series"]
            if before == after:
                break
        else:
            raise AssertionError("the series kept changing")
        shot = tmp_path / "sla-page.png"
        taken = subprocess.run([*base_cmd, f"--screenshot={shot}", f"{url}/sla"], capture_output=True, timeout=120)
        assert taken.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    parser = Svg()
    parser.feed(dom.stdout)
    assert len(parser.charts) == 6, sorted(parser.charts)
    compared = 0
    for name, _span, step in RANGES:
        series = after[name]
        for chart_key, keys in CHARTS.items():
            chart = parser.charts[f"chart-{chart_key}-{name}"]
            assert (chart["t0"], chart["t1"]) == (series["start"], series["end"])
            per_px = (chart["v1"] - chart["v0"]) / (chart["y0"] - chart["y1"])
            for key in keys:
                expected = [(t, v) for t, v in zip(series["t"], series[key], strict=True) if v is not None]
                points = plotted(chart, key, step)
                assert len(points) == len(expected), (name, key)
                for (t, v), (want_t, want_v) in zip(points, expected, strict=True):
                    assert abs(t - want_t) < step / 100 and abs(v - want_v) <= 0.01 * per_px + 1e-9, (name, key, t, v)
                compared += len(points)
            if chart_key == "latency":
                threshold = chart["v0"] + (chart["y0"] - chart["threshold_y"]) * per_px
                assert abs(threshold - SETTINGS.slo_threshold_s) <= 0.01 * per_px
    # What was fed is what is drawn: the 10-minute bucket of the five history decisions.
    day = parser.charts["chart-latency-24h"]
    assert (base, 0.8) in [(round(t / 600) * 600, round(v, 2)) for t, v in plotted(day, "p50_s", 600)]
    assert compared > 2 * (60 + 144)  # outcomes and overdue are plotted in every bucket


def realistic_day(client: redis.Redis, now: float, seed: int = 7) -> None:
    """A quiet day: 1-6 decisions a minute following the time of day, 0.3-1.5 s each, two dead letters."""
    rng = random.Random(seed)
    first = int(now // 60 * 60) - 86400 + 60
    with client.pipeline(transaction=False) as pipe:
        for minute in range(first, int(now), 60):
            hour = (minute % 86400) / 3600
            rate = 3.5 + 2.5 * math.sin((hour - 9) / 24 * 2 * math.pi)
            times = sorted(minute + rng.uniform(0, 59.9) for _ in range(max(0, round(rng.gauss(rate, 1)))))
            for seq, written in enumerate(t for t in times if t < now):
                latency = min(1.5, max(0.3, rng.lognormvariate(math.log(0.65), 0.3)))
                outcome = rng.choices(("approve", "review", "decline"), (68, 22, 10))[0]
                event_id = f"evt-{int(written * 1000)}-{seq}"
                event = DecisionEvent(
                    event_id=event_id,
                    user_id=f"user-{rng.randrange(10**6)}",
                    decision=outcome,
                    score=0.2,
                    reason_codes=[],
                    model_version="20261122T031356Z-2c0bae00",
                    run_id=run_id_for(event_id),
                    timestamps={"accepted_at": iso(written - latency), "published_at": iso(written)},
                )
                pipe.xadd(
                    STREAMS.decisions_stream,
                    {"event_id": event_id, "payload": json.dumps(event.to_dict())},
                    id=f"{int(written * 1000)}-{seq}",
                )
        pipe.execute()


def screenshot(path: Path) -> None:
    """The docs' screenshot: the page of a service that has run for a quiet day."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    try:
        now = time.time()
        realistic_day(client, now)
        client.xadd(STREAMS.dead_letter_stream, {"reason": "not_json"})
        client.xadd(STREAMS.dead_letter_stream, {"reason": "schema"})
        settings = replace(SETTINGS, consumer="screenshot")
        observer = DecisionObserver(client, settings, SlaMetrics(settings))
        observer.run(burst=True)  # rebuilds the day from the stream, as a restarted service does
        # Two dead letters today, sampled each minute as a service running all day does.
        for minute in range(int(now) - 86400 + 60, int(now), 60):
            depth = 0 if minute < now - 9 * 3600 else 1 if minute < now - 4 * 3600 else 2
            observer.series.sample_dead_letters(minute, depth)
        with serving(client, observer) as url:
            profile = path.parent / ".chromium-profile"
            try:
                taken = subprocess.run(
                    [*chromium_base(profile), f"--screenshot={path.resolve()}", f"{url}/sla"],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
            finally:
                shutil.rmtree(profile, ignore_errors=True)
            assert taken.returncode == 0, taken.stderr[-2000:]
    finally:
        client.flushdb()
        client.close()


if __name__ == "__main__":
    screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/sla-page.png"))
