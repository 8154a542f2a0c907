"""The latency benchmark runs from its documented command and reports what it promises.

Only the in-process variant runs here (Redis, no Airflow: seconds, not minutes); the
Airflow variants are the same code path with another `Running`. No timing is asserted:
the figures belong in docs/benchmarks.md, not in a pass/fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from testkit.services import require

ROOT = Path(__file__).resolve().parent.parent
BENCH_REDIS_URL = os.environ.get("BENCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def test_benchmark_publishes_collects_and_reports(tmp_path: Path, trained_model_dir: Path) -> None:
    try:
        available = bool(redis.Redis.from_url(BENCH_REDIS_URL).ping())
    except redis.RedisError:
        available = False
    require(available, f"Redis at {BENCH_REDIS_URL}")
    out = tmp_path / "out"
    argv = ["--variants", "inprocess", "--rate", "10", "--duration", "2", "--burst", "30", "--warmup", "1"]
    result = subprocess.run(
        [sys.executable, "benchmarks/latency.py", *argv, "--redis-url", BENCH_REDIS_URL, "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "RISK_MODEL_DIR": str(trained_model_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads((out / "latency.json").read_text())
    assert report["command"].startswith("python benchmarks/latency.py --variants inprocess")
    [inprocess] = report["results"]
    for phase, published in (("sustained", 20), ("burst", 30)):
        summary = inprocess[phase]
        # Every signup published was decided: nothing lost, nothing dead-lettered.
        assert (summary["published"], summary["decided"], summary["undecided"]) == (published, published, 0)
        assert summary["dead_lettered"] == 0
        assert 0 < summary["p50_s"] <= summary["p95_s"] <= summary["p99_s"] <= summary["max_s"]
        assert summary["throughput_per_s"] > 0
        assert set(summary["stages_p50_s"]) >= {"listener", "steps", "publish", "delivery"}
        assert "inprocess decider" in summary["cpu"]["by_component_cores"]
        assert summary["cpu"]["by_component_cpu_s_per_decision"]["inprocess decider"] > 0
        # Each decision reads and writes Redis: the publish, the read, the ack, the decision.
        assert summary["work_per_decision"]["redis_commands"] >= 3
        assert len(summary["latencies"]) == published
    table = (out / "latency.md").read_text()
    assert "| inprocess | 20/20 | 0 |" in table and "| inprocess | 30/30 | 0 |" in table
    assert report["command"] in table
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| inprocess |" in result.stdout


def test_defaults_config_drops_only_the_speed_settings(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.latency import TUNING, defaults_config

    tuned = ROOT / "deploy" / "realtime" / "airflow.cfg"
    dropped = defaults_config(tuned, tmp_path / "defaults.cfg")
    text = (tmp_path / "defaults.cfg").read_text()
    assert any("scheduler_idle_sleep_time" in d for d in dropped)
    assert not any(line.startswith("scheduler_idle_sleep_time") for line in text.splitlines())
    # Security and correctness stay: the auth manager, the listener's loopback API.
    assert "auth_manager = airflow_adapter.auth_manager.OnboardingFabAuthManager" in text
    assert "host = 127.0.0.1" in text
    assert len(dropped) == sum(1 for keys in TUNING.values() for key in keys if f"\n{key} =" in tuned.read_text())
