"""Benchmark of the metadata archive against a live realtime instance.

    python benchmarks/archive_bench.py [--runs 50000] [--probes 20] [--out docs/benchmarks-archive.md]

Starts a realtime Airflow (api-server, scheduler, dag-processor; PostgreSQL metadata) and a
listener, seeds the metadata database with old onboarding runs (about 20.5 rows each, so
50,000 runs are over 1,000,000 rows), then measures the signup -> decision latency
(listener accepted -> decision published, one signup at a time) on the bloated database,
while `onboarding-archive run` archives it in its own process, and after. Prints JSON and a
Markdown table and writes the table, with this command, to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # testkit runs from the checkout: it is not installed

import sqlalchemy as sa  # noqa: E402

from onboarding.decision import wait_for_decision  # noqa: E402
from onboarding.publisher import publish_signup  # noqa: E402
from risk.samples import new_signup  # noqa: E402
from testkit.model import train_baseline  # noqa: E402
from testkit.realtime import NoSession, running_realtime  # noqa: E402
from testkit.seed import seed_runs  # noqa: E402


def _probe(stack, count: int | None = None, until: threading.Event | None = None) -> list[float]:
    """Publish signups one at a time; each one's latency from acceptance to published decision."""
    latencies = []
    while (count is not None and len(latencies) < count) or (until is not None and not until.is_set()):
        event = new_signup()
        publish_signup(stack.redis, stack.streams.signups_stream, event)
        decision = wait_for_decision(stack.redis, stack.streams.decisions_stream, event["event_id"], 120)
        if decision is None:
            raise RuntimeError(f"no decision for {event['event_id']} within 120 s")
        latencies.append(decision.latency_s("accepted_at", "published_at"))
    return latencies


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(values), "p50_s": round(statistics.median(values), 3), "p99_s": round(p99, 3)}


def _db_size(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar())


def _rows(engine: sa.Engine, tables: list[str]) -> int:
    with engine.connect() as conn:
        return sum(int(conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar()) for t in tables)  # noqa: S608


