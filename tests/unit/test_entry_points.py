"""Entry points load only what they use: a listener replica carries no model, no numpy and no
Airflow (it stays near 50 MB, where importing scikit-learn made it about 150 MB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from testkit.services import free_port
from tests.conftest import TEST_REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
# What the listener never uses: the model's stack, the archive's, and Airflow itself.
HEAVY = {"sklearn", "numpy", "scipy", "pandas", "skops", "airflow", "pyarrow", "sqlalchemy", "matplotlib"}
# Measured at about 52 MB (docs/operations.md); with scikit-learn loaded it was about 156 MB.
LISTENER_RSS_LIMIT_KB = 90 * 1024


def _loaded_top_level(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The top-level packages a fresh interpreter has imported after running `code`."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_the_listener_builds_its_consumer_without_the_model_numpy_or_airflow() -> None:
    """What `listener_main` builds at start-up, short of connecting: settings, both Redis
    clients, the Airflow client, the consumer, its metrics and the drift gauges."""
    code = """
from listener.cli import listener_main
from listener.consumer import Listener
from listener.metrics import ListenerMetrics
from listener.settings import ListenerSettings
from onboarding.airflow import AirflowClient
from onboarding.redis_clients import Role, connect
from risk.drift_metrics import DriftCollector

settings = ListenerSettings.from_env()
client = connect(settings.streams.redis_url, Role.LISTENER, block_s=settings.block_ms / 1000)
probe = connect(settings.streams.redis_url, Role.PROBE)
airflow = AirflowClient(settings.airflow)
listener = Listener(client, airflow, settings, ListenerMetrics())
listener.metrics.registry.register(DriftCollector(client))
airflow.close()
"""
    env = {**os.environ, "AIRFLOW_PASSWORD": "unused"}
    loaded = _loaded_top_level(code, env)
    assert "listener" in loaded and "prometheus_client" in loaded  # the code above did run
    assert not loaded & HEAVY, f"the listener loads {sorted(loaded & HEAVY)}"


def test_the_stream_commands_load_the_model_only_to_make_sample_applicants() -> None:
    """onboarding-decisions, -deadletters and `onboarding-publish --file` need no model."""
    loaded = _loaded_top_level("import listener.tools_cli")
    assert not loaded & HEAVY, f"the stream commands load {sorted(loaded & HEAVY)}"
    with_samples = _loaded_top_level("import listener.tools_cli\nfrom risk.samples import new_signup\nnew_signup()")
    assert "sklearn" in with_samples  # ... which the sample applicants do pay for


def test_a_running_listener_stays_small(redis_client: redis.Redis) -> None:
    """`python -m listener`, healthy and retrying an Airflow that is down: no scikit-learn or
    numpy shared object is mapped into it, and its resident memory stays under 90 MB."""
    metrics_port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": TEST_REDIS_URL,
        "AIRFLOW_API_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: Airflow is down
        "AIRFLOW_PASSWORD": "unused",
        "LISTENER_METRICS_PORT": str(metrics_port),
        "LISTENER_CONSUMER": "entry-points-test",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "listener"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("the listener never became healthy")
        # A scrape runs every collector, the drift gauges included.
        assert "onboarding_risk_feature_psi" in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        status = Path(f"/proc/{proc.pid}/status").read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    mapped = {package for package in HEAVY if f"/{package}/" in maps or f"/{package}.libs/" in maps}
    assert not mapped, f"the listener process maps shared objects of {sorted(mapped)}"
    rss_kb = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    assert rss_kb < LISTENER_RSS_LIMIT_KB, f"the listener's resident memory is {rss_kb / 1024:.0f} MB"
