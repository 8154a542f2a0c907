"""Archive throughput side by side: configurations compared in one sitting, no Airflow running.

    python benchmarks/archive_throughput.py [--runs 5000] [--configs 500x1,2000x1,2000x2] [--rounds 2]

Migrates one PostgreSQL metadata database with `airflow db migrate`, then for each round and
each configuration (`<batch size>x<workers>`) copies it (CREATE DATABASE ... TEMPLATE), seeds
`--runs` old onboarding runs (about 20.5 rows each) and archives them, and prints rows per
second per configuration and round, and each one's ratio to the first configuration of the
same round, as JSON and a Markdown table. Configurations alternate within a round so a busy
shared host slows them alike; compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # testkit runs from the checkout: it is not installed

import sqlalchemy as sa  # noqa: E402

from archiver.archive import Archiver  # noqa: E402
from archiver.settings import ArchiveSettings, InstanceDatabase  # noqa: E402
from archiver.store import ArchiveStore  # noqa: E402
from stack.instance import AirflowInstance, InstanceSpec, drop_postgres_database  # noqa: E402
from testkit.postgres import PG, postgres_copy  # noqa: E402
from testkit.seed import seed_runs  # noqa: E402
from testkit.services import free_port  # noqa: E402


def _config(text: str) -> tuple[int, int]:
    batch, workers = text.split("x")
    return int(batch), int(workers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5000, help="old onboarding runs per database (~20.5 rows each)")
    parser.add_argument("--configs", default="500x1,2000x1,2000x2", help="comma-separated <batch size>x<workers>")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    configs = [_config(c) for c in args.configs.split(",")]
    base = Path(tempfile.mkdtemp(prefix="archive-throughput-"))
    template = f"{PG}/onboarding_archive_bench_template_{os.getpid()}"
    drop_postgres_database(template)
    spec = InstanceSpec.from_deploy("realtime", base / "home", free_port(), free_port(), template, name="bench")
    instance = AirflowInstance(spec, dict(os.environ))
    print("migrating the template database ...", file=sys.stderr, flush=True)
    instance.prepare()
    instance.migrate()
    results: list[dict[str, object]] = []
    try:
        for round_no in range(1, args.rounds + 1):
            first = None
            for batch_size, workers in configs:
                url = postgres_copy(template)
                engine = sa.create_engine(url)
                try:
                    seed_runs(engine, args.runs, datetime.now(UTC) - timedelta(days=8), step=timedelta(seconds=60))
                    settings = ArchiveSettings(
                        archive_dir=base / f"archive-{round_no}-{batch_size}x{workers}",
                        batch_size=batch_size,
                        workers=workers,
                        instances=(InstanceDatabase("realtime", url),),
                    )
                    archiver = Archiver(settings.instances[0], ArchiveStore(settings.archive_dir), settings)
                    started = time.monotonic()
                    report = archiver.run()
                    seconds = time.monotonic() - started
                    archiver.engine.dispose()
                finally:
                    engine.dispose()
                    drop_postgres_database(url)
                rate = report.rows / seconds
                first = first or rate
                results.append(
                    {
                        "round": round_no,
                        "batch_size": batch_size,
                        "workers": workers,
                        "rows": report.rows,
                        "seconds": round(seconds, 2),
                        "rows_per_s": round(rate),
                        "ratio_to_first": round(rate / first, 2),
                        "load_average_1m": round(os.getloadavg()[0], 1),
                    }
                )
                print(
                    f"round {round_no}, batch {batch_size} x {workers} workers: {rate:,.0f} rows/s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        drop_postgres_database(template)
    print(json.dumps(results, indent=2))
    command = (
        f"python benchmarks/archive_throughput.py --runs {args.runs} --configs {args.configs} --rounds {args.rounds}"
    )
    print(f"\n`{command}`\n")
    print("| round | batch size | workers | rows | rows/s | vs first | load (1 min) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['round']} | {r['batch_size']} | {r['workers']} | {r['rows']:,} | {r['rows_per_s']:,} | "
            f"{r['ratio_to_first']}x | {r['load_average_1m']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