PER_RUN_TABLES = [
    "dag_run", "task_instance", "task_instance_history", "xcom", "rendered_task_instance_fields", "log",
    "task_instance_note", "task_reschedule", "dag_run_note", "dagrun_asset_event", "asset_event", "job",
]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50_000, help="old onboarding runs to seed (~20.5 rows each)")
    parser.add_argument("--probes", type=int, default=20, help="signups per latency phase (idle, after)")
    parser.add_argument("--workers", type=int, default=2, help="ARCHIVE_WORKERS: batches moved at once")
    parser.add_argument("--batch-size", type=int, default=2000, help="ARCHIVE_BATCH_SIZE: runs per batch")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-archive.md")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="archive-bench-"))
    model_dir = train_baseline(base / "models")
    with running_realtime("postgres", base / "realtime", model_dir, NoSession(), "archbench") as stack:
        stack.start_listener(LOG_FORMAT="text")
        url = stack.instance.database_url
        engine = sa.create_engine(url)
        _probe(stack, 3)  # warm-up: first runs load the model and fill caches
        print("seeding ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        seed_runs(engine, args.runs, datetime.now(UTC) - timedelta(days=8), step=timedelta(seconds=60))
        seed_s = time.monotonic() - started
        rows_before = _rows(engine, PER_RUN_TABLES)
        size_before = _db_size(engine)
        print(f"seeded {rows_before:,} rows in {seed_s:.0f} s; measuring idle latency", file=sys.stderr, flush=True)
        idle = _probe(stack, args.probes)

        archive_dir = base / "archive"
        env = {
            **os.environ,
            "ARCHIVE_REALTIME_DB_URL": url,
            "ARCHIVE_DIR": str(archive_dir),
            "ARCHIVE_WORKERS": str(args.workers),
            "ARCHIVE_BATCH_SIZE": str(args.batch_size),
            "LOG_FORMAT": "text",
        }
        done = threading.Event()
        during: list[float] = []
        prober = threading.Thread(target=lambda: during.extend(_probe(stack, until=done)))
        prober.start()
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "archiver", "run", "--no-lock"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        archive_s = time.monotonic() - started
        load_after = os.getloadavg()[0]
        done.set()
        prober.join()
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
            return 1
        report = json.loads(result.stdout.strip().splitlines()[-1])
        size_after = _db_size(engine)
        rows_after = _rows(engine, PER_RUN_TABLES)
        after = _probe(stack, args.probes)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in PER_RUN_TABLES:
                conn.execute(sa.text(f'VACUUM FULL "{table}"'))
        size_vacuumed = _db_size(engine)
        archive_bytes = sum(p.stat().st_size for p in archive_dir.rglob("*.parquet"))
        engine.dispose()

    figures = {
        "rows_archived": report["rows"],
        "archive_s": round(report["duration_s"], 1),
        "archive_wall_s": round(archive_s, 1),
        "rows_per_s": round(report["rows"] / report["duration_s"]),
        "rows_before": rows_before,
        "rows_after": rows_after,
        "db_mb_before": round(size_before / 2**20, 1),
        "db_mb_after": round(size_after / 2**20, 1),
        "db_mb_after_vacuum_full": round(size_vacuumed / 2**20, 1),
        "parquet_mb": round(archive_bytes / 2**20, 1),
        "latency_idle_bloated": _summary(idle),
        "latency_during_archive": _summary(during),
        "latency_after_archive": _summary(after),
        "tables": report["tables"],
        # The host is shared: the 1-minute load average around the archive run says how much.
        "load_average_1m_before_after": [round(load_before, 1), round(load_after, 1)],
        "cpus": os.cpu_count(),
    }
    command = (
        f"python benchmarks/archive_bench.py --runs {args.runs} --probes {args.probes} "
        f"--workers {args.workers} --batch-size {args.batch_size}"
    )
    table = "\n".join(
        [
            "| Phase | signups | p50 | p99 |",
            "|---|---|---|---|",
            *(
                f"| {name} | {figures[key]['n']} | {figures[key]['p50_s']:.2f} s | {figures[key]['p99_s']:.2f} s |"
                for name, key in (
                    ("bloated database, idle", "latency_idle_bloated"),
                    ("during the archive run", "latency_during_archive"),
                    ("after the archive run", "latency_after_archive"),
                )
            ),
        ]
    )
    print(json.dumps(figures, indent=2))
    print(table)
    args.out.write_text(
        "# Metadata archive benchmark\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d} on this project's 2-core machine (shared), Airflow 3.3.2, "
        "PostgreSQL metadata, realtime instance running (LocalExecutor) with one listener.\n\n"
        f"```bash\n{command}\n```\n\n"
        "## Archive\n\n"
        "| Figure | Value |\n|---|---|\n"
        f"| rows archived (and deleted) | {figures['rows_archived']:,} |\n"
        f"| time | {figures['archive_s']} s |\n"
        f"| throughput | {figures['rows_per_s']:,} rows/s |\n"
        f"| per-run table rows before / after | {rows_before:,} / {rows_after:,} |\n"
        f"| database size before | {figures['db_mb_before']} MB |\n"
        f"| database size after (space reusable, not returned) | {figures['db_mb_after']} MB |\n"
        f"| database size after VACUUM FULL of the per-run tables | {figures['db_mb_after_vacuum_full']} MB |\n"
        f"| Parquet archive size | {figures['parquet_mb']} MB |\n"
        f"| host load average (1 min) before / after the run, {figures['cpus']} CPUs | "
        f"{load_before:.1f} / {load_after:.1f} |\n\n"
        "## Realtime latency (listener accepted -> decision published, one signup at a time)\n\n"
        f"{table}\n\n"
        "## Rows per table\n\n| Table | Rows |\n|---|---|\n"
        + "".join(f"| {t} | {n:,} |\n" for t, n in sorted(figures["tables"].items()))
        + "\n```json\n"
        + json.dumps(figures, indent=2)
        + "\n```\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
