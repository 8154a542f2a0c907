"""benchmarks/capacity.py: the capacity model's arithmetic, on a report whose answers are known."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _round(scheduler_s: float) -> dict[str, object]:
    burst_cost = {
        "realtime scheduler": scheduler_s,
        "realtime tasks": 0.1,
        "realtime api-server": 0.05,
        "postgres": 0.02,
        "listener": 0.002,
        "redis": 0.001,
    }
    polling = {c: 0.2 if c == "realtime scheduler" else 0.0 for c in burst_cost}
    return {
        "variant": "tuned@postgres",
        "sustained": {
            # At 2/s: the scheduler burns 0.2 cores more than 2 x its per-decision cost (its polling).
            "cpu": {
                "by_component_cores": {c: 2 * v + polling[c] for c, v in burst_cost.items()},
                "variant_cpu_s_per_decision": 0.3,
            },
        },
        "burst": {
            "throughput_per_s": 5.0,
            "cpu": {
                "by_component_cores": {c: 5 * v for c, v in burst_cost.items()},
                "by_component_cpu_s_per_decision": burst_cost,
                "variant_cpu_s_per_decision": 0.2,
            },
            "work_per_decision": {"redis_commands": 25.0, "pg_transactions": 20.0, "pg_rows_written": 15.0},
        },
    }


def test_it_finds_where_one_scheduler_runs_out_and_how_many_are_needed(tmp_path: Path) -> None:
    report = {
        "command": "python benchmarks/latency.py --variants tuned@postgres --rounds 2",
        "args": {"rate": 2.0},
        "results": [_round(0.02), _round(0.03)],  # two rounds: 0.025 s per decision on average
    }
    source = tmp_path / "latency.json"
    source.write_text(json.dumps(report))
    result = subprocess.run(
        [sys.executable, "benchmarks/capacity.py", str(source), "--rates", "10,100", "--out", str(tmp_path / "c.md")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "c.md").read_text()
    assert text.rstrip("\n") == result.stdout.rstrip("\n")
    # 0.7 of a core / 0.025 s per decision = 28 decisions/s for one scheduler.
    assert "one scheduler runs out at about **28 decisions/s**" in text
    # Its fixed polling cost comes out of the sustained phase: 0.2 cores.
    assert "| realtime scheduler | 0.0250 | 0.20 |" in text
    # 100/s needs ceil(100 / 28) = 4 schedulers; one cannot do it.
    assert "| 100 | CeleryExecutor, HA schedulers | 4 |" in text
    assert "| 100 | CeleryExecutor | 1 | 3.8 (the scheduler over one core: cannot)" in text
    assert "| 10 | CeleryExecutor | 1 | 0.6 |" in text
    # Redis: 0.7 / 0.001 s = 700 decisions/s; PostgreSQL: 20 transactions per decision.
    assert "one Redis runs out at about **700 decisions/s**" in text
    assert "200, 2,000 transactions/s at 10, 100 decisions/s" in text


def test_a_report_without_the_variant_says_which_it_has(tmp_path: Path) -> None:
    source = tmp_path / "latency.json"
    source.write_text(json.dumps({"command": "x", "args": {"rate": 2.0}, "results": [{"variant": "tuned@sqlite"}]}))
    result = subprocess.run(
        [sys.executable, "benchmarks/capacity.py", str(source)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "no results for variant 'tuned@postgres'" in result.stderr and "tuned@sqlite" in result.stderr
