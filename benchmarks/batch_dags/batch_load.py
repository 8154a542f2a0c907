"""Benchmark fixture: ordinary batch work, 20 CPU-bound tasks at once (benchmarks/isolation.py).

Each task burns `cpu_seconds` of its own CPU time (SHA-256 in a loop), so a run costs the same
CPU whichever instance runs it, however busy the machine is.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task


@dag(
    dag_id="batch_load",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=32,
    tags=["batch", "benchmark"],
    params={"cpu_seconds": Param(15.0, type="number", minimum=0.1, maximum=600)},
)
def batch_load() -> None:
    @task
    def burn(part: int, params: dict | None = None) -> int:
        import hashlib
        import time

        end = time.process_time() + float((params or {}).get("cpu_seconds", 15.0))
        digest, rounds = str(part).encode(), 0
        while time.process_time() < end:
            for _ in range(1000):
                digest = hashlib.sha256(digest).digest()
            rounds += 1
        return rounds

    burn.expand(part=list(range(20)))


batch_load()
