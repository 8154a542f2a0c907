"""Why two Airflow instances: decision latency while batch work runs, side by side.

    python benchmarks/isolation.py [--variants dedicated,shared,none] [--rounds 1]
                                   [--rate 2] [--duration 120] [--metadata sqlite|postgres]
                                   [--cpu-seconds 15] [--archive-runs 500] [--out isolation.json]

Three variants of the full local stack (`onboarding-stack up`, a home, ports and Redis of its
own), each put through the same load: 20 warm-up signups at 1/s, then signups at --rate per
second for --duration seconds, while
  dedicated  the batch work runs on the batch instance (the design): the retraining DAG
             (`risk_model_retrain`), the drift DAG (`risk_drift`) and `batch_load`
             (benchmarks/batch_dags/batch_load.py: 20 tasks burning --cpu-seconds of CPU each) are
             triggered on the batch instance (BATCH_DAGS_FOLDER holds them). As production
             gives the batch pods a small CPU request (Kubernetes turns requests into cgroup CPU
             weights), the batch instance's processes run in a cgroup of their own with
             --batch-cpu-shares (102: a 100m request) against the default 1024: on a busy host
             it gets what the realtime instance leaves. 0 runs it without (one more finding);
  shared     the same DAGs on the realtime instance, beside `onboarding` (REALTIME_DAGS_FOLDER
             holds all of them): one instance for everything;
  none       no batch work at all: the floor.
In `dedicated` and `shared` the weekly archive job also runs (the rq worker, as in
production), over --archive-runs finished runs from 8 days ago seeded into the realtime
metadata database at the start (seeded in every variant, so the databases are alike).
The variants' order rotates between rounds. Latency is the app's view (XADD of the signup to
the decision's `published_at`). Per variant: p50/p99/max, undecided, how far the batch work got
in the window (`batch_load` tasks done), the load average; and p99 as a ratio to `none`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks.coldstart import drop_databases, percentile, postgres_url, run_load  # noqa: E402
from testkit.faults import FaultStack, log, seed_old_runs, stack_env  # noqa: E402
from testkit.model import model_dir_or_train  # noqa: E402

VARIANTS = ("dedicated", "shared", "none")
BATCH_DAGS = ("risk_model_retrain", "risk_drift", "batch_load")
DAG_FILES = {
    "onboarding": ROOT / "dags" / "realtime" / "onboarding_dag.py",
    "risk_model": ROOT / "dags" / "batch" / "risk_model.py",
    "batch_load": ROOT / "benchmarks" / "batch_dags" / "batch_load.py",
}


@dataclass
class Result:
    variant: str
    latencies: list[float] = field(default_factory=list)
    undecided: int = 0
    batch_tasks_done: int = 0
    batch_runs: dict[str, str] = field(default_factory=dict)
    archived: str = ""
    load_average: float = 0.0


def _folder(tmp: Path, name: str, files: list[str]) -> Path:
    folder = tmp / name
    folder.mkdir()
    for key in files:
        (folder / DAG_FILES[key].name).symlink_to(DAG_FILES[key])
    return folder


def folders(variant: str, tmp: Path) -> dict[str, str]:
    if variant == "dedicated":
        return {"BATCH_DAGS_FOLDER": str(_folder(tmp, "batch-dags", ["risk_model", "batch_load"]))}
    if variant == "shared":
        return {"REALTIME_DAGS_FOLDER": str(_folder(tmp, "realtime-dags", ["onboarding", "risk_model", "batch_load"]))}
    return {}


class Admin:
    """An instance's REST API as its admin (the stack's own admin password file)."""

    def __init__(self, stack: FaultStack, kind: str) -> None:
        port = stack.env["REALTIME_API_PORT" if kind == "realtime" else "BATCH_API_PORT"]
        self.url = f"http://127.0.0.1:{port}"
        password = (stack.home / kind / "admin.password").read_text().strip()
        token = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": password}, timeout=30)
        token.raise_for_status()
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token.json()['access_token']}"}, timeout=120
        )

    def start(self, dag_id: str, conf: dict[str, Any]) -> str:
        self.http.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        run_id = f"bench__{dag_id}__{int(time.time())}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        self.http.post(f"/api/v2/dags/{dag_id}/dagRuns", json=body).raise_for_status()
        return run_id

    def run_state(self, dag_id: str, run_id: str) -> str:
        try:
            response = self.http.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        except httpx.HTTPError as err:  # a starved batch API answers late: report, do not stop
            return f"unknown ({type(err).__name__})"
        return str(response.json().get("state")) if response.is_success else f"HTTP {response.status_code}"

    def tasks_done(self, dag_id: str, run_id: str) -> int:
        try:
            response = self.http.get(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"state": "success", "limit": 100}
            )
        except httpx.HTTPError:
            return -1
        return int(response.json().get("total_entries", 0)) if response.is_success else -1


def enqueue_archive(stack: FaultStack) -> str:
    from rq import Queue

    from archiver.settings import ArchiveSettings

    queue = ArchiveSettings.from_env(stack.service_env("rq-worker")).queue
    return Queue(queue, connection=stack.redis).enqueue("archiver.jobs.run_archive_job", job_timeout=3600).id


def archive_status(stack: FaultStack, job_id: str) -> str:
    from rq.job import Job

    try:
        return str(Job.fetch(job_id, connection=stack.redis).get_status())
    except Exception as err:  # a benchmark reports, it does not stop
        return f"unknown ({type(err).__name__})"


CGROUP_ROOTS = (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup"))  # v1 cpu controller, or v2


class CpuGroup:
    """A cgroup with a CPU weight of its own (v1 `cpu.shares`, or v2 `cpu.weight`), holding
    the processes moved into it and every child they start afterwards."""

    def __init__(self, name: str, shares: int) -> None:
        root = next(
            (r for r in CGROUP_ROOTS if (r / "cpu.shares").exists() or (r / "cgroup.subtree_control").exists()), None
        )
        if root is None:
            raise RuntimeError("no cgroup CPU controller here (needs root and /sys/fs/cgroup)")
        self.path = root / name
        self.path.mkdir(exist_ok=True)
        if (self.path / "cpu.shares").exists():
            (self.path / "cpu.shares").write_text(str(shares))
        else:  # v2: weight 1-10000, 100 = default (1024 shares)
            (self.path / "cpu.weight").write_text(str(max(1, round(shares * 100 / 1024))))

    def add_tree(self, pid: int) -> int:
        """Move a process and its descendants; returns how many moved."""
        import psutil

        moved = 0
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return 0
        for proc in procs:
            try:
                (self.path / "cgroup.procs").write_text(str(proc.pid))
                moved += 1
            except OSError:
                pass  # ended meanwhile
        return moved

    def remove(self) -> None:
        parent = self.path.parent / "cgroup.procs"
        for line in (self.path / "cgroup.procs").read_text().split():
            try:
                parent.write_text(line)
            except OSError:
                pass
        try:
            self.path.rmdir()
        except OSError as err:
            log(f"could not remove {self.path}: {err}")


def batch_group(stack: FaultStack, shares: int) -> CpuGroup:
    group = CpuGroup(f"onboarding-isolation-batch-{os.getpid()}", shares)
    moved = sum(
        group.add_tree(pid)
        for name in ("batch-api-server", "batch-scheduler", "batch-dag-processor")
        if (pid := stack.pid(name))
    )
    log(f"[dedicated] {moved} processes of the batch instance in {group.path} ({shares} CPU shares against 1024)")
    return group


def one_variant(variant: str, model_dir: Path, args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"onboarding-isolation-{variant}-") as tmp:
        # Fresh metadata databases per variant: `postgres` alone would be the local stack's
        # own (onboarding_realtime/_batch), carrying one variant's runs into the next.
        db = "sqlite" if args.metadata == "sqlite" else postgres_url(f"iso_{variant}")
        env = stack_env(Path(tmp) / "home", model_dir, db, **folders(variant, Path(tmp)))
        stack = FaultStack(env)
        result = Result(variant)
        group: CpuGroup | None = None
        try:
            log(f"[{variant}] onboarding-stack up")
            stack.up()
            if args.archive_runs > 0:
                seed_old_runs(stack, args.archive_runs, "evt-isolation-old-")
            log(f"[{variant}] warm-up: 20 signups at 1/s")
            run_load(stack, 1.0, 20)
            runs: dict[str, str] = {}
            job = ""
            admin = None
            if variant != "none":
                admin = Admin(stack, "batch" if variant == "dedicated" else "realtime")
                runs = {
                    "risk_model_retrain": admin.start("risk_model_retrain", {"repeats": 1}),
                    "risk_drift": admin.start("risk_drift", {}),
                    "batch_load": admin.start("batch_load", {"cpu_seconds": args.cpu_seconds}),
                }
                job = enqueue_archive(stack)
                log(f"[{variant}] batch work started on the {admin.url} instance; archive job {job}")
            if variant == "dedicated" and args.batch_cpu_shares:
                group = batch_group(stack, args.batch_cpu_shares)  # after the triggers: they need its API
            load_before = os.getloadavg()[0]
            log(f"[{variant}] {args.rate}/s for {args.duration:.0f} s")
            rows, result.undecided = run_load(stack, args.rate, args.duration)
            result.latencies = [r["published_at"] - r["published"] for r in rows if "published_at" in r]
            result.load_average = max(load_before, os.getloadavg()[0])
            if admin is not None:
                result.batch_tasks_done = admin.tasks_done("batch_load", runs["batch_load"])
                result.batch_runs = {dag: admin.run_state(dag, run) for dag, run in runs.items()}
                result.archived = archive_status(stack, job)
            p50, p99 = statistics.median(result.latencies), percentile(result.latencies, 0.99)
            log(f"[{variant}] p50 {p50:.2f} s, p99 {p99:.2f} s; batch_load tasks done {result.batch_tasks_done}/20")
            log(f"[{variant}] batch runs {result.batch_runs}; archive {result.archived}")
            return result
        finally:
            left = stack.down()
            if left:
                log(f"[{variant}] left after down: {left}")
            if group is not None:
                group.remove()
            if db != "sqlite":
                with contextlib.suppress(Exception):
                    drop_databases(db)


def table(results: list[Result]) -> str:
    floor: dict[str, float] = {}
    for r in results:
        if r.variant == "none" and r.latencies:
            floor.setdefault("p99", percentile(r.latencies, 0.99))
    lines = [
        "| variant | p50 | p99 | max | p99 / none | undecided | batch_load tasks done in the window "
        "| retrain / drift run | archive job | load average |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        values = r.latencies or [float("nan")]
        p99 = percentile(values, 0.99)
        ratio = f"{p99 / floor['p99']:.2f}x" if floor.get("p99") else "-"
        runs = f"{r.batch_runs.get('risk_model_retrain', '-')} / {r.batch_runs.get('risk_drift', '-')}"
        done = f"{r.batch_tasks_done}/20" if r.variant != "none" else "-"
        lines.append(
            f"| {r.variant} | {statistics.median(values):.2f} s | {p99:.2f} s | {max(values):.2f} s | {ratio} "
            f"| {r.undecided} | {done} | {runs} | {r.archived or '-'} | {r.load_average:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--metadata", default="sqlite", help="sqlite (the default stack) or postgres")
    parser.add_argument("--cpu-seconds", type=float, default=15.0, help="CPU seconds each batch_load task burns")
    parser.add_argument("--archive-runs", type=int, default=500)
    parser.add_argument(
        "--batch-cpu-shares", type=int, default=102, help="dedicated: the batch instance's CPU shares (0: none)"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model-dir", type=Path, help="a trained model directory to use (default: train one)")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    command = "python benchmarks/isolation.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the stack in progress is stopped
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="onboarding-isolation-model-") as models:
        model_dir = model_dir_or_train(args.model_dir, Path(models))
        for r in range(args.rounds):
            shift = r % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                results.append(one_variant(variant, model_dir, args))
    when = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"\nCommand: `{command}`  ")
    print(f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {args.metadata} metadata; {when}\n")
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps({"command": command, "when": when, "results": [r.__dict__ for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
