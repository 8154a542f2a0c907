"""The fault matrix: kill -9 each part of the local stack in turn, under steady load.

    python benchmarks/faults.py [--metadata sqlite|postgres] [--rate 1.5] [--fault-seconds 30]
                                [--cells listener-1,realtime-scheduler,...] [--out faults.json]
                                [--plot docs/img/faults-sqlite.svg]
    python benchmarks/faults.py --render faults.json --plot docs/img/faults-sqlite.svg

Starts the whole local stack (`onboarding-stack up`: both Airflow instances, the listeners,
rq worker and cron, the archive's metrics, the SLA service, under the supervisor) with a home,
ports and Redis of its own (the supervisor's own `redis-server`, AOF on), and with
`--metadata postgres` a private PostgreSQL cluster (initdb in a temporary directory, its own
port) so the `postgres` cell can restart it. Then it publishes signups at --rate per second
for the whole run and, one cell at a time, kills a component (testkit/faults.py):

  listener-N, realtime-{api-server,scheduler,dag-processor}, batch-{...}  kill -9 its process
  rq-worker (archive run)   kill -9 the worker and its work horse while an archive job moves
                            old runs (seeded at the start); then check every old run is in
                            the database or the archive, and that the next run archives each once
  rq-cron, archive-metrics, sla                                           kill -9
  redis                     kill -9 the stack's redis-server (AOF, appendfsync everysec)
  postgres (restart)        pg_ctl restart -m immediate of the private cluster (postgres only)

Per cell: signups lost (published, neither decided nor dead-lettered), duplicate DAG runs and
duplicate decisions (per event id), seconds until every part is healthy again (every
service up and answering its health check, `onboarding-stack status` exit 0) and the worst
signup -> decision latency among the signups published from --pre-seconds before the fault
to the end of its window. Prints progress on stderr, then the table and the command; writes
the results as JSON (--out) and a plot (--plot). The stack is stopped at the end, also on
failure or SIGTERM, and anything of it still running after `down` is reported and killed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # testkit runs from the checkout: it is not installed

from archiver.settings import ArchiveSettings  # noqa: E402
from archiver.store import ArchiveStore  # noqa: E402
from testkit.faults import (  # noqa: E402
    CellRun,
    Fault,
    FaultMatrix,
    FaultStack,
    MatrixSettings,
    figures,
    log,
    retry,
    seed_old_runs,
    select_cells,
    stack_env,
    summarize,
)
from testkit.model import train_baseline  # noqa: E402
from testkit.services import free_port  # noqa: E402

# -- the cells that are more than a kill -9 ---------------------------------------------------

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
ARCHIVED_PREFIX = "fault-archived"


class PrivateCluster:
    """A throwaway PostgreSQL cluster (initdb into a temporary directory, its own port, trust
    auth), so the `postgres` cell can restart the server without touching the machine's."""

    def __init__(self, port: int | None = None) -> None:
        # A directory of its own, not under the caller's (a private temporary directory the
        # postgres user could not enter); `stop` removes it.
        self.base = Path(tempfile.mkdtemp(prefix="onboarding-faults-pg-"))
        self.data_dir = self.base / "data"
        self.log_file = self.base / "postgres.log"
        self.port = port or free_port()

    def url(self, database: str = "onboarding_realtime") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
        result = subprocess.run([*as_postgres, *argv], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")

    def _pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, *args)

    def start(self) -> None:
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._pg_ctl("-w", "start")

    def restart(self) -> None:
        """Immediate mode: every backend is gone at once and the server recovers from its
        WAL, as after a crash."""
        self._pg_ctl("-w", "-m", "immediate", "restart")

    def stop(self) -> None:
        """Stop the server and remove the cluster."""
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._pg_ctl("-w", "-m", "fast", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def answers(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", connect_timeout=2).close()
        except psycopg2.Error:
            return False
        return True


class PostgresRestart(Fault):
    def __init__(self, cluster: PrivateCluster) -> None:
        self.cluster = cluster

    def inject(self, matrix: FaultMatrix, run: CellRun, tag: str) -> None:
        log(f"{tag} pg_ctl restart -m immediate (the private cluster)")
        self.cluster.restart()

    def problem(self) -> str | None:
        return None if self.cluster.answers() else "postgres: does not answer"


class ArchiveRunKill(Fault):
    """kill -9 the rq worker and its work horse while an archive job moves old runs; then
    every old run must be in the database or readable in the archive, and the next run must
    finish the job, archiving each run exactly once."""

    def __init__(self, stack: FaultStack) -> None:
        self.stack = stack
        self.seeded: list[str] = []
        env = stack.service_env("rq-worker")
        self.settings = ArchiveSettings.from_env(env)

    def seed(self, count: int) -> None:
        """`count` finished onboarding runs from 8 days ago in the realtime metadata database."""
        self.seeded = seed_old_runs(self.stack, count, ARCHIVED_PREFIX)

    def prepare(self, matrix: FaultMatrix, run: CellRun, tag: str) -> None:
        """Enqueue an archive job and return as soon as it plans its first batch."""
        job = self._enqueue()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not self._batches():
            if self._status(job) in ("finished", "failed"):
                break
            time.sleep(0.05)
        run.details["job_status_at_kill"] = self._status(job)

    def inject(self, matrix: FaultMatrix, run: CellRun, tag: str) -> None:
        # rq puts the work horse in a process group of its own (not a session): kill the
        # worker's whole session, the worker and the horse that runs the job, as a node loss would.
        run.killed_pid = self.stack.pid("rq-worker")
        members = self.stack.session(run.killed_pid) if run.killed_pid else []
        log(f"{tag} kill -9 the rq worker and its work horse {members}; archive batches {self._batches()}")
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        run.details["after_kill"] = retry(self.check, what="archive check")
        log(f"{tag} old runs after the kill: {run.details['after_kill']}")

    def after_window(self, matrix: FaultMatrix, run: CellRun, tag: str) -> None:
        """The next run finishes what the killed one left, once the killed run's lock expired."""
        deadline = time.monotonic() + 1200
        while retry(lambda: self.stack.redis.exists(self.settings.lock_name), what="lock"):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        job = self._enqueue()
        status = "queued"
        while time.monotonic() < deadline:
            status = self._status(job)
            if status in ("finished", "failed", "stopped", "canceled"):
                break
            time.sleep(1)
        run.details["next_job_status"] = status
        run.details["after_next_run"] = retry(self.check, what="archive check")
        log(f"{tag} the next archive run {status}; old runs: {run.details['after_next_run']}")

    def _enqueue(self) -> str:
        from rq import Queue

        job = Queue(self.settings.queue, connection=self.stack.redis).enqueue(
            "archiver.jobs.run_archive_job", job_timeout=3600
        )
        return job.id

    def _status(self, job_id: str) -> str:
        from rq.job import Job

        try:
            status = Job.fetch(job_id, connection=self.stack.redis).get_status()
        except Exception as err:  # no such job, Redis down
            return f"unknown ({type(err).__name__})"
        return str(getattr(status, "value", status))

    def _batches(self) -> list[str]:
        """The states of the realtime instance's archive batches (its journal)."""
        states = []
        for path in sorted((self.settings.archive_dir / "realtime" / "_journal").glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                states.append(json.loads(path.read_text()).get("state", "?"))
        return states

    def check(self) -> dict[str, int]:
        """Where the old runs are: still in the database, in the archive (readable Parquet),
        both (a batch copied, not yet deleted: the next run finishes it), neither (lost), and
        how many the archive holds more than once."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.stack.realtime_db_url)
        try:
            with engine.connect() as conn:
                query = sa.text("SELECT run_id FROM dag_run WHERE run_id LIKE :p")
                in_db = {r[0] for r in conn.execute(query, {"p": f"signup__{ARCHIVED_PREFIX}%"})}
        finally:
            engine.dispose()
        table = ArchiveStore(self.settings.archive_dir).read_table("realtime", "dag_run", columns=["run_id"])
        archived = Counter(table.column("run_id").to_pylist()) if table is not None else Counter()
        wanted = set(self.seeded)
        in_archive = {r for r in archived if r in wanted}
        return {
            "seeded": len(wanted),
            "in_db": len(wanted & in_db),
            "in_archive": len(in_archive),
            "in_both": len(wanted & in_db & in_archive),
            "lost": len(wanted - in_db - in_archive),
            "archived_twice": sum(1 for r in in_archive if archived[r] > 1),
        }


# -- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    cells = select_cells(args.cells, args.listeners, postgres=args.metadata == "postgres")
    base = Path(tempfile.mkdtemp(prefix="onboarding-faults-"))
    report: dict[str, Any] = {
        "command": command,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}",
        "metadata": args.metadata,
        "rate": args.rate,
        "fault_seconds": args.fault_seconds,
        "stack_env": args.stack_env,
        "cells": [c.name for c in cells],
    }
    cluster = None
    stack = None
    try:
        log(f"training the baseline model in {base / 'models'}")
        model_dir = train_baseline(base / "models")
        metadata = "sqlite"
        if args.metadata == "postgres":
            cluster = PrivateCluster()
            log(f"starting a private PostgreSQL cluster on port {cluster.port}")
            cluster.start()
            metadata = cluster.url()
        env = stack_env(
            base / "home",
            model_dir,
            metadata,
            args.listeners,
            # The archive cell kills a run holding the run lock; the next one waits for it to expire.
            ARCHIVE_LOCK_TTL_S="30",
            ARCHIVE_BATCH_SIZE=str(args.archive_batch_size),
            **dict(item.split("=", 1) for item in args.stack_env),
        )
        stack = FaultStack(env)
        log(f"onboarding-stack up (home {stack.home}, Redis {stack.streams.redis_url}, {args.metadata} metadata)")
        started = time.monotonic()
        stack.up()
        report["up_s"] = round(time.monotonic() - started, 1)
        log(f"the stack is up after {report['up_s']} s")
        faults: dict[str, Fault] = {}
        if cluster is not None:
            faults["postgres"] = PostgresRestart(cluster)
        if any(c.kind == "archive" for c in cells):
            archive = ArchiveRunKill(stack)
            log(f"seeding {args.archive_runs} finished onboarding runs from 8 days ago for the archive cell")
            archive.seed(args.archive_runs)
            faults["archive"] = archive
        matrix = FaultMatrix(
            stack,
            MatrixSettings(
                rate=args.rate,
                fault_s=args.fault_seconds,
                pre_s=args.pre_seconds,
                recovery_timeout_s=args.recovery_timeout,
                drain_timeout_s=args.drain_timeout,
            ),
            faults,
        )
        matrix.warm_up(args.warmup)
        try:
            for i, cell in enumerate(cells, start=1):
                matrix.run_cell(cell, i, len(cells))
        except Exception as err:  # report what was measured up to here, then fail
            log(f"the matrix stopped: {traceback.format_exc()}")
            report["error"] = f"{type(err).__name__}: {err}"
            log(f"the supervisor's view: {matrix.services_summary()}")
        tally = matrix.finish()
        rows = summarize(matrix, tally)
        rows.insert(0, _warmup_row(matrix, tally))
        report["rows"] = rows
        report["publish_errors"] = matrix.load.publish_errors
        report["started_at"] = matrix.started_at
        matrix.probe.close()
    finally:
        if stack is not None:
            log("onboarding-stack down")
            left = stack.down()
            report["left_after_down"] = left
            if left:
                log(f"LEFT RUNNING after down (now killed): {left}")
        if cluster is not None:
            cluster.stop()
        if args.keep_home:
            log(f"home kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return report


def _warmup_row(matrix: FaultMatrix, tally: Any) -> dict[str, Any]:
    return figures("warm-up", matrix.load.of("warm-up"), tally)


# -- reporting --------------------------------------------------------------------------------


def _value(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def markdown(report: dict[str, Any]) -> str:
    out = [
        f"Command: `{report['command']}`  ",
        f"{report['metadata']} metadata, {report['rate']} signups/s, fault window {report['fault_seconds']} s; "
        f"{report['host']}; {report['when']}",
        "",
        "| cell | signups | lost | duplicate runs | duplicate decisions | healthy again after | worst latency"
        " | median latency | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        recovery = "-"
        if "recovery_s" in row:
            recovery = (
                f"{row['recovery_s']} s"
                if row["recovery_s"] is not None
                else f"not within the time-out ({'; '.join(row['unhealthy_at_end'])})"
            )
        out.append(
            f"| {row['cell']} | {row['published']} | {row['lost']} | {row['duplicate_runs']}"
            f" | {row['duplicate_decisions']} | {recovery} | {_value(row['worst_latency_s'], ' s')}"
            f" | {_value(row['p50_latency_s'], ' s')} | {_notes(row)} |"
        )
    left = report.get("left_after_down")
    out += ["", f"Processes of the stack left running after `down`: {len(left) if left is not None else '?'}"]
    return "\n".join(out)


def _notes(row: dict[str, Any]) -> str:
    notes = []
    if row.get("dead_lettered"):
        notes.append(f"{row['dead_lettered']} dead-lettered")
    if row.get("failed_pipeline_reviews"):
        notes.append(f"{row['failed_pipeline_reviews']} decided `review` after a pipeline failure")
    details = row.get("details") or {}
    if "after_kill" in details:
        k, n = details["after_kill"], details.get("after_next_run", {})
        notes.append(
            f"archive: {k['seeded']} old runs; after the kill {k['in_db']} in the DB, {k['in_archive']} archived,"
            f" {k['lost']} lost; after the next run {n.get('in_archive')} archived, {n.get('in_db')} in the DB,"
            f" {n.get('lost')} lost, {n.get('archived_twice')} archived twice"
        )
    if row.get("relapses"):
        notes.append(f"unhealthy again after recovering: {'; '.join(row['relapses'])}")
    if row.get("status_exit") not in (None, 0):
        notes.append(f"status exit {row['status_exit']}")
    if row.get("note"):
        notes.append(row["note"])
    return "; ".join(notes)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    cells = [r for r in rows if "recovery_s" in r]
    t0 = report["started_at"]
    fig, (timeline, bars) = plt.subplots(
        2, 1, figsize=(12, 4 + 0.35 * len(cells) + 3), gridspec_kw={"height_ratios": [3, max(2, 0.35 * len(cells))]}
    )
    for row in rows:
        points = row.get("latencies") or []
        if points:
            xs = [(p - t0) / 60 for p, _ in points]
            color = "tab:gray" if "recovery_s" not in row else "tab:blue"
            timeline.scatter(xs, [lat for _, lat in points], s=6, color=color, alpha=0.7)
    ymax = max((lat for r in rows for _, lat in r.get("latencies") or []), default=1)
    for row in cells:
        x = (row["fault_at"] - t0) / 60
        timeline.axvline(x, color="tab:red", alpha=0.5, linewidth=0.8)
        timeline.text(x, ymax, f" {row['cell']}", rotation=90, va="top", ha="left", fontsize=7, color="tab:red")
    timeline.set_yscale("log")
    timeline.set_xlabel("minutes since the load started")
    timeline.set_ylabel("signup -> decision published (s)")
    timeline.set_title("Latency of every signup; red lines: a fault (kill -9 unless noted)")
    timeline.grid(True, which="both", alpha=0.3)

    names = [r["cell"] for r in cells][::-1]
    recovery = [r["recovery_s"] or 0 for r in cells][::-1]
    worst = [r["worst_latency_s"] or 0 for r in cells][::-1]
    ys = range(len(names))
    bars.barh([y + 0.2 for y in ys], recovery, height=0.4, color="tab:orange", label="seconds until all healthy")
    bars.barh([y - 0.2 for y in ys], worst, height=0.4, color="tab:blue", label="worst signup -> decision (s)")
    for y, r in zip(ys, cells[::-1], strict=True):
        healthy = f"{r['recovery_s']} s" if r["recovery_s"] is not None else "NOT within the time-out"
        mark = (
            f"  healthy after {healthy}, worst {r['worst_latency_s']} s; lost {r['lost']},"
            f" duplicate runs {r['duplicate_runs']}, decisions {r['duplicate_decisions']}"
        )
        bars.text(max(recovery[y], worst[y], 0.1), y, mark, va="center", fontsize=7)
    bars.set_yticks(list(ys), names, fontsize=8)
    bars.set_xscale("log")
    bars.set_xlabel("seconds (log scale)")
    bars.legend(loc="lower right", fontsize=8)
    bars.grid(True, axis="x", which="both", alpha=0.3)
    bars.set_xlim(0.1, max([*recovery, *worst, 1]) * 80)
    fig.suptitle(
        f"Fault matrix: {report['metadata']} metadata, {report['rate']} signups/s, "
        f"{report['fault_seconds']} s per fault (one run, one machine)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metadata", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--rate", type=float, default=1.5, help="signups per second, for the whole run")
    parser.add_argument("--cells", help="comma-separated cells (default: all); names as in the table, or `archive`")
    parser.add_argument("--fault-seconds", type=float, default=30.0, help="the fault window: load on after the fault")
    parser.add_argument("--pre-seconds", type=float, default=5.0, help="signups this long before a fault count in it")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds of load before the first cell")
    parser.add_argument("--recovery-timeout", type=float, default=240.0, help="give up waiting for health after this")
    parser.add_argument("--drain-timeout", type=float, default=420.0, help="give up waiting for a cell's decisions")
    parser.add_argument("--listeners", type=int, default=2)
    parser.add_argument("--archive-runs", type=int, default=1000, help="old runs seeded for the archive cell")
    parser.add_argument("--archive-batch-size", type=int, default=100, help="ARCHIVE_BATCH_SIZE of the stack")
    parser.add_argument(
        "--stack-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra setting for every part of the stack, to try one (AIRFLOW__SCHEDULER__...=...)",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--plot", type=Path, help="draw the plot here (.svg or .png)")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only print an earlier run's table (and --plot)")
    parser.add_argument("--keep-home", action="store_true", help="keep the stack's home (logs) afterwards")
    args = parser.parse_args(argv)
    if args.render:
        report = json.loads(args.render.read_text())
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the stack goes down
        command = "python benchmarks/faults.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        report = run(args, command.strip())
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        plot(report, args.plot)
    print(markdown(report))
    if args.out and not args.render:
        print(f"\nwrote {args.out}")
    failed = [r["cell"] for r in report["rows"] if r["lost"] or r["duplicate_runs"] or r["duplicate_decisions"]]
    unhealthy = [r["cell"] for r in report["rows"] if "recovery_s" in r and r["recovery_s"] is None]
    if report.get("error"):
        print(f"\nThe matrix stopped early: {report['error']}", file=sys.stderr)
    if failed or unhealthy or report.get("left_after_down") or report.get("error"):
        print(f"\nTargets missed: lost or duplicated in {failed}; not healthy again in {unhealthy}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
