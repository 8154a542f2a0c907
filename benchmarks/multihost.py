"""The multi-host rehearsal, full form: throughput with one and two Celery worker hosts side by
side, and a worker host's link cut mid-task.

    python benchmarks/multihost.py [--burst 40] [--signups 30] [--rate 2] [--cut-seconds 60]
                                   [--skip-cut | --skip-throughput] [--sysctl KEY=VALUE]
                                   [--airflow-setting KEY=VALUE] [--broker-user ROLE]
                                   [--json FILE] [--keep]

The hosts are Linux network namespaces on one switch (`testkit.multihost`; needs root,
redis-server, PostgreSQL's server binaries, setpriv and unshare): `data` (Redis, PostgreSQL),
`control` (api-server, scheduler, dag-processor; CeleryExecutor), `workera` and `workerb` (one
`airflow celery worker` each, concurrency 4), `listeners` (two listeners in one group), `app`
(publishes, observes).

1. Throughput. With worker-a only, then with worker-b started too, in the same run: a warm-up
   of 5 signups, then a burst of --burst signups published at once. The figure is burst size /
   (last decision published - first signup accepted by a listener), as in
   benchmarks/celery_scaleout.py. During each burst the CPU of every component (its whole
   process tree, task processes included) and of the whole machine is measured from /proc,
   with each onboarding task's duration (start to end, from the metadata database): together
   they say whether the worker slots or the machine's cores bound the figure. Every Airflow
   process can be given a setting to try (--airflow-setting).
2. The cut (skipped with --skip-cut; --skip-throughput skips step 1): --signups at --rate
   per second; once worker-a holds a running onboarding task, its link goes down for
   --cut-seconds, then comes back, and 10 more signups follow; every signup must be decided
   exactly once (tests/e2e/test_multihost.py is the CI form of this step).

Prints a Markdown summary and the command (progress on stderr); --json writes every figure.
Results: docs/rehearsal.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # testkit runs from the checkout: it is not installed

import psutil  # type: ignore[import-untyped]  # noqa: E402

from testkit.celery_stack import WORKER_CONCURRENCY  # noqa: E402
from testkit.multihost import (  # noqa: E402
    BROKER_ROLE,
    CutOutcome,
    MultihostStack,
    missing_tools,
    multihost_stack,
    rehearse_worker_cut,
    say,
)


@dataclass
class Burst:
    workers: int
    size: int
    decisions_per_s: float
    median_latency_s: float
    wall_s: float
    machine_busy_pct: float  # of all cores, every process on the machine
    cpu_pct: dict[str, float]  # per component, of one core
    own_cpu_pct: float  # this benchmark's process and its children (publishing, polling), of one core
    median_task_s: float  # the task itself: start to end in the metadata database
    median_workload_s: float  # a worker slot held: Celery's "succeeded in N s"
    slot_busy_pct: float  # the worker slots' occupancy: workload seconds / (wall x slots)
    load_average: list[float] = field(default_factory=list)


def busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)
    return total - idle, total


def own_cpu_seconds() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def burst(stack: MultihostStack, workers: int, size: int) -> Burst:
    """A warm-up of 5 signups, then `size` at once; the decisions per second and where the CPU went."""
    stack.wait_decided(stack.publish(5), 300)
    time.sleep(6)  # the warm-up's workloads release their slots (see docs/rehearsal.md)
    cpu0, (busy0, total0), own0 = stack.cpu_seconds(), busy_seconds(), own_cpu_seconds()
    t0, began = time.monotonic(), time.time()
    ids = stack.publish(size)
    found = stack.wait_decided(ids, 900)
    wall = time.monotonic() - t0
    cpu1, (busy1, total1), own1 = stack.cpu_seconds(), busy_seconds(), own_cpu_seconds()
    time.sleep(6)  # the last workloads end (and log) after their decisions are out
    workloads = stack.workload_seconds(began, time.time())
    missing = [e for e in ids if e not in found.published_at or e not in found.accepted_at]
    if missing:
        raise SystemExit(f"{len(missing)} of {size} signups not decided: {missing[:3]}")
    first = min(found.accepted_at[e] for e in ids)
    last = max(found.published_at[e] for e in ids)
    latencies = [found.published_at[e] - found.accepted_at[e] for e in ids]
    mine = set(ids)
    tasks = [t for t in stack.tasks() if t.state == "success" and t.event_id in mine]
    durations = [(t.end - t.start).total_seconds() for t in tasks if t.start and t.end]
    return Burst(
        workers=workers,
        size=size,
        decisions_per_s=size / (last - first),
        median_latency_s=statistics.median(latencies),
        wall_s=last - first,
        machine_busy_pct=100 * (busy1 - busy0) / max(total1 - total0, 1e-9),
        cpu_pct={name: 100 * (cpu1.get(name, 0.0) - cpu0.get(name, 0.0)) / wall for name in cpu1},
        own_cpu_pct=100 * (own1 - own0) / wall,
        median_task_s=statistics.median(durations) if durations else float("nan"),
        median_workload_s=statistics.median(workloads) if workloads else float("nan"),
        slot_busy_pct=100 * sum(workloads) / ((last - first) * workers * WORKER_CONCURRENCY),
        load_average=[round(x, 2) for x in os.getloadavg()],
    )


@dataclass
class Report:
    command: str
    when: str
    host: str
    bursts: list[Burst]
    cut: dict[str, Any] | None


def cut_figures(outcome: CutOutcome) -> dict[str, Any]:
    published = set(outcome.signups)
    counts = {e: n for e, n in outcome.decided.count.items() if e in published}
    return {
        "signups": len(published),
        "decisions": sum(counts.values()),
        "lost": len(published - set(counts)),
        "decided_twice": sum(1 for n in counts.values() if n > 1),
        "not_one_run": sum(1 for e in published if outcome.runs.get(e, 0) != 1),
        "dead_letters": outcome.dead_letters,
        "victim": outcome.victim.event_id if outcome.victim else None,
        "victim_tries": [f"try {t.try_number} {t.state} on {t.hostname}" for t in outcome.victim_tries],
        "decision_after_cut_s": outcome.decision_after_cut_s,
        "cut_s": outcome.healed_at - outcome.cut_at,
        "rejoined_after_s": outcome.rejoined_after_s,
        "ran_after_heal": outcome.ran_after_heal,
        "tasks_per_worker": dict(outcome.tasks_per_host()),
        "error_reviews": sum(1 for e in outcome.decided.errors if e in published),
    }


def run(args: argparse.Namespace, command: str) -> Report:
    from testkit.model import train_baseline

    work = Path(tempfile.mkdtemp(prefix="onboarding-multihost-"))
    report = Report(command, datetime.now(UTC).isoformat(timespec="seconds"), host_description(), [], None)
    try:
        say("model: training the baseline")
        model_dir = train_baseline(work / "model")
        sysctls = dict(item.split("=", 1) for item in args.sysctl)
        settings = dict(item.split("=", 1) for item in args.airflow_setting)
        with multihost_stack(work, model_dir, ("workera",), sysctls, settings, args.broker_user) as stack:
            try:
                if not args.skip_throughput:
                    say(f"throughput: burst of {args.burst} with worker-a only")
                    report.bursts.append(burst(stack, 1, args.burst))
                stack.start_worker("workerb")
                if not args.skip_throughput:
                    say(f"throughput: burst of {args.burst} with worker-a and worker-b")
                    report.bursts.append(burst(stack, 2, args.burst))
                if not args.skip_cut:
                    outcome = rehearse_worker_cut(stack, args.signups, args.rate, args.cut_seconds)
                    report.cut = cut_figures(outcome)
            except BaseException:
                args.keep = True
                raise
            finally:
                if args.keep:
                    say(f"logs kept in {work / 'logs'}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report


def host_description() -> str:
    return f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


COMPONENTS = (
    "api-server",
    "scheduler",
    "dag-processor",
    "worker-a",
    "worker-b",
    "listener-1",
    "listener-2",
    "postgres",
    "redis",
)


def markdown(report: Report) -> str:
    lines = [f"`{report.command}` ({report.when}, {report.host})"]
    if report.bursts:
        lines += throughput_table(report)
    if report.cut:
        lines += ["", cut_line(report.cut)]
    return "\n".join(lines)


def throughput_table(report: Report) -> list[str]:
    lines = [
        "",
        "| Celery workers | burst | decisions/s | median latency (s) | median task (s) | median slot hold (s) "
        "| worker slots busy | " + " | ".join(COMPONENTS) + " | rehearsal, all | benchmark process "
        "| machine CPU busy (2 cores = 200 %) | load (1 min) |",
        "|---|---|---|---|---|---|---|" + "---|" * len(COMPONENTS) + "---|---|---|---|",
    ]
    cores = os.cpu_count() or 1
    for b in report.bursts:
        cpu = " | ".join(f"{b.cpu_pct[c]:.0f} %" if c in b.cpu_pct else "-" for c in COMPONENTS)
        lines.append(
            f"| {b.workers} x {WORKER_CONCURRENCY} slots | {b.size} | {b.decisions_per_s:.2f} "
            f"| {b.median_latency_s:.1f} | {b.median_task_s:.2f} | {b.median_workload_s:.2f} | {b.slot_busy_pct:.0f} % "
            f"| {cpu} | {sum(b.cpu_pct.values()):.0f} % | {b.own_cpu_pct:.0f} % "
            f"| {b.machine_busy_pct * cores:.0f} % | {b.load_average[0]:g} |"
        )
    if len(report.bursts) == 2:
        ratio = report.bursts[1].decisions_per_s / report.bursts[0].decisions_per_s
        lines += ["", f"Two workers / one worker: {ratio:.2f}x."]
    lines += [
        "",
        "CPU is per cent of one core over the burst: each component's whole process tree (task processes "
        "included), the sum of the rehearsal's processes, this benchmark's own process (publishing, polling), "
        "and the whole machine (every process on it, other users' included). Median task: the task's start to "
        "end in the metadata database; median slot hold: how long a Celery workload held a worker slot "
        "(Celery's `succeeded in N s`); worker slots busy: the sum of slot holds / (burst duration x slots).",
    ]
    return lines


def cut_line(c: dict[str, Any]) -> str:
    after = c["decision_after_cut_s"]
    rejoined = c["rejoined_after_s"]
    return (
        f"Worker cut: worker-a's link down {c['cut_s']:.0f} s while running {c['victim']}; "
        f"{c['signups']} signups, {c['decisions']} decisions, {c['lost']} lost, {c['decided_twice']} decided "
        f"twice, {c['not_one_run']} without exactly one run, {c['dead_letters']} dead letters, "
        f"{c['error_reviews']} `review` by error. The caught signup was decided "
        f"{'-' if after is None else f'{after:.1f}'} s after the cut ({'; '.join(c['victim_tries'])}); "
        f"worker-a answered a ping {'-' if rejoined is None else f'{rejoined:.1f}'} s after the heal and "
        f"ran {c['ran_after_heal']} tasks after it. Tasks per worker over the whole run: {c['tasks_per_worker']}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=40, help="signups published at once per worker count")
    parser.add_argument("--signups", type=int, default=30, help="signups of the cut's flow")
    parser.add_argument("--rate", type=float, default=2.0, help="signups per second during the cut's flow")
    parser.add_argument("--cut-seconds", type=float, default=60.0, help="how long worker-a's link stays down")
    parser.add_argument("--skip-cut", action="store_true", help="throughput only")
    parser.add_argument("--skip-throughput", action="store_true", help="the cut only")
    parser.add_argument(
        "--sysctl", action="append", default=[], metavar="KEY=VALUE", help="a network setting for every host"
    )
    parser.add_argument(
        "--airflow-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment setting for every Airflow process (AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1)",
    )
    parser.add_argument(
        "--broker-user",
        default=BROKER_ROLE,
        help=f"the Celery broker's Redis ACL user (default {BROKER_ROLE}; docs/rehearsal.md on `broker`)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the components' logs (kept anyway on failure)")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        parser.error(f"needs {', '.join(missing)}")
    # Stopped by SIGTERM: unwind, so every process and namespace is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = "python benchmarks/multihost.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    report = run(args, command.strip())
    print(markdown(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=1) + "\n")
    failed = report.cut is not None and (report.cut["lost"] or report.cut["decided_twice"] or report.cut["not_one_run"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
